"""Subscriptions, proration and invoices. Money is int cents or Decimal, never a float.

Billing periods are calendar months (UTC), the same ``YYYY-MM`` the usage counters use.
A plan change mid-month is prorated by the second: the old plan is credited and the new plan
charged for the seconds from the change to the month's end, each line its price × those
seconds / the month's seconds, rounded half up to a whole cent (the shares of the month, to
the second, that the usage lines grant each plan's allowances for).
Every change, the first subscription included, is a ``subscription_changes`` row.
"""

from __future__ import annotations

import html
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kaon.db.models import new_id, utcnow
from kaon.errors import ConfigError, NotFoundError
from kaon.platform import metering
from kaon.platform.common import check_id, insert_for, lock_workspace, month_bounds, parse_period
from kaon.platform.errors import ConflictError, PlanLimitError
from kaon.platform.models import Deployment, Invoice, Subscription, SubscriptionChange
from kaon.platform.plans import GB, Plan, drawing_on, get_catalog

CURRENCY = "usd"
PER_SECOND = Decimal("0.0000001")  # the unit price shown on a proration line (cents)


def to_cents(amount: Decimal) -> int:
    """Round a Decimal amount of cents to whole cents, half up (away from zero)."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _dec(value: Decimal) -> str:
    return format(value, "f")


def _line(description: str, quantity: Decimal | int, unit_price_cents: Decimal | int,
          amount_cents: int) -> dict[str, Any]:
    return {"description": description, "quantity": _dec(Decimal(quantity)),
            "unit_price_cents": _dec(Decimal(unit_price_cents)), "amount_cents": amount_cents}


def _utc(now: datetime | None) -> datetime:
    return (now or utcnow()).astimezone(timezone.utc)


def _seconds(span: timedelta) -> Decimal:
    """A timedelta in seconds, exactly (microseconds included)."""
    return Decimal(span.days * 86_400 + span.seconds) + Decimal(span.microseconds) / 1_000_000


def _utc_day(at: datetime) -> date:
    return at.astimezone(timezone.utc).date()


# ---- subscriptions ------------------------------------------------------------------------
def get_subscription(session: Session, workspace_id: str,
                     now: datetime | None = None) -> Subscription:
    """The workspace's subscription, rolled forward to the month of ``now``."""
    sub = session.scalar(select(Subscription).where(Subscription.workspace_id == workspace_id))
    if sub is None:
        raise NotFoundError("This workspace has no subscription.",
                            hint="Subscribe with POST /api/v1/subscription.")
    _roll(session, sub, _utc(now))
    return sub


def _roll(session: Session, sub: Subscription, now: datetime) -> None:
    """Start the current month's period; a cancellation takes effect at the old period's end."""
    today = _utc_day(now)
    if today < sub.period_end:
        return
    if sub.cancel_at_period_end:
        default = get_catalog().default_plan
        if sub.plan != default:
            at = datetime.combine(sub.period_end, time(0), tzinfo=timezone.utc)
            session.add(SubscriptionChange(workspace_id=sub.workspace_id, at=at,
                                           from_plan=sub.plan, to_plan=default))
        sub.plan, sub.status, sub.cancel_at_period_end = default, "cancelled", False
    sub.period_start, sub.period_end = month_bounds(today)
    session.flush()


def current_plan(session: Session, workspace_id: str, now: datetime | None = None) -> Plan:
    """The plan in force now (the default plan without, or after, a subscription)."""
    catalog = get_catalog()
    try:
        return catalog.get(get_subscription(session, workspace_id, now).plan)
    except NotFoundError:
        return catalog.default


def limits_plan(session: Session, workspace_id: str, now: datetime | None = None) -> Plan:
    """The plan whose deployment limits new deployments and scaling must fit: the plan in
    force, or the default plan when a cancellation is pending (it takes over at the period's
    end, and what exists then must fit it)."""
    sub = session.scalar(select(Subscription).where(Subscription.workspace_id == workspace_id))
    if sub is not None and sub.cancel_at_period_end:
        return get_catalog().default
    return current_plan(session, workspace_id, now)


def _check_fits(session: Session, workspace_id: str, plan: Plan) -> None:
    count, widest = session.execute(
        select(func.count(Deployment.id), func.max(Deployment.replicas))
        .where(Deployment.workspace_id == workspace_id)).one()
    if count > plan.max_deployments or (widest or 0) > plan.max_replicas:
        raise PlanLimitError(
            f"The {plan.name} plan allows {plan.max_deployments} deployment(s) of at most "
            f"{plan.max_replicas} replica(s); this workspace has {count} (widest: {widest}).",
            hint="Delete or scale down deployments first.")


def subscribe(session: Session, workspace_id: str, plan_name: str,
              now: datetime | None = None) -> Subscription:
    """Subscribe to ``plan_name``, or change to it (prorated). Re-subscribing to the current
    plan undoes a pending cancellation."""
    plan = get_catalog().get(plan_name)
    now = _utc(now)
    lock_workspace(session, workspace_id)  # no deployment is created or scaled meanwhile
    sub = session.scalar(select(Subscription).where(Subscription.workspace_id == workspace_id))
    if sub is None:
        start, end = month_bounds(_utc_day(now))
        sub = Subscription(id=new_id("sub"), workspace_id=workspace_id, plan=plan.name,
                           status="active", period_start=start, period_end=end,
                           cancel_at_period_end=False, created_at=now)
        session.add(sub)
        session.add(SubscriptionChange(workspace_id=workspace_id, at=now, from_plan=None,
                                       to_plan=plan.name))
        session.flush()
        return sub
    _roll(session, sub, now)
    if sub.plan != plan.name:
        _check_fits(session, workspace_id, plan)
        session.add(SubscriptionChange(workspace_id=workspace_id, at=now, from_plan=sub.plan,
                                       to_plan=plan.name))
        sub.plan = plan.name
    sub.status, sub.cancel_at_period_end = "active", False
    session.flush()
    return sub


def upgrade(session: Session, workspace_id: str, plan_name: str,
            now: datetime | None = None) -> Subscription:
    """:func:`subscribe` to a plan with a higher base fee than the current one."""
    return _move(session, workspace_id, plan_name, now, up=True)


def downgrade(session: Session, workspace_id: str, plan_name: str,
              now: datetime | None = None) -> Subscription:
    """:func:`subscribe` to a plan with a lower base fee (it must fit what exists)."""
    return _move(session, workspace_id, plan_name, now, up=False)


def _move(session: Session, workspace_id: str, plan_name: str, now: datetime | None,
          up: bool) -> Subscription:
    old, new = current_plan(session, workspace_id, now), get_catalog().get(plan_name)
    if (new.price_cents > old.price_cents) != up or new.price_cents == old.price_cents:
        word = "an upgrade" if up else "a downgrade"
        raise ConfigError(f"{old.name} → {new.name} is not {word}.",
                          hint="POST /api/v1/subscription changes to any plan.")
    return subscribe(session, workspace_id, plan_name, now)


def cancel(session: Session, workspace_id: str, now: datetime | None = None) -> Subscription:
    """Cancel at the end of the current period (no refund for the rest of the month). The
    deployments must fit the default plan that takes over, as for any change of plan."""
    lock_workspace(session, workspace_id)
    sub = get_subscription(session, workspace_id, now)
    _check_fits(session, workspace_id, get_catalog().default)
    sub.cancel_at_period_end = True
    session.flush()
    return sub


# ---- proration and invoices ---------------------------------------------------------------
def prorate(old: Plan | None, new: Plan, at: datetime, period_start: date,
            period_end: date) -> list[dict[str, Any]]:
    """Lines for a change at ``at``: credit ``old`` and charge ``new`` for the seconds left
    in the period (each amount rounded half up to a cent on its own)."""
    start = datetime.combine(period_start, time(0), tzinfo=timezone.utc)
    end = datetime.combine(period_end, time(0), tzinfo=timezone.utc)
    at = _utc(at)
    total = int((end - start).total_seconds())
    left = _seconds(end - at)
    if not 0 < left <= total:
        return []
    lines = []
    for plan, sign, text in ((old, -1, "Unused time on"), (new, 1, "Remaining time on")):
        if plan is None or plan.price_cents == 0:
            continue
        amount = to_cents(Decimal(plan.price_cents) * left / total)
        per_second = (Decimal(plan.price_cents) / total).quantize(PER_SECOND, ROUND_HALF_UP)
        lines.append(_line(f"{text} {plan.name} after {at:%Y-%m-%d %H:%M:%S} UTC "
                           f"({_dec(left)} of {total} seconds)", left, sign * per_second,
                           sign * amount))
    return lines


def overage_lines(plan: Plan, totals: dict[str, int], share: Decimal = Decimal(1),
                  during: str = "") -> list[dict[str, Any]]:
    """What went over the plan's included amounts, at the plan's unit prices. ``share``: the
    part of the month the plan was in force, which gets that part of each included amount
    (units rounded down); ``during`` names that stretch in the lines. ``storage_bytes`` is in
    byte-months (bytes held × the part of the month they were held)."""
    lines = []
    frames = totals.get("stream_frames", 0)  # frames draw on the requests' allowance (SHARES)
    for metric, unit, label in (
            ("inference_requests", plan.inference_cents_per_request,
             "inference requests and stream frames" if frames else "inference requests"),
            ("training_seconds", plan.training_cents_per_second, "training seconds")):
        included = int((plan.included(metric) or 0) * share)
        over = sum(totals.get(m, 0) for m in drawing_on(metric)) - included
        if over > 0 and unit > 0:
            lines.append(_line(f"Overage: {over} {label} over the {included} included{during}",
                               over, unit, to_cents(over * unit)))
    included_bytes = int(plan.storage_bytes * share)
    over_bytes = totals.get("storage_bytes", 0) - included_bytes
    if over_bytes > 0 and plan.storage_cents_per_gb_month > 0:
        gb = Decimal(over_bytes) / GB
        lines.append(_line(f"Overage: {_dec(gb)} GB-month of storage over the "
                           f"{_dec(Decimal(included_bytes) / GB)} GB included{during}", gb,
                           plan.storage_cents_per_gb_month,
                           to_cents(gb * plan.storage_cents_per_gb_month)))
    return lines


def _stretches(changes: list[SubscriptionChange], start: datetime,
               end: datetime) -> list[tuple[str, datetime, datetime]]:
    """The month cut at each plan change: (plan, from, to) for every stretch under a plan."""
    current = next((c.to_plan for c in reversed(changes) if _utc(c.at) <= start), None)
    out, since = [], start
    for change in changes:
        at = _utc(change.at)
        if at <= start:
            continue
        if current is not None and at > since:
            out.append((current, since, at))
        current, since = change.to_plan, at
    if current is not None:
        out.append((current, since, end))
    return out


def usage_lines(session: Session, workspace_id: str, changes: list[SubscriptionChange],
                start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Overage for each stretch of the month at the prices and (prorated) allowances of the
    plan in force during it: switching plans before the month ends does not reprice the
    usage of the weeks before."""
    catalog, month = get_catalog(), Decimal((end - start).total_seconds())
    stretches = _stretches(changes, start, end)
    lines = []
    for name, since, until in stretches:
        share = Decimal((until - since).total_seconds()) / month
        during = "" if len(stretches) == 1 else (
            f" ({name}, {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC)")
        used = metering.usage_between(session, workspace_id, since, until)
        # storage is a level: what was held, for how long (byte-months), not what came in
        used["storage_bytes"] = int(metering.level_seconds(session, workspace_id, since,
                                                           until) / month)
        lines += overage_lines(catalog.get(name), used, share, during)
    return lines


# An invoice never changes once made, so it waits for the month's last events: the gateway's
# journal commits within a quarter of a second and a job's seconds with its next heartbeat.
SETTLE = timedelta(minutes=10)


def find_invoice(session: Session, workspace_id: str, period: str) -> Invoice | None:
    return session.scalar(select(Invoice).where(Invoice.workspace_id == workspace_id,
                                                Invoice.period == period))


def generate_invoice(session: Session, workspace_id: str, period: str,
                     now: datetime | None = None) -> Invoice:
    """The invoice for a finished month, made once: later calls return the same row.

    Lines: the base fee of the plan in force when the month began, proration for each plan
    change during it, and overage for each stretch between changes at the prices and the
    prorated allowances of the plan in force during it.
    """
    start, end = parse_period(period)
    existing = find_invoice(session, workspace_id, period)
    if existing is not None:
        return existing
    now = _utc(now)
    if now < end + SETTLE:
        when = (end + SETTLE).strftime("%Y-%m-%d %H:%M UTC")
        raise ConflictError(f"{period} is not over yet; its invoice can be made from {when}.",
                            hint="`kaon usage` (GET /api/v1/usage) shows the month's running "
                                 "totals.")
    sub = session.scalar(select(Subscription).where(Subscription.workspace_id == workspace_id))
    if sub is not None:
        _roll(session, sub, now)  # a cancellation that ended a period is in the history first
    changes = list(session.scalars(
        select(SubscriptionChange).where(SubscriptionChange.workspace_id == workspace_id,
                                         SubscriptionChange.at < end)
        .order_by(SubscriptionChange.at, SubscriptionChange.id)))
    if not changes:
        raise ConflictError(f"The workspace had no subscription in {period}.")
    catalog = get_catalog()
    before = [c for c in changes if c.at <= start]
    during = [c for c in changes if c.at > start]
    lines: list[dict[str, Any]] = []
    if before:
        base = catalog.get(before[-1].to_plan)
        lines.append(_line(f"{base.name} plan, {period}", 1, base.price_cents, base.price_cents))
    for change in during:
        old = catalog.get(change.from_plan) if change.from_plan else None
        lines += prorate(old, catalog.get(change.to_plan), change.at, start.date(), end.date())
    lines += usage_lines(session, workspace_id, changes, start, end)
    session.execute(
        insert_for(session, Invoice.__table__)
        .values(id=new_id("inv"), workspace_id=workspace_id, period=period, currency=CURRENCY,
                total_cents=sum(line["amount_cents"] for line in lines), lines=lines,
                created_at=now)
        .on_conflict_do_nothing(index_elements=["workspace_id", "period"]))
    invoice = find_invoice(session, workspace_id, period)  # ours, or a concurrent caller's
    assert invoice is not None
    return invoice


def list_invoices(session: Session, workspace_id: str) -> list[Invoice]:
    return list(session.scalars(select(Invoice).where(Invoice.workspace_id == workspace_id)
                                .order_by(Invoice.period.desc())))


def get_invoice(session: Session, workspace_id: str, invoice_id: str) -> Invoice:
    check_id(invoice_id, "invoice")
    row = session.scalar(select(Invoice).where(Invoice.workspace_id == workspace_id,
                                               Invoice.id == invoice_id))
    if row is None:
        raise NotFoundError(f"No invoice {invoice_id!r}.")
    return row


def format_money(cents: int, currency: str = CURRENCY) -> str:
    """``-3267`` → ``-$32.67`` (exact: Decimal, no float)."""
    value = Decimal(abs(int(cents))) / 100
    symbol = "$" if currency == "usd" else f"{currency.upper()} "
    return f"{'-' if cents < 0 else ''}{symbol}{value:,.2f}"


def render_html(invoice: Invoice, workspace_name: str = "") -> str:
    """A printable, self-contained HTML page for one invoice (every value escaped)."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(str(line.get('description', '')))}</td>"
        f"<td class=n>{e(str(line.get('quantity', '')))}</td>"
        f"<td class=n>{e(str(line.get('unit_price_cents', '')))}</td>"
        f"<td class=n>{e(format_money(int(line.get('amount_cents', 0)), invoice.currency))}"
        "</td></tr>" for line in invoice.lines)
    title = f"Invoice {invoice.id} — {invoice.period}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;max-width:52rem;margin:2rem auto;color:#111}}
table{{width:100%;border-collapse:collapse}} th,td{{padding:.4rem;border-bottom:1px solid #ccc}}
th{{text-align:left}} .n{{text-align:right;white-space:nowrap}} tfoot td{{font-weight:bold}}
@media print{{body{{margin:0}}}}
</style></head><body>
<h1>{e(title)}</h1>
<p>Workspace: {e(workspace_name or invoice.workspace_id)} ({e(invoice.workspace_id)})<br>
Period: {e(invoice.period)} · Issued: {e(invoice.created_at.date().isoformat())} ·
Currency: {e(invoice.currency.upper())}</p>
<table><thead><tr><th>Description</th><th class=n>Quantity</th>
<th class=n>Unit price (cents)</th><th class=n>Amount</th></tr></thead>
<tbody>
{rows}
</tbody>
<tfoot><tr><td colspan=3>Total</td>
<td class=n>{e(format_money(invoice.total_cents, invoice.currency))}</td></tr></tfoot>
</table></body></html>
"""
