"""The control API: the routers under ``/api/v1``, error mapping and the app factory."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kaon.errors import KaonError, UnavailableError, one_line
from kaon.platform import billing
from kaon.platform.api import data, subscription, tenancy, work
from kaon.platform.api.deps import DB, Caller
from kaon.platform.common import NAME_RULE
from kaon.platform.errors import AuthError, QuotaExceeded, RateLimited
from kaon.platform.ratelimit import RateLimiter
from kaon.serve.asgi import ErrorBody
from kaon.serve.fastapi_app import new_app

PREFIX = "/api/v1"
MAX_BODY_BYTES = 1024 * 1024

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the body is not parseable JSON"},
    401: {"model": ErrorBody, "description": "no API key, or a wrong or revoked one"},
    403: {"model": ErrorBody, "description": "the key lacks the scope this needs"},
    404: {"model": ErrorBody, "description": "no such thing in this workspace"},
    409: {"model": ErrorBody, "description": "conflicts with what exists, or the plan"},
    413: {"model": ErrorBody, "description": "the body is too large"},
    422: {"model": ErrorBody, "description": "a field is invalid (named in the message)"},
    429: {"model": ErrorBody, "description": "rate limit or hard quota reached"},
}


def create_platform_router(limiter: RateLimiter | None = None) -> APIRouter:
    """Every control-plane route under ``/api/v1``; ``limiter`` rate-limits each workspace by
    its plan (per workspace, not per key: more keys must not mean a higher rate)."""
    dependencies = []
    if limiter is not None:
        def rate_limit(db: DB, principal: Caller) -> None:
            plan = billing.current_plan(db, principal.workspace_id)
            limiter.check(f"api:{principal.workspace_id}", plan)

        dependencies.append(Depends(rate_limit))
    router = APIRouter(prefix=PREFIX, responses=ERRORS, dependencies=dependencies)
    router.include_router(tenancy.router, tags=["workspaces, members and keys"])
    router.include_router(subscription.router, tags=["plans, usage and billing"])
    router.include_router(data.router, tags=["datasets"])
    router.include_router(work.router, tags=["jobs and deployments"])
    return router


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for err in errors[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) + ("; …" if len(errors) > 10 else "")


DATABASE_BUSY = UnavailableError("The database is busy or unreachable.", hint="Retry shortly.")


def error_response(exc: KaonError, v2: bool = False) -> JSONResponse:
    """A KaonError as the platform's JSON error, with the headers its kind calls for; with
    ``v2``, in the Open Inference Protocol's format (``{"error": message and hint}``), for
    the gateway's answers on a deployment's ``/v2/`` routes."""
    headers = {}
    if isinstance(exc, AuthError):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, QuotaExceeded) and exc.reset_at:  # storage never resets by itself
        headers["X-Quota-Reset"] = exc.reset_at
    elif exc.http_status == 503:
        headers["Retry-After"] = "1"
    content = {"error": one_line(exc.message, exc.hint)} if v2 else exc.to_dict()
    return JSONResponse(status_code=exc.http_status, content=content, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """KaonError → its status and ``to_dict()``; validation → 422 naming the field(s)."""

    @app.exception_handler(KaonError)
    async def _kaon_error(_: Request, exc: KaonError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        names = any(e.get("type") == "string_pattern_mismatch" for e in errors)
        return JSONResponse(status_code=422, content={
            "error": "ValidationError", "message": _validation_message(errors),
            "hint": NAME_RULE if names else "Fix the field(s) named; /docs describes each one.",
            "errors": [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")),
                        "type": str(e.get("type"))} for e in errors[:50]]})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, headers=exc.headers, content={
            "error": "HTTPError", "message": str(exc.detail), "hint": None})

    @app.exception_handler(RecursionError)
    async def _too_deep(_: Request, exc: RecursionError) -> JSONResponse:
        return JSONResponse(status_code=422, content={
            "error": "ValidationError", "message": "The request nests too deeply.",
            "hint": None})

    @app.exception_handler(IntegrityError)
    async def _clash(_: Request, exc: IntegrityError) -> JSONResponse:
        return JSONResponse(status_code=409, content={
            "error": "ConflictError", "message": "The change clashes with a concurrent one.",
            "hint": "Read the current state and retry."})

    @app.exception_handler(OperationalError)
    async def _busy(_: Request, exc: OperationalError) -> JSONResponse:
        return error_response(DATABASE_BUSY)


_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


async def _key_refusal(scope: Any) -> JSONResponse | None:
    """The 401 a request's key gets, checked before its body is read (every route with a body
    needs a key); None when the key is good, or when the database cannot say (the route's own
    check answers then)."""
    from starlette.datastructures import Headers

    from kaon.db import session_scope
    from kaon.platform.auth import authenticate

    def check(header: str | None) -> None:
        with session_scope() as session:
            authenticate(session, header)

    try:
        await asyncio.to_thread(check, Headers(scope=scope).get("authorization"))
    except AuthError as exc:
        return error_response(exc)
    except (KaonError, OperationalError):
        return None
    return None


def create_control_app(*, rate_limit: bool = True, limiter: RateLimiter | None = None,
                       max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """The control plane as an app: routes, error mapping, 413 past ``max_body`` bytes."""
    from kaon.serve.asgi import (  # kaon.serve: torch
        BodyBudget,
        BodyLimit,
        noop_receive,
        too_large,
    )

    class ControlBodyLimit(BodyLimit):
        """Its own budget of bodies (64 MiB, or four of its largest if more): in `kaon up`
        the gateway's inference bodies, waiting on slow replicas, must not turn away the
        calls that would scale those replicas up."""

        def __init__(self, app: Any, limit: int) -> None:
            super().__init__(app, limit, BodyBudget(max(64 << 20, 4 * limit)))

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "PUT" \
                    and scope["path"].startswith(data.UPLOAD_PREFIX):
                await self.app(scope, receive, send)  # streamed, after the route's key check
                return
            if scope["type"] == "http" and scope["method"] in _WITH_BODY:
                refusal = await _key_refusal(scope)
                if refusal is not None:  # before the body is read: no key, no 16 MiB held
                    await refusal(scope, receive, send)
                    return
            await super().__call__(scope, receive, send)

        async def _reject(self, scope: Any, send: Any) -> None:
            response = too_large(self.limit, "Control-plane requests are small; check what "
                                             "is being sent.")
            await response({"type": "http"}, noop_receive, send)

    app = new_app(title="Kaon control plane", version="0.1.0",
                  description="Workspaces, members, API keys, plans, usage, billing, "
                              "jobs and deployments.")
    app.add_middleware(ControlBodyLimit, limit=max_body)
    install_error_handlers(app)
    if rate_limit:
        limiter = limiter or RateLimiter()
    app.include_router(create_platform_router(limiter if rate_limit else None))
    app.state.limiter = limiter

    @app.get("/healthz", summary="Liveness: the process answers", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
