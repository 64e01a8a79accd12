"""The audit log: one row per administrative action, written in the action's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kaon.db.models import utcnow
from kaon.platform.auth import Principal
from kaon.platform.models import AuditEntry

SYSTEM = "system"  # the actor of what Kaon does by itself (bootstrap, period roll-over)


def audit(session: Session, principal: Principal | None, action: str, target: str,
          details: dict[str, Any] | None = None, *, workspace_id: str | None = None
          ) -> AuditEntry:
    """Record ``action`` (e.g. ``key.create``) on ``target`` by ``principal`` (None: system)."""
    if principal is None and workspace_id is None:
        raise ValueError("audit() needs a principal or a workspace_id")
    info = dict(details or {})
    if principal is not None and principal.key_id is not None:
        info.setdefault("key_id", principal.key_id)
    row = AuditEntry(workspace_id=workspace_id or principal.workspace_id,  # type: ignore[union-attr]
                     actor=principal.user_id if principal else SYSTEM, action=action[:64],
                     target=target[:256], details=info, at=utcnow())
    session.add(row)
    return row


def list_audit(session: Session, workspace_id: str, limit: int = 100,
               before_id: int | None = None) -> list[AuditEntry]:
    """Newest first; page with ``before_id`` (the smallest id of the previous page)."""
    query = select(AuditEntry).where(AuditEntry.workspace_id == workspace_id)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))
