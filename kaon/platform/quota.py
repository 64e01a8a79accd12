"""Quotas: an atomic check-and-count on the monthly counter row.

For a hard-capped plan the counter moves only by a conditional
``UPDATE usage_counters SET used = used + :n WHERE … AND used + :n <= :limit``: the database
serialises concurrent updates of that row, so exactly the units under the limit get through
(no read-then-write race). Paid plans are never refused; what goes over is billed.

Stream frames draw on the included inference requests (:data:`kaon.platform.plans.SHARES`):
an HTTP request is refused once requests and frames together reach the limit, and a stream
is refused at open, and closed when the gateway next checks it, once they have.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kaon.db.models import utcnow
from kaon.errors import ConfigError
from kaon.platform import metering
from kaon.platform.common import insert_for, parse_period, period_of
from kaon.platform.errors import QuotaExceeded
from kaon.platform.models import UsageCounter, UsageEvent
from kaon.platform.plans import SHARES, Plan, drawing_on


def reset_at(period: str) -> str:
    """When the month's quota starts afresh: the next month's first instant, UTC, ISO 8601."""
    return parse_period(period)[1].isoformat()


def limit_for(plan: Plan, metric: str) -> int | None:
    """The hard limit for ``metric`` under ``plan`` (None: never refused); a shared metric's
    is its allowance's."""
    return plan.included(SHARES.get(metric, metric)) if plan.hard_cap else None


def _pooled(metric: str) -> tuple[str, ...]:
    """The metrics counted together against ``metric``'s limit."""
    return drawing_on(SHARES.get(metric, metric))


def _counter(workspace_id: str, period: str, metric: str) -> Any:
    return ((UsageCounter.workspace_id == workspace_id) & (UsageCounter.period == period)
            & (UsageCounter.metric == metric))


def used(session: Session, workspace_id: str, metric: str, period: str) -> int:
    return int(session.scalar(select(UsageCounter.used)
                              .where(_counter(workspace_id, period, metric))) or 0)


def used_of_limit(session: Session, workspace_id: str, metric: str, period: str) -> int:
    """What counts against ``metric``'s limit: its own use, and its allowance's others'."""
    return sum(used(session, workspace_id, m, period) for m in _pooled(metric))


def capped_period(metric: str, now: datetime | None = None) -> str:
    """The counter a cap applies to: the month's for flows, the level now for gauges (the
    bytes stored: they do not start afresh each month)."""
    return metering.STORED if metric in metering.GAUGES else period_of(now or utcnow())


def remaining(session: Session, workspace_id: str, metric: str, plan: Plan,
              now: datetime | None = None) -> int | None:
    """Units left under a hard cap (None: not limited)."""
    limit = limit_for(plan, metric)
    if limit is None:
        return None
    return max(0, limit - used_of_limit(session, workspace_id, metric,
                                        capped_period(metric, now)))


def check(session: Session, workspace_id: str, metric: str, plan: Plan,
          now: datetime | None = None) -> None:
    """QuotaExceeded when nothing at all is left (a pre-flight check, e.g. before training)."""
    if remaining(session, workspace_id, metric, plan, now) == 0:
        _refuse(session, workspace_id, metric, plan, capped_period(metric, now))


def _refuse(session: Session, workspace_id: str, metric: str, plan: Plan, period: str) -> None:
    raise QuotaExceeded(plan=plan.name, metric=SHARES.get(metric, metric),
                        limit=limit_for(plan, metric) or 0,
                        used=used_of_limit(session, workspace_id, metric, period),
                        reset_at="" if period == metering.STORED else reset_at(period))


def check_and_consume(session: Session, workspace_id: str, metric: str, n: int, plan: Plan,
                      *, event_key: str | None = None, source: Mapping[str, Any] | None = None,
                      now: datetime | None = None) -> bool:
    """Count ``n`` units of ``metric`` as event ``event_key``, refusing past a hard cap.

    Returns True when counted now, False when ``event_key`` was already counted (nothing
    changes). Raises :class:`QuotaExceeded` (429) when the plan is hard-capped and the
    month's counter cannot take ``n`` more; then nothing is written. Without an
    ``event_key`` a random one is used: counted, but not protected against a retry.
    """
    event_key = event_key or f"auto-{uuid.uuid4().hex}"
    limit = limit_for(plan, metric)
    if limit is None:
        return metering.record(session, workspace_id, metric, n, event_key, source, now)
    now = now or utcnow()
    event = metering.make_event(workspace_id, metric, n, event_key, source, now)
    if session.scalar(select(UsageEvent.id).where(UsageEvent.event_key == event_key)):
        return False
    period = capped_period(metric, now)
    limit -= sum(used(session, workspace_id, m, period) for m in _pooled(metric) if m != metric)
    # the counter row must exist for the conditional UPDATE to find it
    session.execute(insert_for(session, UsageCounter.__table__)
                    .values(workspace_id=workspace_id, period=period, metric=metric, used=0)
                    .on_conflict_do_nothing(index_elements=["workspace_id", "period", "metric"]))
    taken = session.execute(
        update(UsageCounter).where(_counter(workspace_id, period, metric),
                                   UsageCounter.used + n <= limit)
        .values(used=UsageCounter.used + n).execution_options(synchronize_session=False))
    if taken.rowcount != 1:
        _refuse(session, workspace_id, metric, plan, period)
    if not metering.insert_event(session, event):
        # the same event_key won a race with us after our check: give the units back
        session.execute(update(UsageCounter).where(_counter(workspace_id, period, metric))
                        .values(used=UsageCounter.used - n)
                        .execution_options(synchronize_session=False))
        return False
    if period == metering.STORED:  # and the month's net change, as any other event's
        metering.bump(session, {(workspace_id, period_of(now), metric): n}, gauges=False)
    return True


def period_usage(session: Session, workspace_id: str, period: str,
                 plan: Plan) -> dict[str, dict[str, Any]]:
    """Per metric: used, included (None: not limited, or, for a metric of
    :data:`~kaon.platform.plans.SHARES`, drawn from ``shared_with``'s) and overage for the
    month. An allowance's ``counted`` is what its included amount is set against: its own use
    and that of every metric drawing on it; its overage is reckoned from that."""
    if not isinstance(period, str):
        raise ConfigError("period must be YYYY-MM.")
    end = parse_period(period)[1]
    totals = metering.usage(session, workspace_id, period)
    current = period == period_of(utcnow())
    for gauge in metering.GAUGES:  # what is held (now, or at the month's end), not the
        totals[gauge] = (metering.stored(session, workspace_id, gauge) if current  # net change
                         else metering.level_at(session, workspace_id, end, gauge))
    out: dict[str, dict[str, Any]] = {}
    for metric, value in totals.items():
        included = plan.included(metric)
        pooled = sum(totals.get(m, 0) for m in drawing_on(metric))
        out[metric] = {"used": value, "included": included, "counted": pooled,
                       "shared_with": SHARES.get(metric),
                       "overage": max(0, pooled - included) if included is not None else 0}
    return out
