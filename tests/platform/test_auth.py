"""API keys: the secret's shape, hashing, revocation, scopes capped by role."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from kaon.db.models import utcnow
from kaon.errors import ConfigError, NotFoundError
from kaon.platform import auth, workspaces
from kaon.platform.errors import AuthError, ForbiddenError
from kaon.platform.models import ApiKey, User


@pytest.fixture
def owner(sqlite_db: Session) -> User:
    workspaces.bootstrap(sqlite_db)
    sqlite_db.commit()
    user = sqlite_db.scalar(select(User))
    assert user is not None
    return user


def test_a_key_is_random_and_only_its_sha256_is_stored(sqlite_db: Session, owner: User) -> None:
    row, secret = auth.create_key(sqlite_db, "default", owner.id, "ci", ["read", "train"])
    assert re.fullmatch(r"kaon_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", secret)
    assert row.prefix == secret[:17]
    assert row.hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(vars(row))
    assert row.scopes == ["read", "train"]
    principal = auth.authenticate(sqlite_db, secret)
    assert principal.workspace_id == "default" and principal.user_id == owner.id
    assert principal.scopes == {"read", "train"} and principal.role == "owner"
    assert auth.authenticate(sqlite_db, f"Bearer {secret}").key_id == row.id


@pytest.mark.parametrize("bad", [None, "", "kaon_", "Bearer nope", "kaon_0123456789ab_short",
                                 "kaon_0123456789ab_" + "A" * 43, "x" * 10_000, "kaon_\x00"])
def test_wrong_keys_are_401(sqlite_db: Session, owner: User, bad: str | None) -> None:
    with pytest.raises(AuthError) as err:
        auth.authenticate(sqlite_db, bad)
    assert err.value.http_status == 401


def test_a_right_prefix_with_a_wrong_secret_is_401(sqlite_db: Session, owner: User) -> None:
    _, secret = auth.create_key(sqlite_db, "default", owner.id, "ci", ["read"])
    forged = secret[:18] + ("B" if secret[18] != "B" else "C") + secret[19:]
    with pytest.raises(AuthError, match="not valid"):
        auth.authenticate(sqlite_db, forged)


def test_revoked_keys_fail(sqlite_db: Session, owner: User) -> None:
    row, secret = auth.create_key(sqlite_db, "default", owner.id, "ci", ["read"])
    auth.revoke_key(sqlite_db, "default", row.id)
    with pytest.raises(AuthError, match="revoked"):
        auth.authenticate(sqlite_db, secret)


def test_last_used_is_written_at_most_once_a_minute(sqlite_db: Session, owner: User) -> None:
    row, secret = auth.create_key(sqlite_db, "default", owner.id, "ci", ["read"])
    t0 = utcnow()
    auth.authenticate(sqlite_db, secret, now=t0)
    sqlite_db.refresh(row)
    assert row.last_used_at == t0
    auth.authenticate(sqlite_db, secret, now=t0 + timedelta(seconds=30))
    sqlite_db.refresh(row)
    assert row.last_used_at == t0
    auth.authenticate(sqlite_db, secret, now=t0 + timedelta(seconds=61))
    sqlite_db.refresh(row)
    assert row.last_used_at == t0 + timedelta(seconds=61)


def test_admin_implies_every_scope_but_the_role_caps_it(sqlite_db: Session, owner: User) -> None:
    assert auth.effective_scopes(["admin"], "owner") == set(auth.SCOPES)
    assert auth.effective_scopes(["admin"], "member") == {"read", "inference", "train", "deploy"}
    assert auth.effective_scopes(["admin", "train"], "viewer") == {"read"}
    _, _, _, secret = workspaces.add_member(sqlite_db, "default", "v@example.com", "viewer")
    viewer = auth.authenticate(sqlite_db, secret)
    assert viewer.scopes == {"read"}
    auth.require(viewer, "read")
    with pytest.raises(ForbiddenError) as err:
        auth.require(viewer, "train")
    assert err.value.http_status == 403
    with pytest.raises(ForbiddenError, match="viewer cannot hold"):
        auth.create_key(sqlite_db, "default", viewer.user_id, "more", ["train"])


def test_demotion_takes_effect_on_existing_keys(sqlite_db: Session, owner: User) -> None:
    _, user, _, secret = workspaces.add_member(sqlite_db, "default", "m@example.com", "admin")
    assert "admin" in auth.authenticate(sqlite_db, secret).scopes
    workspaces.change_role(sqlite_db, "default", user.id, "viewer")
    assert auth.authenticate(sqlite_db, secret).scopes == {"read"}


def test_bad_names_and_scopes_are_422(sqlite_db: Session, owner: User) -> None:
    for name in ["", "has space", "../etc", "x'; drop table users; --", "A" * 65]:
        with pytest.raises(ConfigError) as err:
            auth.create_key(sqlite_db, "default", owner.id, name, ["read"])
        assert err.value.http_status == 422 and "lower-case" in (err.value.hint or "")
    with pytest.raises(ConfigError, match="'root'"):
        auth.create_key(sqlite_db, "default", owner.id, "ok", ["root"])
    with pytest.raises(ConfigError):
        auth.create_key(sqlite_db, "default", owner.id, "ok", [])


def test_keys_of_another_workspace_are_not_found(sqlite_db: Session, owner: User) -> None:
    ws, key, _ = workspaces.create_workspace(sqlite_db, "team-b", owner.id)
    with pytest.raises(NotFoundError):
        auth.get_key(sqlite_db, "default", key.id)
    with pytest.raises(NotFoundError):
        auth.revoke_key(sqlite_db, "default", key.id)
    assert sqlite_db.get(ApiKey, key.id).revoked_at is None  # type: ignore[union-attr]
    for odd in ["../x", "key-", "key-zzzzzzzzzzzz", "%00", "9" * 400]:
        with pytest.raises(NotFoundError):
            auth.get_key(sqlite_db, ws.id, odd)


def test_a_member_holds_a_bounded_number_of_active_keys(sqlite_db: Session, owner: User) -> None:
    from kaon.platform.errors import ConflictError

    held = len([k for k in auth.list_keys(sqlite_db, "default", owner.id) if not k.revoked_at])
    rows = [auth.create_key(sqlite_db, "default", owner.id, f"k{i}", ["read"])[0]
            for i in range(auth.MAX_ACTIVE_KEYS - held)]
    with pytest.raises(ConflictError, match=f"at most {auth.MAX_ACTIVE_KEYS}"):
        auth.create_key(sqlite_db, "default", owner.id, "one-more", ["read"])
    auth.revoke_key(sqlite_db, "default", rows[0].id)
    auth.create_key(sqlite_db, "default", owner.id, "one-more", ["read"])  # room again
