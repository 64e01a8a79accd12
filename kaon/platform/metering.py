"""Usage metering: idempotent events plus monthly counters, moved in one transaction.

``event_key`` is unique: recording the same event twice counts it once. Counters
(``usage_counters``) are the running monthly totals that quotas and invoices read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kaon.db.models import utcnow
from kaon.errors import ConfigError
from kaon.platform.common import insert_for, period_of
from kaon.platform.models import METRICS, UsageCounter, UsageEvent

GAUGES = frozenset({"storage_bytes"})  # levels, not flows: events are signed changes
STORED = "stored"  # the counter period holding a gauge's level now (all months together)
_EVENTS = UsageEvent.__table__
_COUNTERS = UsageCounter.__table__


def make_event(workspace_id: str, metric: str, quantity: int, event_key: str,
           source: Mapping[str, Any] | None, occurred_at: datetime | None) -> dict[str, Any]:
    """A validated event row; ConfigError for an unknown metric, a bad quantity or key."""
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r} is not metered.",
                          hint=f"Metrics: {', '.join(METRICS)}.")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or (
            quantity < 0 and metric not in GAUGES):
        raise ConfigError(f"quantity {quantity!r} must be a whole number ≥ 0.")
    if not isinstance(event_key, str) or not 0 < len(event_key) <= 128:
        raise ConfigError("event_key must be a string of 1-128 characters.")
    return {"workspace_id": workspace_id, "metric": metric, "quantity": quantity,
            "event_key": event_key, "source": dict(source or {}),
            "occurred_at": (occurred_at or utcnow()).astimezone(timezone.utc)}


def bump(session: Session, totals: Mapping[tuple[str, str, str], int],
         gauges: bool = True) -> None:
    """Add to counters ``{(workspace_id, period, metric): n}``: one upsert per counter, in key
    order (a fixed lock order, so concurrent writers never deadlock on PostgreSQL). A gauge's
    level moves too, unless ``gauges`` is False (the caller moved it)."""
    levels: dict[tuple[str, str, str], int] = defaultdict(int)
    for (w, p, m), n in totals.items():
        levels[(w, p, m)] += n
        if gauges and m in GAUGES and p != STORED:  # the month's net change, and the level
            levels[(w, STORED, m)] += n
    rows = [{"workspace_id": w, "period": p, "metric": m, "used": n}
            for (w, p, m), n in sorted(levels.items()) if n]
    if not rows:
        return
    session.execute(_statements(session)[1], rows)


def _statements(session: Session) -> tuple[Any, Any]:
    """The event INSERT and the counter upsert, built once per database kind: building them
    costs more than running them (SQLAlchemy then also reuses their compiled form)."""
    name = session.get_bind().dialect.name
    cached = _STATEMENTS.get(name)
    if cached is None:
        events = (insert_for(session, _EVENTS).on_conflict_do_nothing(
            index_elements=["event_key"]).returning(_EVENTS.c.event_key))
        counters = insert_for(session, _COUNTERS)
        counters = counters.on_conflict_do_update(
            index_elements=["workspace_id", "period", "metric"],
            set_={"used": _COUNTERS.c.used + counters.excluded.used})
        cached = _STATEMENTS[name] = (events, counters)
    return cached


_STATEMENTS: dict[str, tuple[Any, Any]] = {}


def insert_event(session: Session, event: Mapping[str, Any]) -> bool:
    """Insert one event unless its key is known; True when inserted."""
    stmt = (insert_for(session, _EVENTS).values(**event)
            .on_conflict_do_nothing(index_elements=["event_key"]).returning(_EVENTS.c.id))
    # RETURNING, not rowcount: PostgreSQL's driver reports -1 for an INSERT that returns rows
    return session.execute(stmt).first() is not None


def record(session: Session, workspace_id: str, metric: str, quantity: int, event_key: str,
           source: Mapping[str, Any] | None = None, occurred_at: datetime | None = None) -> bool:
    """Count one usage event; False (and nothing counted) when ``event_key`` was seen before."""
    event = make_event(workspace_id, metric, quantity, event_key, source, occurred_at)
    if not insert_event(session, event):
        return False
    bump(session, {(workspace_id, period_of(event["occurred_at"]), metric): quantity})
    return True


def record_many(session: Session, events: Iterable[Mapping[str, Any]]) -> int:
    """Count many events (dicts with workspace_id, metric, quantity, event_key and optional
    source, occurred_at) with one multi-row INSERT and one upsert per counter touched.

    Events already recorded (by key) are skipped. Returns how many were new.
    """
    batch: dict[str, dict[str, Any]] = {}
    for e in events:
        row = make_event(e["workspace_id"], e["metric"], e["quantity"], e["event_key"],
                     e.get("source"), e.get("occurred_at"))
        batch.setdefault(row["event_key"], row)
    if not batch:
        return 0
    stmt = _statements(session)[0]
    # in key order: concurrent batches with shared keys wait on each other, never deadlock
    rows = [batch[k] for k in sorted(batch)]
    inserted = session.execute(stmt, rows).scalars().all()
    totals: dict[tuple[str, str, str], int] = defaultdict(int)
    for key in inserted:
        row = batch[key]
        totals[(row["workspace_id"], period_of(row["occurred_at"]), row["metric"])] += (
            row["quantity"])
    bump(session, totals)
    return len(inserted)


def usage_between(session: Session, workspace_id: str, start: datetime,
                  end: datetime) -> dict[str, int]:
    """Every metric's total over ``[start, end)``, from the events themselves (an invoice
    prices each stretch of a month at the plan in force during it)."""
    found = dict(session.execute(
        select(UsageEvent.metric, func.sum(UsageEvent.quantity))
        .where(UsageEvent.workspace_id == workspace_id, UsageEvent.occurred_at >= start,
               UsageEvent.occurred_at < end).group_by(UsageEvent.metric)).all())
    return {m: int(found.get(m) or 0) for m in METRICS}


def stored(session: Session, workspace_id: str, metric: str = "storage_bytes") -> int:
    """A gauge's level now (e.g. the bytes the workspace stores)."""
    return int(session.scalar(select(UsageCounter.used).where(
        UsageCounter.workspace_id == workspace_id, UsageCounter.period == STORED,
        UsageCounter.metric == metric)) or 0)


def _event_sum(session: Session, workspace_id: str, metric: str, *where: Any) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(UsageEvent.quantity), 0)).where(
        UsageEvent.workspace_id == workspace_id, UsageEvent.metric == metric, *where)) or 0)


def stored_by(session: Session, workspace_id: str, field: str, value: str,
              metric: str = "storage_bytes") -> int:
    """What the events whose source names ``field=value`` (e.g. one dataset) hold now."""
    return _event_sum(session, workspace_id, metric,
                      UsageEvent.source[field].as_string() == value)


def level_at(session: Session, workspace_id: str, at: datetime,
             metric: str = "storage_bytes") -> int:
    """A gauge's level just before ``at``."""
    return _event_sum(session, workspace_id, metric, UsageEvent.occurred_at < at)


def level_seconds(session: Session, workspace_id: str, start: datetime, end: datetime,
                  metric: str = "storage_bytes") -> Decimal:
    """The level of a gauge integrated over ``[start, end)`` (byte-seconds for storage)."""
    level = level_at(session, workspace_id, start, metric)
    changes = session.execute(
        select(UsageEvent.occurred_at, UsageEvent.quantity)
        .where(UsageEvent.workspace_id == workspace_id, UsageEvent.metric == metric,
               UsageEvent.occurred_at >= start, UsageEvent.occurred_at < end)
        .order_by(UsageEvent.occurred_at)).all()
    held, since = Decimal(0), start
    for at, quantity in changes:
        at = at.astimezone(timezone.utc)
        held += Decimal(level) * Decimal(str((at - since).total_seconds()))
        level, since = level + quantity, at
    return held + Decimal(level) * Decimal(str((end - since).total_seconds()))


def usage(session: Session, workspace_id: str, period: str) -> dict[str, int]:
    """Every metric's total for the month ``YYYY-MM`` (0 where nothing was recorded)."""
    found = dict(session.execute(
        select(UsageCounter.metric, UsageCounter.used)
        .where(UsageCounter.workspace_id == workspace_id, UsageCounter.period == period)).all())
    return {m: int(found.get(m, 0)) for m in METRICS}
