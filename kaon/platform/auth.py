"""API keys and principals: who is calling, for which workspace, with which scopes.

A key is ``kaon_<12 hex>_<43 urlsafe chars>``. The ``kaon_<12 hex>`` part is stored as the
lookup prefix (and shown in lists); only the SHA-256 of the whole secret is stored.
A key's effective scopes are its own scopes capped by its owner's current role.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from kaon.db.models import new_id, utcnow
from kaon.errors import ConfigError, NotFoundError
from kaon.platform.common import check_id, check_name, lock_workspace
from kaon.platform.errors import AuthError, ConflictError, ForbiddenError
from kaon.platform.models import ApiKey, Member

SCOPES = ("inference", "train", "deploy", "read", "admin")
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "member": frozenset({"read", "inference", "train", "deploy"}),
    "admin": frozenset(SCOPES),
    "owner": frozenset(SCOPES),
}
_SECRET = re.compile(r"^(kaon_[0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
MAX_ACTIVE_KEYS = 100  # of one member in one workspace
TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per key


@dataclass(frozen=True)
class Principal:
    """The caller, as authenticated: everything is scoped to ``workspace_id``."""

    workspace_id: str
    user_id: str
    key_id: str | None
    scopes: frozenset[str]
    role: str

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def effective_scopes(scopes: Collection[str], role: str) -> frozenset[str]:
    """``admin`` implies every scope; the role caps what a key may do."""
    wanted = set(SCOPES) if "admin" in scopes else set(scopes)
    return frozenset(wanted & ROLE_SCOPES.get(role, frozenset()))


def check_scopes(scopes: Iterable[str]) -> list[str]:
    given = list(scopes)
    unknown = sorted({s for s in given if s not in SCOPES}, key=str)
    if unknown or not given:
        raise ConfigError(f"scopes: {', '.join(map(repr, unknown)) or 'none given'} "
                          "not allowed.", hint=f"Choose from: {', '.join(SCOPES)}.")
    return sorted(set(given))


def create_key(session: Session, workspace_id: str, user_id: str, name: str,
               scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """A new key for a member; returns (row, secret). The secret is never stored or shown again."""
    check_name(name, "key name")
    wanted = check_scopes(scopes)
    role = session.scalar(select(Member.role).where(Member.workspace_id == workspace_id,
                                                    Member.user_id == user_id))
    if role is None:
        raise NotFoundError(f"No member {user_id!r} in this workspace.")
    lock_workspace(session, workspace_id)  # racing creations are counted one at a time
    active = session.scalar(select(func.count()).select_from(ApiKey).where(
        ApiKey.workspace_id == workspace_id, ApiKey.user_id == user_id,
        ApiKey.revoked_at.is_(None))) or 0
    if active >= MAX_ACTIVE_KEYS:
        raise ConflictError(f"This member has {active} active keys; at most {MAX_ACTIVE_KEYS}.",
                            hint="Revoke keys that are no longer used (`kaon keys revoke ID`).")
    allowed = ROLE_SCOPES.get(role, frozenset())
    beyond = sorted(set(wanted) - allowed)
    if beyond:
        raise ForbiddenError(f"A {role} cannot hold a key with scope(s) {', '.join(beyond)}.",
                             hint=f"A {role}'s keys may have: {', '.join(sorted(allowed))}.")
    prefix = f"kaon_{secrets.token_hex(6)}"
    secret = f"{prefix}_{secrets.token_urlsafe(32)}"  # 32 random bytes → 43 characters
    row = ApiKey(id=new_id("key"), workspace_id=workspace_id, user_id=user_id, name=name,
                 prefix=prefix, hash=hash_secret(secret), scopes=wanted, created_at=utcnow())
    session.add(row)
    session.flush()
    return row, secret


def authenticate(session: Session, bearer: str | None, now: datetime | None = None) -> Principal:
    """The principal a secret (or an ``Authorization`` header value) stands for, or AuthError."""
    token = (bearer or "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    match = _SECRET.fullmatch(token)
    if match is None:
        raise AuthError("No valid API key was sent." if token else "No API key was sent.",
                        hint="Send 'Authorization: Bearer kaon_…' with a key of this workspace.")
    found = session.execute(
        select(ApiKey, Member.role).join(
            Member, (Member.workspace_id == ApiKey.workspace_id)
            & (Member.user_id == ApiKey.user_id), isouter=True)
        .where(ApiKey.prefix == match[1])).first()
    if found is None or not hmac.compare_digest(found[0].hash, hash_secret(token)):
        raise AuthError("The API key is not valid.",
                        hint="Check the key; keys are shown once, when created.")
    key, role = found
    if key.revoked_at is not None:
        raise AuthError("The API key was revoked.", hint="Create a new key.")
    if role is None:
        raise AuthError("The API key's owner is no longer a member of its workspace.")
    now = now or utcnow()
    if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
        # conditional: concurrent requests with one key write it once, not once each
        session.execute(
            update(ApiKey).where(ApiKey.id == key.id, or_(
                ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - TOUCH_EVERY))
            .values(last_used_at=now).execution_options(synchronize_session=False))
    return Principal(workspace_id=key.workspace_id, user_id=key.user_id, key_id=key.id,
                     scopes=effective_scopes(key.scopes, role), role=role)


def require(principal: Principal, scope: str) -> None:
    """ForbiddenError (403) unless the principal holds ``scope``."""
    if scope not in principal.scopes:
        raise ForbiddenError(f"This API key lacks the {scope!r} scope.",
                             hint=f"Use a key with {scope!r} (or 'admin'), held by a member "
                                  "whose role allows it.")


def list_keys(session: Session, workspace_id: str, user_id: str | None = None) -> list[ApiKey]:
    """The workspace's keys (one user's when ``user_id`` is given), newest first."""
    query = select(ApiKey).where(ApiKey.workspace_id == workspace_id)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    return list(session.scalars(query.order_by(ApiKey.created_at.desc(), ApiKey.id)))


def get_key(session: Session, workspace_id: str, key_id: str,
            user_id: str | None = None) -> ApiKey:
    check_id(key_id, "API key")
    query = select(ApiKey).where(ApiKey.workspace_id == workspace_id, ApiKey.id == key_id)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    row = session.scalar(query)
    if row is None:
        raise NotFoundError(f"No API key {key_id!r}.",
                            hint="List them with `kaon keys list` (GET /api/v1/keys).")
    return row


def revoke_key(session: Session, workspace_id: str, key_id: str,
               user_id: str | None = None, now: datetime | None = None,
               by: Principal | None = None) -> ApiKey:
    """Revoke a key of this workspace (one of ``user_id``'s when given); idempotent. A
    non-admin caller ``by`` may revoke itself, or keys with no scope it lacks: an app key must
    not be able to lock out its user's admin key."""
    row = get_key(session, workspace_id, key_id, user_id)
    if by is not None and not by.has("admin") and row.id != by.key_id and \
            not effective_scopes(row.scopes, by.role) <= by.scopes:
        raise ForbiddenError("A key may revoke itself, or keys of its user with no scope it "
                             "lacks; this one has more.",
                             hint="Revoke it with a key that has its scopes, or an admin key.")
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
        session.flush()
    return row
