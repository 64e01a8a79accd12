"""The control plane's tables: tenants, keys, plans in use, metering, billing, audit, jobs.

Every workspace-owned row carries ``workspace_id`` (indexed); every query filters on it.
The default workspace's id is ``"default"``, the id the registry and runs already use.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from kaon.db.models import Base, utcnow

ROLES = ("owner", "admin", "member", "viewer")
METRICS = ("inference_requests", "stream_frames", "training_seconds", "storage_bytes")
JOB_KINDS = ("train", "tune")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
DEPLOYMENT_STATES = ("pending", "running", "failed", "stopped")

# BIGINT on PostgreSQL, INTEGER on SQLite (only "INTEGER PRIMARY KEY" autoincrements there)
AutoId = BigInteger().with_variant(Integer(), "sqlite")


def _workspace_fk() -> Any:
    return mapped_column(String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)  # one user per membership
    # that a workspace adds: never linked to another workspace's user (migration 0005)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Member(Base):
    __tablename__ = "members"

    # the primary key (workspace_id, user_id) is the unique pair and indexes workspace_id
    workspace_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = _workspace_fk()
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)  # "kaon_<12 hex>": the lookup
    # SHA-256 hex of the whole secret. The secret holds 32 random bytes, so nothing can be
    # guessed or looked up in a table: a fast hash is right (a slow KDF is for low-entropy
    # passwords) and keeps authentication cheap on every request.
    hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Subscription(Base):
    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), unique=True, index=True)
    plan: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # active | cancelled
    period_start: Mapped[date] = mapped_column(Date)  # first day of the month
    period_end: Mapped[date] = mapped_column(Date)  # first day of the next month (exclusive)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SubscriptionChange(Base):
    """One plan change (the first subscription too: ``from_plan`` None); drives proration."""

    __tablename__ = "subscription_changes"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = _workspace_fk()
    at: Mapped[datetime] = mapped_column(default=utcnow)
    from_plan: Mapped[str | None] = mapped_column(String(64), nullable=True)
    to_plan: Mapped[str] = mapped_column(String(64))


class UsageEvent(Base):
    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = _workspace_fk()
    metric: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    event_key: Mapped[str] = mapped_column(String(128), unique=True)  # idempotency
    source: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class UsageCounter(Base):
    """Running monthly totals; quota checks are conditional UPDATEs on these rows."""

    __tablename__ = "usage_counters"

    workspace_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM (UTC)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("workspace_id", "period"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = _workspace_fk()
    period: Mapped[str] = mapped_column(String(7))
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    total_cents: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = _workspace_fk()
    actor: Mapped[str] = mapped_column(String(64))  # user id, or "system"
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = _workspace_fk()
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = _workspace_fk()
    name: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    max_batch_size: Mapped[int] = mapped_column(Integer, default=32)
    max_wait_ms: Mapped[float] = mapped_column(Float, default=5.0)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
