"""Routes: the caller, workspaces, members, API keys and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from kaon.platform import auth, workspaces
from kaon.platform.api.deps import DB, Admin, Caller, Reader
from kaon.platform.api.schemas import (
    AuditOut,
    KeyCreate,
    KeyCreated,
    KeyOut,
    Me,
    MemberCreate,
    MemberCreated,
    MemberOut,
    MemberUpdate,
    WorkspaceCreate,
    WorkspaceCreated,
    WorkspaceOut,
)
from kaon.platform.audit import audit, list_audit
from kaon.platform.errors import ForbiddenError
from kaon.platform.models import ApiKey, Member, User

router = APIRouter()


def _key(row: ApiKey) -> KeyOut:
    return KeyOut.model_validate(row)


def _new_key(row: ApiKey, secret: str) -> KeyCreated:
    return KeyCreated(**_key(row).model_dump(), secret=secret)


def _member(member: Member, user: User) -> MemberOut:
    return MemberOut(user_id=user.id, email=user.email, name=user.name, role=member.role,
                     created_at=member.created_at)


@router.get("/me", response_model=Me, summary="Who the API key belongs to, and what it may do")
def me(db: DB, principal: Caller) -> Me:
    member, user = workspaces.get_member(db, principal.workspace_id, principal.user_id)
    ws = workspaces.get_workspace(db, principal.workspace_id)
    return Me(user_id=user.id, email=user.email, name=user.name, key_id=principal.key_id,
              role=member.role, scopes=sorted(principal.scopes),
              workspace=WorkspaceOut(id=ws.id, name=ws.name, created_at=ws.created_at,
                                     role=member.role))


# ---- workspaces ---------------------------------------------------------------------------
@router.post("/workspaces", response_model=WorkspaceCreated, status_code=201,
             summary="Create a workspace (the caller owns it); returns its first admin key")
def create_workspace(body: WorkspaceCreate, db: DB, principal: Admin) -> WorkspaceCreated:
    ws, row, secret = workspaces.create_workspace(db, body.name, principal.user_id, body.plan)
    audit(db, principal, "workspace.create", ws.id, {"name": ws.name})
    audit(db, principal, "workspace.create", ws.id,
          {"name": ws.name, "from": principal.workspace_id}, workspace_id=ws.id)
    return WorkspaceCreated(workspace=WorkspaceOut(id=ws.id, name=ws.name,
                                                   created_at=ws.created_at, role="owner"),
                            key=_new_key(row, secret))


@router.get("/workspaces", response_model=list[WorkspaceOut],
            summary="The workspaces the caller's user belongs to")
def list_workspaces(db: DB, principal: Reader) -> list[WorkspaceOut]:
    return [WorkspaceOut(id=w.id, name=w.name, created_at=w.created_at, role=role)
            for w, role in workspaces.workspaces_of(db, principal.user_id)]


@router.get("/workspace", response_model=WorkspaceOut, summary="The key's workspace")
def current_workspace(db: DB, principal: Reader) -> WorkspaceOut:
    ws = workspaces.get_workspace(db, principal.workspace_id)
    return WorkspaceOut(id=ws.id, name=ws.name, created_at=ws.created_at, role=principal.role)


# ---- members ------------------------------------------------------------------------------
@router.get("/members", response_model=list[MemberOut], summary="The workspace's members")
def list_members(db: DB, principal: Reader) -> list[MemberOut]:
    return [_member(m, u) for m, u in workspaces.list_members(db, principal.workspace_id)]


@router.post("/members", response_model=MemberCreated, status_code=201,
             summary="Add a member (a new user is created); returns their key, shown once")
def add_member(body: MemberCreate, db: DB, principal: Admin) -> MemberCreated:
    member, user, row, secret = workspaces.add_member(
        db, principal.workspace_id, body.email, body.role, body.name, actor_role=principal.role)
    audit(db, principal, "member.add", user.id, {"email": user.email, "role": member.role})
    return MemberCreated(member=_member(member, user), key=_new_key(row, secret))


@router.patch("/members/{user_id}", response_model=MemberOut, summary="Change a member's role")
def change_role(user_id: str, body: MemberUpdate, db: DB, principal: Admin) -> MemberOut:
    before, _ = workspaces.get_member(db, principal.workspace_id, user_id)
    old = before.role
    member, user = workspaces.change_role(db, principal.workspace_id, user_id, body.role,
                                          actor_role=principal.role)
    audit(db, principal, "member.role", user.id, {"from": old, "to": member.role})
    return _member(member, user)


@router.delete("/members/{user_id}", status_code=204,
               summary="Remove a member and revoke their keys in this workspace")
def remove_member(user_id: str, db: DB, principal: Admin) -> Response:
    user = workspaces.remove_member(db, principal.workspace_id, user_id,
                                    actor_role=principal.role)
    audit(db, principal, "member.remove", user.id, {"email": user.email})
    return Response(status_code=204)


# ---- API keys -----------------------------------------------------------------------------
def _own_only(principal: auth.Principal) -> str | None:
    """Admins see and revoke every key of the workspace; others only their own."""
    return None if principal.has("admin") else principal.user_id


@router.post("/keys", response_model=KeyCreated, status_code=201,
             summary="Create an API key for the caller; the secret is returned this once")
def create_key(body: KeyCreate, db: DB, principal: Caller) -> KeyCreated:
    beyond = sorted(set(body.scopes) - principal.scopes)
    if beyond:
        raise ForbiddenError(f"A key cannot get scope(s) its creator lacks: {', '.join(beyond)}.",
                             hint=f"This key has: {', '.join(sorted(principal.scopes))}.")
    row, secret = auth.create_key(db, principal.workspace_id, principal.user_id, body.name,
                                  body.scopes)
    audit(db, principal, "key.create", row.id, {"name": row.name, "scopes": row.scopes})
    return _new_key(row, secret)


@router.get("/keys", response_model=list[KeyOut],
            summary="API keys (all of the workspace's for admins; else the caller's own)")
def list_keys(db: DB, principal: Reader) -> list[KeyOut]:
    return [_key(k) for k in auth.list_keys(db, principal.workspace_id, _own_only(principal))]


@router.get("/keys/{key_id}", response_model=KeyOut, summary="One API key")
def get_key(key_id: str, db: DB, principal: Reader) -> KeyOut:
    return _key(auth.get_key(db, principal.workspace_id, key_id, _own_only(principal)))


@router.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke an API key")
def revoke_key(key_id: str, db: DB, principal: Caller) -> KeyOut:
    row = auth.revoke_key(db, principal.workspace_id, key_id, _own_only(principal),
                          by=principal)
    audit(db, principal, "key.revoke", row.id, {"name": row.name})
    return _key(row)


# ---- audit --------------------------------------------------------------------------------
@router.get("/audit", response_model=list[AuditOut],
            summary="The audit log, newest first (page with before_id)")
def audit_log(db: DB, principal: Admin,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> list[AuditOut]:
    return [AuditOut.model_validate(a)
            for a in list_audit(db, principal.workspace_id, limit, before_id)]
