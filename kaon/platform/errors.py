"""The control plane's errors, on top of :mod:`kaon.errors` (HTTP status in one place each)."""

from __future__ import annotations

from typing import Any

from kaon.errors import ConflictError, KaonError

__all__ = ["AuthError", "ConflictError", "ForbiddenError", "PayloadTooLarge", "PlanLimitError",
           "QuotaExceeded", "RateLimited"]


class AuthError(KaonError):
    """No API key, a malformed or unknown one, or a revoked one (401)."""

    exit_code = 8
    http_status = 401


class ForbiddenError(KaonError):
    """The key is valid but lacks the scope (or the role) the action needs (403)."""

    exit_code = 8
    http_status = 403


class PayloadTooLarge(KaonError):
    """A request body over the limit of its route (413)."""

    exit_code = 4
    http_status = 413


class PlanLimitError(KaonError):
    """The workspace's plan does not allow this (more deployments, replicas, a feature)."""

    exit_code = 9
    http_status = 409


class QuotaExceeded(KaonError):
    """A hard-capped plan has used its included amount for the month, or its storage is
    full (429; ``reset_at`` is empty for storage, which a new month does not free)."""

    exit_code = 10
    http_status = 429

    def __init__(self, *, plan: str, metric: str, limit: int, used: int, reset_at: str) -> None:
        if reset_at:
            super().__init__(
                f"The {plan} plan's monthly {metric} quota is used up ({used} of {limit}).",
                hint=f"It resets at {reset_at}; upgrade the plan to go on now.")
        else:  # a level, such as the bytes stored: freed by deleting, not by a new month
            super().__init__(
                f"The {plan} plan's {metric} is full ({used:,} of {limit:,}).",
                hint="Delete datasets or model versions you no longer need, or upgrade the "
                     "plan.")
        self.plan, self.metric, self.limit, self.used, self.reset_at = (
            plan, metric, limit, used, reset_at)

    def to_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {**super().to_dict(), "plan": self.plan, "metric": self.metric,
                "limit": self.limit, "used": self.used, "reset_at": self.reset_at}


class RateLimited(KaonError):
    """Too many requests for this key right now; retry after ``retry_after`` seconds (429)."""

    exit_code = 10
    http_status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Rate limit reached; retry in {retry_after} s.",
                         hint="Slow down, or move to a plan with a higher rate limit.")
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {**super().to_dict(), "retry_after": self.retry_after}
