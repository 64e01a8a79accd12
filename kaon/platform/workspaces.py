"""Workspaces and their members. The first start creates the default workspace and its owner.

Roles: owner > admin > member > viewer. Only an owner may make or unmake owners, and a
workspace always keeps at least one owner.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kaon.db.models import DEFAULT_WORKSPACE, new_id, utcnow
from kaon.errors import ConfigError, NotFoundError
from kaon.platform import billing
from kaon.platform.audit import audit
from kaon.platform.auth import ROLE_SCOPES, create_key
from kaon.platform.common import check_id, check_name, insert_for
from kaon.platform.errors import ConflictError, ForbiddenError, PlanLimitError
from kaon.platform.models import ROLES, ApiKey, Member, User, Workspace
from kaon.platform.plans import get_catalog

OWNER_EMAIL = "owner@localhost"
MAX_OWNED = 20  # workspaces the owner account may own (the default one included)
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,189}$")


def check_workspace_name(name: str) -> str:
    return check_name(name, "workspace name")


def check_email(email: str) -> str:
    value = email.strip().lower() if isinstance(email, str) else ""
    if not _EMAIL.fullmatch(value):
        raise ConfigError(f"email {str(email)[:80]!r} is not an e-mail address.",
                          hint="Write it as name@example.com.")
    return value


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"role {str(role)[:20]!r} is not a role.",
                          hint=f"Roles: {', '.join(ROLES)}.")
    return role


def check_display_name(name: str) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= 128 or not name.isprintable():
        raise ConfigError(f"name {str(name)[:80]!r} is not allowed.",
                          hint="Use 1-128 printable characters.")
    return name


BOOTSTRAP_OWNER = "usr-000000000000"  # one id, so that processes starting at once agree


def _bootstrap_owner(session: Session, email: str, name: str) -> User:
    """The default workspace's owner (created by whichever process gets there first)."""
    email = check_email(email)
    check_display_name(name)
    session.execute(insert_for(session, User.__table__)
                    .values(id=BOOTSTRAP_OWNER, email=email, name=name, created_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["id"]))
    user = session.get(User, BOOTSTRAP_OWNER)
    assert user is not None
    return user


def _new_workspace(session: Session, workspace_id: str, name: str, owner: User,
                   plan: str | None, now: datetime) -> tuple[ApiKey, str] | None:
    """Insert the workspace unless its id or name exists; then owner, plan and admin key."""
    created = session.execute(
        insert_for(session, Workspace.__table__)
        .values(id=workspace_id, name=name, created_at=now)
        .on_conflict_do_nothing().returning(Workspace.__table__.c.id)).first()
    if created is None:
        return None
    session.add(Member(workspace_id=workspace_id, user_id=owner.id, role="owner",
                       created_at=now))
    session.flush()
    billing.subscribe(session, workspace_id, plan or get_catalog().default_plan, now)
    return create_key(session, workspace_id, owner.id, "admin", ["admin"])


def bootstrap(session: Session, owner_email: str = OWNER_EMAIL, owner_name: str = "Owner",
              plan: str | None = None) -> str | None:
    """Create the default workspace, its owner, a subscription (the default plan) and an
    admin key on first start. Returns the key's secret when it created them, else None.
    Safe to call on every start and from several processes at once."""
    now = utcnow()
    if session.get(Workspace, DEFAULT_WORKSPACE) is not None:
        return None
    owner = _bootstrap_owner(session, owner_email, owner_name)
    created = _new_workspace(session, DEFAULT_WORKSPACE, DEFAULT_WORKSPACE, owner, plan, now)
    if created is None:
        return None
    audit(session, None, "workspace.bootstrap", DEFAULT_WORKSPACE,
          {"owner": owner.id, "plan": plan or get_catalog().default_plan},
          workspace_id=DEFAULT_WORKSPACE)
    return created[1]


def create_workspace(session: Session, name: str, owner_user_id: str,
                     plan: str | None = None) -> tuple[Workspace, ApiKey, str]:
    """A new workspace owned by ``owner_user_id``: (workspace, first admin key, its secret)."""
    check_workspace_name(name)
    if plan is not None:
        get_catalog().get(plan)
    owner = session.get(User, owner_user_id)
    if owner is None:
        raise NotFoundError(f"No user {owner_user_id!r}.")
    if owner.id != _account_owner(session):  # else each new member brings MAX_OWNED more
        raise ForbiddenError(
            "Only the owner account made at first start creates workspaces; a user added "
            "with POST /api/v1/members belongs to the workspace that added it.",
            hint="Create the workspace with a key of the owner account.")
    _lock_user(session, owner.id)  # concurrent creations count one at a time
    owned = session.scalar(select(func.count()).select_from(Member).where(
        Member.user_id == owner_user_id, Member.role == "owner")) or 0
    if owned >= MAX_OWNED:  # each workspace brings a free plan's quotas with it
        raise PlanLimitError(f"This user owns {owned} workspaces; at most {MAX_OWNED}.",
                             hint="Delete one, or ask the operator for more.")
    workspace_id = new_id("ws")
    created = _new_workspace(session, workspace_id, name, owner, plan, utcnow())
    if created is None:
        raise ConflictError(f"A workspace named {name!r} exists.", hint="Choose another name.")
    workspace = session.get(Workspace, workspace_id)
    assert workspace is not None
    return workspace, created[0], created[1]


def _account_owner(session: Session) -> str | None:
    """The owner account: the default workspace's first owner, whom the first start made
    (``BOOTSTRAP_OWNER``; a random id on installs older than migration 0005). Every other
    user was added to a workspace through POST /members."""
    return session.scalar(select(Member.user_id).where(Member.workspace_id == DEFAULT_WORKSPACE,
                                                       Member.role == "owner")
                          .order_by(Member.created_at, Member.user_id).limit(1))


def _lock_user(session: Session, user_id: str) -> None:
    """Hold the user's row until the transaction ends (a no-op UPDATE, as
    :func:`~kaon.platform.common.lock_workspace`): what the user owns is counted and added
    to by one transaction at a time."""
    session.execute(update(User).where(User.id == user_id).values(name=User.name)
                    .execution_options(synchronize_session=False))


def get_workspace(session: Session, workspace_id: str) -> Workspace:
    row = session.get(Workspace, workspace_id)
    if row is None:
        raise NotFoundError(f"No workspace {workspace_id!r}.")
    return row


def workspaces_of(session: Session, user_id: str) -> list[tuple[Workspace, str]]:
    """The workspaces ``user_id`` belongs to, with the user's role in each."""
    rows = session.execute(select(Workspace, Member.role)
                           .join(Member, Member.workspace_id == Workspace.id)
                           .where(Member.user_id == user_id).order_by(Workspace.name))
    return [(w, r) for w, r in rows]


def list_members(session: Session, workspace_id: str) -> list[tuple[Member, User]]:
    rows = session.execute(select(Member, User).join(User, User.id == Member.user_id)
                           .where(Member.workspace_id == workspace_id)
                           .order_by(User.email))
    return [(m, u) for m, u in rows]


def get_member(session: Session, workspace_id: str, user_id: str) -> tuple[Member, User]:
    check_id(user_id, "member")
    found = session.execute(
        select(Member, User).join(User, User.id == Member.user_id)
        .where(Member.workspace_id == workspace_id, Member.user_id == user_id)).first()
    if found is None:
        raise NotFoundError(f"No member {user_id!r} in this workspace.")
    return found[0], found[1]


def _owners(session: Session, workspace_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Member).where(
        Member.workspace_id == workspace_id, Member.role == "owner")) or 0


def _only_owners_touch_owners(actor_role: str, *roles: str) -> None:
    if "owner" in roles and actor_role != "owner":
        raise ForbiddenError("Only an owner may make, change or remove an owner.")


def add_member(session: Session, workspace_id: str, email: str, role: str,
               name: str | None = None, *, actor_role: str = "owner"
               ) -> tuple[Member, User, ApiKey, str]:
    """Add a new user with ``role``: (member, user, their key, its secret). The secret is
    shown once; the key gets every scope the role allows. The user is this workspace's own:
    an address already known elsewhere is not linked to that workspace's user, whose other
    workspaces and name a key of this one must not reach."""
    check_role(role)
    _only_owners_touch_owners(actor_role, role)
    email = check_email(email)
    if name is not None:
        check_display_name(name)
    if session.scalar(select(Member.user_id).join(User, User.id == Member.user_id).where(
            Member.workspace_id == workspace_id, User.email == email)) is not None:
        raise ConflictError(f"{email} is already a member.",
                            hint="Change the role with PATCH /api/v1/members/{user_id}.")
    user = User(id=new_id("usr"), email=email, name=(name or email)[:128], created_at=utcnow())
    session.add(user)
    session.flush()
    member = Member(workspace_id=workspace_id, user_id=user.id, role=role, created_at=utcnow())
    session.add(member)
    session.flush()
    key, secret = create_key(session, workspace_id, user.id, "initial",
                             sorted(ROLE_SCOPES[role]))
    return member, user, key, secret


def change_role(session: Session, workspace_id: str, user_id: str, role: str, *,
                actor_role: str = "owner") -> tuple[Member, User]:
    check_role(role)
    member, user = get_member(session, workspace_id, user_id)
    _only_owners_touch_owners(actor_role, role, member.role)
    if member.role == "owner" and role != "owner" and _owners(session, workspace_id) == 1:
        raise ConflictError("A workspace keeps at least one owner.",
                            hint="Make another member owner first.")
    member.role = role
    session.flush()
    return member, user


def remove_member(session: Session, workspace_id: str, user_id: str, *,
                  actor_role: str = "owner") -> User:
    """Remove a member and revoke their keys in this workspace."""
    member, user = get_member(session, workspace_id, user_id)
    _only_owners_touch_owners(actor_role, member.role)
    if member.role == "owner" and _owners(session, workspace_id) == 1:
        raise ConflictError("A workspace keeps at least one owner.",
                            hint="Make another member owner first.")
    session.execute(update(ApiKey).where(ApiKey.workspace_id == workspace_id,
                                         ApiKey.user_id == member.user_id,
                                         ApiKey.revoked_at.is_(None))
                    .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    session.delete(member)
    session.flush()
    return user
