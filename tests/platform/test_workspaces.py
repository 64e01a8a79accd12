"""Bootstrap, workspaces and members: idempotent first start, name rules, owner rules."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kaon.errors import ConfigError, NotFoundError
from kaon.platform import auth, billing, workspaces
from kaon.platform.errors import AuthError, ConflictError, ForbiddenError, PlanLimitError
from kaon.platform.models import AuditEntry, Member, Subscription, User, Workspace
from tests.platform.helpers import race, slow_clock


def test_bootstrap_creates_everything_once(db: Session) -> None:
    secret = workspaces.bootstrap(db)
    db.commit()
    assert secret is not None
    assert workspaces.bootstrap(db) is None
    db.commit()
    principal = auth.authenticate(db, secret)
    assert principal.workspace_id == "default" and principal.role == "owner"
    assert principal.scopes == set(auth.SCOPES)
    assert db.scalar(select(func.count()).select_from(Workspace)) == 1
    assert db.scalar(select(func.count()).select_from(User)) == 1
    sub = db.scalar(select(Subscription))
    assert sub is not None and sub.plan == "free" and sub.status == "active"
    assert db.scalar(select(AuditEntry.action)) == "workspace.bootstrap"


def test_bootstrap_from_many_threads_creates_one_workspace(
        sessions: Callable[[], Session]) -> None:
    secrets: list[str | None] = []

    def start() -> None:
        with sessions() as s:
            secrets.append(workspaces.bootstrap(s))
            s.commit()

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([s for s in secrets if s]) == 1
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Member)) == 1


@pytest.mark.parametrize("name", ["", "Upper", "has space", "../up", "a/b", "x;drop table",
                                  "' OR 1=1 --", "-dash", "a" * 65])
def test_bad_workspace_names_say_the_rule(sqlite_db: Session, name: str) -> None:
    workspaces.bootstrap(sqlite_db)
    owner = sqlite_db.scalar(select(User))
    with pytest.raises(ConfigError) as err:
        workspaces.create_workspace(sqlite_db, name, owner.id)  # type: ignore[union-attr]
    assert err.value.http_status == 422
    assert "lower-case letters" in (err.value.hint or "")


def test_create_workspace_owner_key_and_name_clash(sqlite_db: Session) -> None:
    workspaces.bootstrap(sqlite_db)
    owner = sqlite_db.scalar(select(User))
    assert owner is not None
    ws, key, secret = workspaces.create_workspace(sqlite_db, "team-b", owner.id, "pro")
    assert ws.id.startswith("ws-") and key.workspace_id == ws.id
    assert auth.authenticate(sqlite_db, secret).workspace_id == ws.id
    assert billing.current_plan(sqlite_db, ws.id).name == "pro"
    with pytest.raises(ConflictError):
        workspaces.create_workspace(sqlite_db, "team-b", owner.id)
    assert [w.name for w, _ in workspaces.workspaces_of(sqlite_db, owner.id)] == [
        "default", "team-b"]
    for i in range(workspaces.MAX_OWNED - 2):  # each workspace brings free quotas: bounded
        workspaces.create_workspace(sqlite_db, f"extra-{i}", owner.id)
    with pytest.raises(PlanLimitError, match=f"at most {workspaces.MAX_OWNED}"):
        workspaces.create_workspace(sqlite_db, "one-too-many", owner.id)


def test_members_roles_and_the_last_owner(sqlite_db: Session) -> None:
    workspaces.bootstrap(sqlite_db)
    owner = sqlite_db.scalar(select(User))
    assert owner is not None
    member, user, key, secret = workspaces.add_member(sqlite_db, "default", "Ann@Example.com",
                                                      "member", "Ann")
    assert user.email == "ann@example.com" and member.role == "member"
    assert set(key.scopes) == auth.ROLE_SCOPES["member"]
    with pytest.raises(ConflictError):
        workspaces.add_member(sqlite_db, "default", "ann@example.com", "viewer")
    with pytest.raises(ConfigError):
        workspaces.add_member(sqlite_db, "default", "not-an-email", "viewer")
    with pytest.raises(ConfigError):
        workspaces.add_member(sqlite_db, "default", "b@example.com", "god")
    with pytest.raises(ForbiddenError):
        workspaces.add_member(sqlite_db, "default", "c@example.com", "owner", actor_role="admin")
    with pytest.raises(ForbiddenError):
        workspaces.change_role(sqlite_db, "default", owner.id, "admin", actor_role="admin")
    with pytest.raises(ConflictError, match="at least one owner"):
        workspaces.change_role(sqlite_db, "default", owner.id, "admin")
    with pytest.raises(ConflictError, match="at least one owner"):
        workspaces.remove_member(sqlite_db, "default", owner.id)
    workspaces.change_role(sqlite_db, "default", user.id, "admin")
    assert {m.role for m, _ in workspaces.list_members(sqlite_db, "default")} == {
        "owner", "admin"}
    workspaces.remove_member(sqlite_db, "default", user.id, actor_role="admin")
    with pytest.raises(AuthError):
        auth.authenticate(sqlite_db, secret)
    with pytest.raises(NotFoundError):
        workspaces.remove_member(sqlite_db, "default", user.id)
    with pytest.raises(NotFoundError):
        workspaces.get_member(sqlite_db, "default", "usr-../../etc")


def test_racing_creations_never_pass_max_owned(sessions: Callable[[], Session],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with sessions() as s:
        workspaces.bootstrap(s)
        for i in range(workspaces.MAX_OWNED - 2):  # with default: one short of the limit
            workspaces.create_workspace(s, f"extra-{i}", workspaces.BOOTSTRAP_OWNER)
        s.commit()
    slow_clock(monkeypatch, workspaces)  # each creation stamps its rows 0.2 s after counting
    calls = [lambda s, i=i: workspaces.create_workspace(s, f"race-{i}",
                                                        workspaces.BOOTSTRAP_OWNER)
             for i in range(4)]
    allowed, refused, errors = race(sessions, calls)
    assert errors == []
    assert (len(allowed), len(refused)) == (1, 3)
    with sessions() as s:
        assert len(workspaces.workspaces_of(s, workspaces.BOOTSTRAP_OWNER)) == \
            workspaces.MAX_OWNED


def test_a_user_added_as_a_member_creates_no_workspaces(sqlite_db: Session) -> None:
    """Else each member an admin adds (any number) would own MAX_OWNED free workspaces."""
    workspaces.bootstrap(sqlite_db)
    for role in ("owner", "admin"):
        _, user, _, _ = workspaces.add_member(sqlite_db, "default", f"{role}@example.com", role)
        with pytest.raises(ForbiddenError, match="owner account") as err:
            workspaces.create_workspace(sqlite_db, f"by-{role}", user.id)
        assert err.value.http_status == 403 and "owner account" in (err.value.hint or "")
    made = workspaces.create_workspace(sqlite_db, "team-b", workspaces.BOOTSTRAP_OWNER)[0]
    _, user, _, _ = workspaces.add_member(sqlite_db, made.id, "c@example.com", "owner")
    with pytest.raises(ForbiddenError):  # nor one added to a workspace the owner made
        workspaces.create_workspace(sqlite_db, "by-c", user.id)
    assert sqlite_db.scalar(select(func.count()).select_from(Workspace)) == 2


def test_the_owner_account_is_an_owner_not_the_earliest_member_left(sqlite_db: Session) -> None:
    """With the first start's owner removed by a co-owner, a viewer added before that
    co-owner must not become the account that creates workspaces."""
    workspaces.bootstrap(sqlite_db)
    _, reader, _, _ = workspaces.add_member(sqlite_db, "default", "viewer@example.com", "viewer")
    _, co_owner, _, _ = workspaces.add_member(sqlite_db, "default", "co@example.com", "owner")
    workspaces.remove_member(sqlite_db, "default", workspaces.BOOTSTRAP_OWNER)
    with pytest.raises(ForbiddenError):
        workspaces.create_workspace(sqlite_db, "by-reader", reader.id)
    assert workspaces.create_workspace(sqlite_db, "by-co-owner", co_owner.id)[0].name == \
        "by-co-owner"
