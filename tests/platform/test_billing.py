"""Billing: proration by the second checked by hand, idempotent invoices, money never a
float."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from kaon.db.models import utcnow
from kaon.errors import ConfigError
from kaon.platform import billing, metering
from kaon.platform.errors import ConflictError, PlanLimitError
from kaon.platform.models import Deployment, Invoice, Workspace
from kaon.platform.plans import GB, get_catalog

WS = "ws-cccccccccccc"


def at(month: int, day: int, hour: int = 12, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=timezone.utc)


@pytest.fixture
def ws(db: Session) -> str:
    db.add(Workspace(id=WS, name="c"))
    db.commit()
    return WS


def _no_floats(value: Any) -> None:
    assert not isinstance(value, float), value
    if isinstance(value, dict):
        for v in value.values():
            _no_floats(v)
    elif isinstance(value, list):
        for v in value:
            _no_floats(v)


def test_to_cents_rounds_half_up() -> None:
    assert billing.to_cents(Decimal("12.5")) == 13
    assert billing.to_cents(Decimal("0.5")) == 1
    assert billing.to_cents(Decimal("-3266.5")) == -3267
    assert billing.to_cents(Decimal("0.49")) == 0


def test_a_mid_month_start_then_an_upgrade_with_overage(db: Session, ws: str) -> None:
    # 2026-10-20 12:00: pro for 11.5 of October's 31 days (993,600 of 2,678,400 seconds):
    # 4900 × 993600 / 2678400 = 1817.74 → 1818
    billing.subscribe(db, ws, "pro", now=at(10, 20))
    db.commit()
    october = billing.generate_invoice(db, ws, "2026-10", now=at(11, 2))
    assert [(line["quantity"], line["amount_cents"]) for line in october.lines] == [
        ("993600", 1818)]
    assert october.total_cents == 1818

    # 2026-11-11 10:00: upgrade to enterprise with 470 of November's 720 hours left
    billing.subscribe(db, ws, "enterprise", now=at(11, 11, 10))
    enterprise = get_catalog().get("enterprise")
    metering.record(db, ws, "training_seconds", enterprise.included_training_seconds + 1000,
                    "t", None, at(11, 20))
    metering.record(db, ws, "inference_requests",
                    enterprise.included_inference_requests + 150, "i", None, at(11, 21))
    metering.record(db, ws, "storage_bytes", 2 * enterprise.storage_bytes, "s", None,
                    at(11, 11, 12))
    db.commit()
    november = billing.generate_invoice(db, ws, "2026-11", now=at(12, 1, 1))
    amounts = [line["amount_cents"] for line in november.lines]
    # enterprise was in force 470 of November's 720 hours (11th 10:00 to the end), so it
    # brings 47/72 of each included amount, as its fee is 47/72 of a month's
    assert amounts == [
        4900,    # pro base fee (in force when November began)
        -3199,   # unused pro: 4900 × 470/720 = 3198.61
        32574,   # enterprise for 470 of 720 hours: 49900 × 470/720 = 32573.61
        34723,   # 20,000,150 - 13,055,555 included = 6,944,595 requests × 0.005 = 34722.975
        7530,    # 721,000 - 470,000 included = 251,000 s × 0.03
        3236,    # 2,000 GB held 468 of 720 hours = 1,300 GB-month, less 652.777777777 × 5
    ]
    assert november.total_cents == 79764 == sum(amounts)
    assert november.lines[3]["unit_price_cents"] == "0.005"
    assert "13055555 included (enterprise, 2026-11-11 10:00 to 2026-12-01 00:00 UTC)" in \
        november.lines[3]["description"]
    _no_floats(november.lines)
    _no_floats(json.loads(json.dumps(november.lines)))


def test_switching_plans_at_the_end_of_the_month_does_not_reprice_its_usage(
        db: Session, ws: str) -> None:
    billing.subscribe(db, ws, "pro", now=at(9, 1, 0))
    metering.record(db, ws, "inference_requests", 5_000_000, "busy", None, at(10, 15))
    billing.subscribe(db, ws, "free", now=at(10, 31, 0))  # the day before the invoice
    db.commit()
    october = billing.generate_invoice(db, ws, "2026-10", now=at(11, 1))
    overage = [line for line in october.lines if line["description"].startswith("Overage")]
    # pro's 30 of 31 days: 967,741 included; the 5,000,000 requests at pro's 0.01 cents
    assert [line["amount_cents"] for line in overage] == [40323]  # 4,032,259 × 0.01
    assert october.total_cents == 4900 - 158 + 40323  # the fee, one unused day credited


def test_storage_is_billed_for_the_time_it_is_held(db: Session, ws: str) -> None:
    billing.subscribe(db, ws, "pro", now=at(9, 1, 0))  # 50 GB included, 10 cents a GB-month
    metering.record(db, ws, "storage_bytes", 150 * GB, "up", {"dataset": "d"}, at(10, 1, 0))
    metering.record(db, ws, "storage_bytes", -150 * GB, "down", {"dataset": "d"},
                    at(10, 16, 12))  # deleted after 15.5 of October's 31 days
    db.commit()
    october = billing.generate_invoice(db, ws, "2026-10", now=at(11, 1))
    storage = [line for line in october.lines if "storage" in line["description"]]
    assert [(line["quantity"], line["amount_cents"]) for line in storage] == [("25", 250)]
    assert metering.stored(db, ws) == 0 and metering.stored_by(db, ws, "dataset", "d") == 0
    with pytest.raises(ConfigError):  # only a level may go down
        metering.record(db, ws, "inference_requests", -1, "refund-by-hand")


def test_invoices_are_made_once(db: Session, ws: str) -> None:
    billing.subscribe(db, ws, "pro", now=at(9, 1, 0))
    first = billing.generate_invoice(db, ws, "2026-10", now=at(11, 1))
    db.commit()
    metering.record(db, ws, "inference_requests", 5_000_000, "late", None, at(10, 30))
    again = billing.generate_invoice(db, ws, "2026-10", now=at(12, 1))
    db.commit()
    assert (again.id, again.lines, again.total_cents) == (first.id, first.lines, 4900)
    assert [i.id for i in billing.list_invoices(db, ws)] == [first.id]
    assert billing.get_invoice(db, ws, first.id) is first


def test_open_future_and_empty_months_have_no_invoice(db: Session, ws: str) -> None:
    billing.subscribe(db, ws, "pro", now=at(11, 5))
    with pytest.raises(ConflictError, match="not over"):
        billing.generate_invoice(db, ws, "2026-11", now=at(11, 30))
    late = datetime(2026, 12, 1, 0, 0, 0, 200_000, tzinfo=timezone.utc)
    metering.record(db, ws, "inference_requests", 1, "just-before-midnight", None,
                    datetime(2026, 11, 30, 23, 59, 59, 900_000, tzinfo=timezone.utc))
    with pytest.raises(ConflictError, match="from 2026-12-01 00:10 UTC"):  # still arriving
        billing.generate_invoice(db, ws, "2026-11", now=late)
    with pytest.raises(ConflictError, match="no subscription"):
        billing.generate_invoice(db, ws, "2026-09", now=at(11, 30))
    for bad in ["2026-13", "2026-1", "26-01", "2026-00", "../../x", "2026-11x"]:
        with pytest.raises(ConfigError):
            billing.generate_invoice(db, ws, bad, now=at(11, 30))


def test_cancel_takes_effect_at_the_period_end(db: Session, ws: str) -> None:
    billing.subscribe(db, ws, "enterprise", now=at(11, 1, 0))
    sub = billing.cancel(db, ws, now=at(12, 5))
    assert sub.cancel_at_period_end and sub.status == "active" and sub.plan == "enterprise"
    assert billing.current_plan(db, ws, now=at(12, 31)).name == "enterprise"
    december = billing.generate_invoice(db, ws, "2026-12", now=at(1, 2, year=2027))
    assert december.total_cents == 49900
    sub = billing.get_subscription(db, ws, now=at(1, 2, year=2027))
    assert (sub.plan, sub.status, sub.cancel_at_period_end) == ("free", "cancelled", False)
    assert str(sub.period_start) == "2027-01-01" and str(sub.period_end) == "2027-02-01"
    january = billing.generate_invoice(db, ws, "2027-01", now=at(2, 1, year=2027))
    assert january.total_cents == 0
    # subscribing again reactivates
    again = billing.subscribe(db, ws, "pro", now=at(2, 3, year=2027))
    assert (again.plan, again.status) == ("pro", "active")


def test_upgrade_downgrade_and_plan_limits(db: Session, ws: str) -> None:
    billing.subscribe(db, ws, "pro", now=at(11, 1, 0))
    with pytest.raises(ConfigError, match="not an upgrade"):
        billing.upgrade(db, ws, "free", now=at(11, 2))
    billing.upgrade(db, ws, "enterprise", now=at(11, 2))
    now = utcnow()
    for i in range(11):
        db.add(Deployment(id=f"dep-{i:012x}", workspace_id=ws, name=f"d{i}", model="m",
                          version=1, replicas=1, max_batch_size=1, max_wait_ms=1.0,
                          state="pending", created_at=now, updated_at=now))
    db.flush()
    with pytest.raises(PlanLimitError, match="allows 10 deployment"):
        billing.downgrade(db, ws, "pro", now=at(11, 3))
    with pytest.raises(PlanLimitError, match="free plan allows 1 deployment"):
        billing.cancel(db, ws, now=at(11, 3))  # the free plan takes over: the same rule
    for i in range(1, 11):
        db.delete(db.get(Deployment, f"dep-{i:012x}"))
    db.flush()
    billing.cancel(db, ws, now=at(11, 4))  # one deployment of one replica fits
    assert billing.current_plan(db, ws, now=at(11, 5)).name == "enterprise"
    assert billing.limits_plan(db, ws, now=at(11, 5)).name == "free"  # what new ones must fit
    with pytest.raises(ConfigError, match="Unknown plan"):
        billing.subscribe(db, ws, "platinum")


def test_a_downgrade_credits_the_unused_seconds() -> None:
    catalog = get_catalog()
    lines = billing.prorate(catalog.get("enterprise"), catalog.get("pro"), at(1, 17, 23, 2027),
                            at(1, 1, year=2027).date(), at(2, 1, year=2027).date())
    # 14 days and 1 hour of January's 31 days left (1,213,200 of 2,678,400 seconds):
    # 49900 × 1213200/2678400 = 22602.55; 4900 × 1213200/2678400 = 2219.46
    assert [(line["quantity"], line["amount_cents"]) for line in lines] == [
        ("1213200", -22603), ("1213200", 2219)]
    assert lines[0]["unit_price_cents"] == "-0.0186305"  # 49900 / 2678400 cents a second
    assert "(1213200 of 2678400 seconds)" in lines[0]["description"]


def test_a_plan_held_for_part_of_a_day_costs_that_part(db: Session, ws: str) -> None:
    """Up just after midnight and back before the next: the charge and the credit are for
    different seconds, so the hours on enterprise are paid for, as its allowances are given."""
    billing.subscribe(db, ws, "free", now=at(3, 1, 0))
    billing.subscribe(db, ws, "enterprise", now=at(3, 10, 0))
    billing.subscribe(db, ws, "free", now=at(3, 10, 12))
    db.commit()
    march = billing.generate_invoice(db, ws, "2026-03", now=at(4, 2))
    # 22 days left at 00:00 (1,900,800 s), 21.5 at 12:00 (1,857,600 s) of 2,678,400:
    # 49900 × 1900800/2678400 = 35412.90 → 35413; 49900 × 1857600/2678400 = 34608.06 → 34608
    assert [line["amount_cents"] for line in march.lines] == [0, 35413, -34608]  # free: 0
    assert march.total_cents == 805  # half a day of enterprise: 49900 / 62 = 804.84


def test_the_html_page_escapes_everything() -> None:
    invoice = Invoice(id="inv-0123456789ab", workspace_id="ws-x", period="2026-11",
                      currency="usd", total_cents=-3267, created_at=at(12, 1),
                      lines=[{"description": "<script>alert(1)</script>", "quantity": "1",
                              "unit_price_cents": "\"><img src=x>", "amount_cents": -3267}])
    page = billing.render_html(invoice, "a&b<i>")
    assert "<script>" not in page and "<img" not in page and "<i>" not in page
    assert "&lt;script&gt;" in page and "a&amp;b&lt;i&gt;" in page
    assert "-$32.67" in page and page.startswith("<!DOCTYPE html>")
    assert "http" not in page.lower().replace("http-equiv", "")  # self-contained: no links


def test_stream_frames_are_billed_with_the_inference_requests() -> None:
    """Frames share the requests' included amount and price (they were free before)."""
    pro = get_catalog().get("pro")
    included = pro.included_inference_requests
    lines = billing.overage_lines(pro, {"inference_requests": included - 100,
                                        "stream_frames": 300})
    assert [(line["description"], line["amount_cents"]) for line in lines] == [
        (f"Overage: 200 inference requests and stream frames over the {included} included",
         billing.to_cents(200 * pro.inference_cents_per_request))]
    assert billing.overage_lines(pro, {"inference_requests": included - 100,
                                       "stream_frames": 100}) == []
