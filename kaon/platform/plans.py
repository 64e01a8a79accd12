"""Plans: read from a versioned TOML file the operator owns (``KAON_PLANS_FILE``).

The shipped default is ``kaon/platform/plans.toml``. A broken file refuses to load with a
:class:`~kaon.errors.ConfigError` naming the file and each bad field (``plans.pro.burst: …``).
The file is re-read when it changes on disk, so an edit needs no restart.
"""

from __future__ import annotations

import sys
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from kaon.errors import ConfigError
from kaon.names import is_valid_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PLANS_ENV = "KAON_PLANS_FILE"
DEFAULT_PLANS_FILE = Path(__file__).with_name("plans.toml")
GB = 1_000_000_000  # storage is priced per decimal gigabyte-month
# Metrics that draw on another's included amount and price: a frame of a stream is an
# inference, counted apart (so usage shows both) but capped and billed with the requests.
SHARES = {"stream_frames": "inference_requests"}


def drawing_on(metric: str) -> tuple[str, ...]:
    """``metric`` and every metric of :data:`SHARES` that draws on its included amount."""
    return (metric, *(m for m, allowance in SHARES.items() if allowance == metric))


def _price(value: Any) -> Decimal:
    """Prices are decimal strings such as "0.01": a float cannot hold a price exactly."""
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise ValueError('write the price as a string, e.g. "0.01" (floats are not exact)')
    try:
        price = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not price.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return price


Price = Annotated[Decimal, BeforeValidator(_price), Field(ge=0)]


class Plan(BaseModel):
    """One plan. Money in cents (int) or exact decimal cents; never floats."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(default="", description="the plan's table name (set on load)")
    price_cents: int = Field(ge=0, description="monthly base fee")
    included_inference_requests: int = Field(ge=0)
    included_training_seconds: int = Field(ge=0)
    max_deployments: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    max_streams: int = Field(default=16, ge=0, description="frame streams open at once in a "
                             "workspace (with the streams feature)")
    rate_limit_rps: float = Field(gt=0, description="API key requests per second")
    burst: int = Field(ge=1, description="token bucket capacity")
    storage_bytes: int = Field(ge=0, description="included storage")
    features: list[str] = Field(default_factory=list, description='e.g. "automl", "streams"')
    hard_cap: bool = Field(description="true: 429 past the included amount; false: bill it")
    inference_cents_per_request: Price
    training_cents_per_second: Price
    storage_cents_per_gb_month: Price

    def included(self, metric: str) -> int | None:
        """The monthly amount of ``metric`` the base fee covers (None: not limited, or, for
        a metric of :data:`SHARES`, covered by another's amount)."""
        return {"inference_requests": self.included_inference_requests,
                "training_seconds": self.included_training_seconds,
                "storage_bytes": self.storage_bytes}.get(metric)

    def has(self, feature: str) -> bool:
        return feature in self.features


class PlanCatalog(BaseModel):
    """The whole file: format version, the default plan and the plans by name."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    version: Literal[1] = Field(description="file format version")
    default_plan: str = "free"
    plans: dict[str, Plan] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> PlanCatalog:
        for key, plan in self.plans.items():
            if not is_valid_name(key):
                raise ValueError(f"plan name {key!r} must be lower-case letters, digits, "
                                 "'.', '_' or '-'")
            if plan.name not in ("", key):
                raise ValueError(f"plans.{key}.name: leave it out (the table name is the name)")
            object.__setattr__(plan, "name", key)  # frozen, but ours while loading
        if self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not one of the plans "
                             f"({', '.join(self.plans)})")
        return self

    def get(self, name: str) -> Plan:
        plan = self.plans.get(name)
        if plan is None:
            raise ConfigError(f"Unknown plan {name!r}.",
                              hint=f"Plans: {', '.join(self.plans)}.")
        return plan

    @property
    def default(self) -> Plan:
        return self.plans[self.default_plan]


def plans_path() -> Path:
    """The operator's file (``KAON_PLANS_FILE``, or ``plans_file`` in kaon.toml/.env) or the
    shipped default."""
    from kaon.config import get_settings

    configured = get_settings().plans_file
    return configured.expanduser() if configured else DEFAULT_PLANS_FILE


def load_plans(path: Path | None = None) -> PlanCatalog:
    """Read and validate a plans file; ConfigError names the file and each bad field."""
    path = path or plans_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Plans file {path} cannot be read: {exc.strerror or exc}.",
                          hint=f"Point {PLANS_ENV} at a readable TOML file.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Plans file {path} is not valid TOML: {exc}.") from None
    try:
        return PlanCatalog.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise ConfigError(f"Plans file {path} is invalid: {problems}",
                          hint=f"Fix the field(s), or unset {PLANS_ENV} to use the defaults."
                          ) from None


def _problem(err: Any) -> str:
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{where}: {msg}" if where else msg


_cache: dict[str, tuple[tuple[int, int], PlanCatalog]] = {}
_cache_lock = threading.Lock()


def get_catalog() -> PlanCatalog:
    """The current plans, re-read whenever the file's size or mtime changes."""
    path = plans_path()
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (-1, -1)  # load_plans reports the missing file
    with _cache_lock:
        hit = _cache.get(str(path))
        if hit is not None and hit[0] == stamp:
            return hit[1]
    catalog = load_plans(path)
    with _cache_lock:
        _cache[str(path)] = (stamp, catalog)
    return catalog


def get_plan(name: str) -> Plan:
    return get_catalog().get(name)
