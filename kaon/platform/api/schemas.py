"""Request and response bodies of the control API (``/api/v1``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kaon.names import NAME_PATTERN

Role = Literal["owner", "admin", "member", "viewer"]
Scope = Literal["inference", "train", "deploy", "read", "admin"]
INT32 = 2**31 - 1
Name = Annotated[str, Field(
    pattern=NAME_PATTERN, max_length=64,
    description="lower-case letters, digits, '.', '_', '-'; starts with a letter or digit")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# ---- tenancy ------------------------------------------------------------------------------
class WorkspaceOut(Response):
    id: str
    name: str
    created_at: datetime
    role: Role | None = Field(default=None, description="the caller's role in it")


class WorkspaceCreate(Request):
    name: Name
    plan: str | None = Field(default=None, max_length=64, description="default: the free plan")


class KeyCreate(Request):
    name: Name
    scopes: list[Scope] = Field(min_length=1, max_length=5)


class KeyOut(Response):
    id: str
    name: str
    user_id: str
    prefix: str = Field(description="the key's first characters, to recognise it")
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    secret: str = Field(description="the key itself: shown this once, never again")


class WorkspaceCreated(BaseModel):
    workspace: WorkspaceOut
    key: KeyCreated


class Me(BaseModel):
    user_id: str
    email: str
    name: str
    key_id: str | None
    role: Role
    scopes: list[str]
    workspace: WorkspaceOut


class MemberOut(BaseModel):
    user_id: str
    email: str
    name: str
    role: Role
    created_at: datetime


class MemberCreate(Request):
    email: str = Field(max_length=254)
    role: Role = "member"
    name: str | None = Field(default=None, max_length=128)


class MemberCreated(BaseModel):
    member: MemberOut
    key: KeyCreated


class MemberUpdate(Request):
    role: Role


class AuditOut(Response):
    id: int
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    at: datetime


# ---- plans, subscription, usage, invoices -------------------------------------------------
class PlanOut(BaseModel):
    name: str
    price_cents: int
    included_inference_requests: int
    included_training_seconds: int
    max_deployments: int
    max_replicas: int
    max_streams: int
    rate_limit_rps: float
    burst: int
    storage_bytes: int
    features: list[str]
    hard_cap: bool
    inference_cents_per_request: str = Field(description="decimal string")
    training_cents_per_second: str = Field(description="decimal string")
    storage_cents_per_gb_month: str = Field(description="decimal string")


class PlansOut(BaseModel):
    version: int
    default_plan: str
    plans: list[PlanOut]


class SubscriptionOut(Response):
    workspace_id: str
    plan: str
    status: Literal["active", "cancelled"]
    period_start: date
    period_end: date = Field(description="first day after the period")
    cancel_at_period_end: bool


class SubscriptionChange(Request):
    plan: str = Field(max_length=64)


class MetricUsage(BaseModel):
    used: int
    included: int | None = Field(description="null: not limited, or drawn from shared_with's")
    counted: int = Field(description="what included is set against: used, plus the use of "
                                     "every metric that draws on this one's allowance")
    shared_with: str | None = Field(
        default=None, description="the metric whose included amount and price this one "
                                  "draws on (stream_frames: inference_requests)")
    overage: int


class UsageOut(BaseModel):
    period: str
    plan: str
    hard_cap: bool
    reset_at: str
    metrics: dict[str, MetricUsage]


class InvoiceLine(BaseModel):
    description: str
    quantity: str = Field(description="decimal string")
    unit_price_cents: str = Field(description="decimal string")
    amount_cents: int


class InvoiceOut(Response):
    id: str
    workspace_id: str
    period: str
    currency: str
    total_cents: int
    lines: list[InvoiceLine]
    created_at: datetime


# ---- jobs and deployments -----------------------------------------------------------------
class JobCreate(Request):
    kind: Literal["train", "tune"]
    spec: dict[str, Any] = Field(description="a training spec (train) or a tuning request")
    max_attempts: int = Field(default=3, ge=1, le=10)


class JobOut(Response):
    id: str
    kind: str
    spec: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    worker_id: str | None
    heartbeat_at: datetime | None
    run_id: str | None
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    compute_seconds: float


class DeploymentCreate(Request):
    name: Name
    model: Name
    version: int | None = Field(default=None, ge=1, le=INT32, description="default: latest")
    replicas: int = Field(default=1, ge=1, le=1000)
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000, allow_inf_nan=False)


class DeploymentScale(Request):
    replicas: int | None = Field(default=None, ge=1, le=1000)
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_wait_ms: float | None = Field(default=None, ge=0, le=10_000, allow_inf_nan=False)


class DeploymentOut(Response):
    id: str
    name: str
    model: str
    version: int
    replicas: int
    max_batch_size: int
    max_wait_ms: float
    state: str
    port: int | None
    created_at: datetime
    updated_at: datetime
