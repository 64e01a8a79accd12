"""Small helpers the control plane's services share: portable upserts, id checks, months."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kaon.errors import ConfigError, NotFoundError
from kaon.names import is_valid_name
from kaon.platform.models import Workspace

NAME_RULE = ("Use lower-case letters, digits, '.', '_' and '-' (max 64), starting with a "
             "letter or digit: never spaces, '/', '..' paths or SQL.")
_ID = re.compile(r"^[a-z]{1,8}-[0-9a-f]{12}$")
_LOCKED = "kaon.locked_workspaces"  # session.info: (the transaction, the ids it has locked)
_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def insert_for(session: Session, table: Any) -> Any:
    """An INSERT with ``on_conflict_do_nothing/do_update`` for the session's database."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ConfigError(f"The control plane supports SQLite and PostgreSQL, not {name}.")


def lock_workspace(session: Session, workspace_id: str) -> None:
    """Hold the workspace's row until this transaction ends, so that checks of what the
    workspace has (deployments against its plan, a plan change against its deployments) and
    the writes they guard run one transaction at a time. A no-op UPDATE: PostgreSQL locks the
    row; SQLite, which has no row locks, takes its write lock (other writers wait on the busy
    timeout). Call it before reading what the check reads. A second call in the same
    transaction (a route that locks before reading the plan, then the service it calls)
    does nothing."""
    held = session.info.get(_LOCKED)
    if held is not None and held[0] is session.get_transaction() and workspace_id in held[1]:
        return
    done = session.execute(update(Workspace).where(Workspace.id == workspace_id)
                           .values(name=Workspace.name)
                           .execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFoundError(f"No workspace {workspace_id[:80]!r}.")
    transaction = session.get_transaction()
    if held is None or held[0] is not transaction:
        held = session.info[_LOCKED] = (transaction, set())
    held[1].add(workspace_id)


def check_name(value: str, what: str) -> str:
    """A user-chosen name (workspace, key, deployment, model) per :mod:`kaon.names`, or 422."""
    if not is_valid_name(value):
        raise ConfigError(f"{what} {str(value)[:80]!r} is not allowed.", hint=NAME_RULE)
    return value


def check_id(value: str, what: str) -> str:
    """Ids are ``prefix-<12 hex>``; anything else cannot exist (404, never a 500 or a 422)."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise NotFoundError(f"No {what} {value[:80]!r}." if isinstance(value, str)
                            else f"No such {what}.")
    return value


def period_of(at: datetime) -> str:
    """The UTC month ``YYYY-MM`` that ``at`` falls in."""
    return at.astimezone(timezone.utc).strftime("%Y-%m")


def parse_period(period: str) -> tuple[datetime, datetime]:
    """``YYYY-MM`` → (start, end) as UTC datetimes, end exclusive."""
    match = _PERIOD.fullmatch(period) if isinstance(period, str) else None
    if match is None or not 1970 <= int(match[1]) <= 9998:
        raise ConfigError(f"period {str(period)[:20]!r} is not a month.",
                          hint="Write it as YYYY-MM, e.g. 2026-11.")
    year, month = int(match[1]), int(match[2])
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def month_bounds(day: date) -> tuple[date, date]:
    """The calendar month holding ``day``: (first day, first day of the next month)."""
    start = day.replace(day=1)
    end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start, end
