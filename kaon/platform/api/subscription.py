"""Routes: plans, the subscription, usage and invoices."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from kaon.db.models import utcnow
from kaon.platform import billing, quota, workspaces
from kaon.platform.api.deps import DB, Admin, Reader
from kaon.platform.api.schemas import (
    InvoiceOut,
    PlanOut,
    PlansOut,
    SubscriptionChange,
    SubscriptionOut,
    UsageOut,
)
from kaon.platform.audit import audit
from kaon.platform.common import lock_workspace, parse_period, period_of
from kaon.platform.plans import Plan, get_catalog

router = APIRouter()


def _plan(plan: Plan) -> PlanOut:
    data = plan.model_dump()
    for field in ("inference_cents_per_request", "training_cents_per_second",
                  "storage_cents_per_gb_month"):
        data[field] = format(data[field], "f")
    return PlanOut(**data)


@router.get("/plans", response_model=PlansOut, summary="The plans on offer")
def list_plans(principal: Reader) -> PlansOut:
    catalog = get_catalog()
    return PlansOut(version=catalog.version, default_plan=catalog.default_plan,
                    plans=[_plan(p) for p in catalog.plans.values()])


@router.get("/subscription", response_model=SubscriptionOut,
            summary="The workspace's subscription and current period")
def get_subscription(db: DB, principal: Reader) -> SubscriptionOut:
    return SubscriptionOut.model_validate(billing.get_subscription(db, principal.workspace_id))


@router.post("/subscription", response_model=SubscriptionOut,
             summary="Subscribe, or change plan (prorated by the second)")
def change_subscription(body: SubscriptionChange, db: DB, principal: Admin) -> SubscriptionOut:
    lock_workspace(db, principal.workspace_id)  # before the subscription row, as everywhere
    before = billing.current_plan(db, principal.workspace_id).name
    sub = billing.subscribe(db, principal.workspace_id, body.plan)
    audit(db, principal, "subscription.change", sub.id, {"from": before, "to": sub.plan})
    return SubscriptionOut.model_validate(sub)


@router.post("/subscription/cancel", response_model=SubscriptionOut,
             summary="Cancel at the end of the current period")
def cancel_subscription(db: DB, principal: Admin) -> SubscriptionOut:
    sub = billing.cancel(db, principal.workspace_id)
    audit(db, principal, "subscription.cancel", sub.id,
          {"plan": sub.plan, "ends": sub.period_end.isoformat()})
    return SubscriptionOut.model_validate(sub)


@router.get("/usage", response_model=UsageOut,
            summary="Usage for a month (default: this one): used, included and overage")
def usage(db: DB, principal: Reader,
          period: Annotated[str | None, Query(max_length=7, description="YYYY-MM")] = None
          ) -> UsageOut:
    period = period or period_of(utcnow())
    parse_period(period)
    plan = billing.current_plan(db, principal.workspace_id)
    return UsageOut(period=period, plan=plan.name, hard_cap=plan.hard_cap,
                    reset_at=quota.reset_at(period),
                    metrics=quota.period_usage(db, principal.workspace_id, period, plan))


@router.post("/invoices/{period}", response_model=InvoiceOut,
             summary="Make the invoice of a finished month (idempotent: same invoice again)")
def generate_invoice(period: str, db: DB, principal: Admin) -> InvoiceOut:
    parse_period(period)
    existed = billing.find_invoice(db, principal.workspace_id, period) is not None
    invoice = billing.generate_invoice(db, principal.workspace_id, period)
    if not existed:
        audit(db, principal, "invoice.generate", invoice.id,
              {"period": period, "total_cents": invoice.total_cents})
    return InvoiceOut.model_validate(invoice)


@router.get("/invoices", response_model=list[InvoiceOut], summary="Invoices, newest first")
def list_invoices(db: DB, principal: Reader) -> list[InvoiceOut]:
    return [InvoiceOut.model_validate(i) for i in billing.list_invoices(db, principal.workspace_id)]


# declared before /invoices/{invoice_id}, which would otherwise take "inv-….html" as an id
@router.get("/invoices/{invoice_id}.html", response_class=HTMLResponse,
            summary="An invoice as a printable HTML page")
def invoice_html(invoice_id: str, db: DB, principal: Reader) -> HTMLResponse:
    invoice = billing.get_invoice(db, principal.workspace_id, invoice_id)
    ws = workspaces.get_workspace(db, principal.workspace_id)
    return HTMLResponse(billing.render_html(invoice, ws.name))


@router.get("/invoices/{invoice_id}", response_model=InvoiceOut, summary="One invoice")
def get_invoice(invoice_id: str, db: DB, principal: Reader) -> InvoiceOut:
    return InvoiceOut.model_validate(billing.get_invoice(db, principal.workspace_id,
                                                         invoice_id))
