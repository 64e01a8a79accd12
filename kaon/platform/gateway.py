"""The inference gateway: ``/d/{deployment}/…`` → auth, rate limit, quota, metering → replicas.

Every protocol of the serving runtime is reachable under a deployment's path:
``POST /d/{deployment}/v1/models/{model}/predict`` (Kaon JSON),
``POST /d/{deployment}/v2/models/{model}/infer`` (Open Inference Protocol),
``GET /d/{deployment}/v2/health/ready`` and ``WS /d/{deployment}/v1/models/{model}/stream``.

Per request: the key is checked (cached for ``cache_s`` by the secret's hash, so a revoked
key stops working within that time), it must hold the ``inference`` scope, its plan's token
bucket must have a token (429 + Retry-After), and on a hard-capped plan one unit of the
month's quota is taken atomically before the model runs (429 naming plan, limit and reset)
and given back if the model fails. A 2xx is returned only after its usage event is
durable (journaled, see :mod:`kaon.platform.meterlog`), keyed by the request id: never lost,
never counted twice. Another workspace's deployment is a 404, like one that does not exist.
HTTP requests take a plain-ASGI path ahead of FastAPI (:class:`GatewayFirst`, decision 0016).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaon.db.engine import session_scope
from kaon.errors import KaonError, NotFoundError, UnavailableError
from kaon.platform import billing, quota
from kaon.platform.api.app import DATABASE_BUSY, error_response
from kaon.platform.auth import Principal, authenticate, require
from kaon.platform.deployrt import MAX_BODY, DeploymentRuntime
from kaon.platform.errors import PlanLimitError
from kaon.platform.meterlog import MeterWriter, refund
from kaon.platform.plans import Plan
from kaon.platform.ratelimit import RateLimiter
from kaon.serve import logs
from kaon.serve.asgi import (
    METHODS,
    close_quietly,
    held,
    is_v2,
    refuse_handshake,
    take_request,
)
from kaon.serve.pool import ReplicaPool


class _TTLCache:
    """Values kept for ``seconds``; a miss loads once, however many callers ask meanwhile.

    Without the single flight, every request in flight when an entry expires (16 at
    concurrency 16) would go to the database for the same key. A load that returns an
    exception (an unknown or revoked key: the refusal is the value) is kept apart, in a
    store of its own size, so a flood of unknown keys evicts only other refusals, never a
    valid key.
    """

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        if size < 1:
            raise ValueError(f"a cache holds at least one entry, not {size}")
        self.seconds, self.size = seconds, size
        self._items: dict[str, tuple[float, Any]] = {}
        self._refusals: dict[str, tuple[float, BaseException]] = {}
        self._loading: dict[str, asyncio.Future[Any]] = {}

    async def get(self, key: str, load: Callable[[], Any]) -> Any:
        """The cached value of ``key``, else ``load()`` run in a thread (once). The load is
        its own task, so a caller that goes away does not cancel it for the others."""
        hit = self._items.get(key) or self._refusals.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.ensure_future(asyncio.to_thread(load))
            task.add_done_callback(lambda done: self._store(key, done))
        return await asyncio.shield(task)

    def _store(self, key: str, done: asyncio.Future[Any]) -> None:
        del self._loading[key]
        if done.cancelled() or done.exception() is not None:
            return
        value = done.result()
        self._items.pop(key, None)
        self._refusals.pop(key, None)
        store = self._refusals if isinstance(value, BaseException) else self._items
        # insertion order is expiry order (one TTL for all): when full, the first entry is the
        # stalest, so a store that is full drops one entry at a time, never all of them
        while len(store) >= self.size:
            del store[next(iter(store))]
        store[key] = (time.monotonic() + self.seconds, value)


class Gateway:
    def __init__(self, runtime: DeploymentRuntime, meter: MeterWriter,
                 limiter: RateLimiter | None = None, cache_s: float = 1.0,
                 max_body: int = MAX_BODY) -> None:
        self.runtime, self.meter, self.max_body = runtime, meter, max_body
        self.limiter = limiter or RateLimiter()
        self._principals = _TTLCache(cache_s)
        self._plans = _TTLCache(cache_s)
        self._streams: Counter[str] = Counter()  # open streams per workspace (this process)

    # -- the checks -----------------------------------------------------------------------
    async def principal(self, authorization: str | None) -> Principal:
        token = authorization or ""
        cache_key = hashlib.sha256(token.encode()).hexdigest()
        found = await self._principals.get(cache_key, lambda: _authenticate(token))
        if isinstance(found, KaonError):  # the cached refusal: raised without the traceback
            raise found.with_traceback(None)  # of its last raise (frames kept alive, growing)
        return found

    async def plan(self, workspace_id: str) -> Plan:
        plan: Plan = await self._plans.get(workspace_id, lambda: _current_plan(workspace_id))
        return plan

    async def authorize(self, authorization: str | None, deployment: str
                        ) -> tuple[Principal, Plan, ReplicaPool]:
        """The key's principal (with the ``inference`` scope), its plan and the deployment's
        replica pool in its workspace."""
        principal = await self.principal(authorization)
        require(principal, "inference")
        pool = self.runtime.pool(principal.workspace_id, deployment)
        if pool is None:
            raise NotFoundError(f"No deployment {deployment!r} in this workspace.",
                                hint="List them with `kaon deployments list`.")
        return principal, await self.plan(principal.workspace_id), pool

    async def admit(self, authorization: str | None, deployment: str, metric: str | None,
                    event_key: str, source: dict[str, str] | None = None,
                    ) -> tuple[Principal, Plan, bool, ReplicaPool]:
        """Auth, scope, deployment, rate limit and (hard cap) quota of ``metric`` (None: no
        quota, e.g. health and metadata); True when a unit was consumed; and the deployment's
        replica pool."""
        principal, plan, pool = await self.authorize(authorization, deployment)
        self.limiter.check(f"inference:{principal.workspace_id}", plan)  # not per key
        if metric is None or quota.limit_for(plan, metric) is None:
            return principal, plan, False, pool
        consumed = await asyncio.to_thread(_consume, principal.workspace_id, metric, plan,
                                           event_key, source or {"deployment": deployment})
        return principal, plan, consumed, pool

    # -- HTTP -----------------------------------------------------------------------------
    async def handle(self, request: Request, deployment: str, path: str,
                     body: bytes | None = None, rid: str | None = None) -> Response:
        rid = rid or logs.request_id(request.headers.get("x-request-id"))
        # the caller's X-Request-ID is for tracing only: a key it chose could repeat an
        # earlier event's (not counted again, then refunded: served unmetered)
        event_key = f"req:{uuid.uuid4().hex}"
        source = {"deployment": deployment, "request_id": rid}
        started = time.perf_counter()
        metered = request.method == "POST"  # inference; health and metadata are free
        try:
            principal, _, consumed, pool = await self.admit(
                request.headers.get("authorization"), deployment,
                "inference_requests" if metered else None, event_key, source)
        except KaonError as exc:
            return _error(exc, rid, path)
        headers: dict[str, str | None] = {"x-request-id": rid, "authorization": None}
        response = await pool.forward(request, path=f"/{path}", body=body,
                                      extra_headers=headers)
        ok = 200 <= response.status_code < 300
        try:
            if ok and metered and not consumed:
                await self.meter.record(principal.workspace_id, "inference_requests", 1,
                                        event_key, source)
            elif consumed and not ok:
                await asyncio.to_thread(refund, principal.workspace_id, event_key)
        except KaonError as exc:  # not metered, so not served: the caller may retry
            return _error(exc, rid, path)
        response.headers["X-Request-ID"] = rid
        logs.access({"request_id": rid, "method": request.method, "path": request.scope["path"],
                     "deployment": deployment, "workspace": principal.workspace_id,
                     "status": response.status_code,
                     "ms": round((time.perf_counter() - started) * 1000, 3)})
        return response

    async def asgi(self, scope: Scope, receive: Receive, send: Send, deployment: str,
                   path: str) -> None:
        """The HTTP hot path as plain ASGI, ahead of FastAPI: its routing, dependency and
        middleware layers cost about 40 µs a request, as much as the gateway's checks.

        The key is checked before the body is read (cached, so the second check in
        :meth:`handle` costs a hash and a cache lookup, about 2 µs): a caller without a valid
        key cannot make the gateway buffer up to ``max_body`` bytes for it."""
        try:
            await self.principal(Headers(scope=scope).get("authorization"))
        except KaonError as exc:
            rid = logs.request_id(Headers(scope=scope).get("x-request-id"))
            await _error(exc, rid, path)(scope, receive, send)
            return
        except OperationalError:
            await _error(DATABASE_BUSY, logs.request_id(None), path)(scope, receive, send)
            return
        taken = await take_request(scope, receive, send, self.max_body, path=f"/{path}")
        if taken is None:  # answered 413 or 503, or the caller left
            return
        request, rid, body = taken
        with held(body):
            try:
                response = await self.handle(request, deployment, path, body, rid)
            except OperationalError:
                response = _error(DATABASE_BUSY, rid, path)
            await response(scope, receive, send)

    # -- WebSocket streams ----------------------------------------------------------------
    async def handle_ws(self, websocket: WebSocket, deployment: str, path: str) -> None:
        """Relay a stream under the same rules as HTTP, frame by frame (:class:`_Guard`).

        At open: the key, the ``inference`` scope, the deployment, the plan's ``streams``
        feature and ``max_streams`` (counted in this process), one rate-limit token and
        (hard cap) a quota not used up.
        """
        auth = websocket.headers.get("authorization") or (
            f"Bearer {websocket.query_params['api_key']}"
            if "api_key" in websocket.query_params else None)
        stream_id = logs.request_id(None)
        try:
            principal, plan, pool = await self._admit_stream(auth, deployment)
        except (KaonError, OperationalError) as exc:  # the HTTP routes' answer: 401 … 503
            refusal = exc if isinstance(exc, KaonError) else DATABASE_BUSY
            await refuse_handshake(websocket, _error(refusal, stream_id))
            return
        workspace = principal.workspace_id
        if self._streams[workspace] >= plan.max_streams:
            await refuse_handshake(websocket, _error(PlanLimitError(
                f"The {plan.name} plan allows {plan.max_streams} open stream(s) at once, and "
                f"this workspace has {self._streams[workspace]}.",
                hint="Close a stream first, or upgrade the plan."), stream_id))
            return
        self._streams[workspace] += 1
        guard = _Guard(self, websocket, auth, deployment, stream_id, principal, plan)
        query = urlencode([(k, v) for k, v in websocket.query_params.multi_items()
                           if k != "api_key"])
        try:
            await pool.forward_ws(guard, path=f"/{path}",  # type: ignore[arg-type]
                                  query=query)
        finally:
            self._streams[workspace] -= 1
            if not self._streams[workspace]:
                del self._streams[workspace]

    async def _admit_stream(self, auth: str | None, deployment: str, opening: bool = True
                            ) -> tuple[Principal, Plan, ReplicaPool]:
        """What a stream must pass at open (with a rate-limit token) and again while open."""
        if opening:
            principal, plan, _, pool = await self.admit(auth, deployment, None, "")
        else:
            principal, plan, pool = await self.authorize(auth, deployment)
        if not plan.has("streams"):
            raise PlanLimitError(f"The {plan.name} plan does not include streams.",
                                 hint="Upgrade the plan.")
        await asyncio.to_thread(_check_quota, principal.workspace_id, "stream_frames", plan)
        return principal, plan, pool

    def router(self) -> APIRouter:
        api = APIRouter(tags=["inference gateway"])

        @api.api_route("/d/{deployment}/{path:path}", methods=sorted(METHODS),
                       summary="Inference on a deployment (Kaon JSON predict or Open "
                               "Inference Protocol V2), authenticated and metered",
                       responses={401: {}, 403: {}, 404: {}, 429: {}, 503: {}})
        async def infer(request: Request, deployment: str, path: str) -> Response:
            # documents the path; in `kaon up` GatewayFirst answers these requests first
            return await self.handle(request, deployment, path)

        @api.websocket("/d/{deployment}/{path:path}")
        async def stream(websocket: WebSocket, deployment: str, path: str) -> None:
            await self.handle_ws(websocket, deployment, path)

        return api


RECHECK_S = 5.0  # an open stream's key, plan and quota are checked again this often


class _Guard:
    """The client's socket as the replica pool sees it, holding a stream to HTTP's rules.

    - Each frame the client sends takes a token from the workspace's bucket, the one its
      HTTP requests take from. When the bucket is empty, a ``block`` stream's frame waits for
      a token (and, as the relay stops reading, so does the sender, over TCP); a
      ``drop_oldest`` stream's frame is dropped on arrival, so a fast camera gets the plan's
      rate with fresh frames instead of a growing backlog. The gateway then numbers the
      frames as the client sent them: each result's ``seq`` is the client's, and its
      ``dropped`` and ``dropped_total`` count the frames dropped here with the replica's.
    - Every :data:`RECHECK_S` the key, scope, deployment, plan and quota are checked again: a
      revoked key, a plan without streams or a used-up hard cap closes the stream (1008,
      the reason in the close frame). A database that cannot answer closes nothing: the
      check is asked again a second later.
    - Each result frame is metered (one ``stream_frames`` event, which draws on the included
      inference requests) before it goes out; when usage cannot be recorded the stream
      closes with 1011, as an HTTP request would get a 503. Once the stream is closed, a
      result still coming from the replica is neither metered nor sent.
    """

    def __init__(self, gateway: Gateway, websocket: WebSocket, auth: str | None,
                 deployment: str, stream_id: str, principal: Principal, plan: Plan) -> None:
        self.gateway, self.websocket, self.auth = gateway, websocket, auth
        self.deployment, self.stream_id = deployment, stream_id
        self.principal, self.plan = principal, plan
        self.block = websocket.query_params.get("policy") == "block"
        self.checked_at = time.monotonic()
        self.sent = 0
        self.closed = False
        self.received = 0  # the client's frames so far: the next one's seq
        self.relayed: deque[int] = deque()  # the client's seq of each frame relayed, in order
        self.at_replica = 0  # the replica's seq of the first frame still in ``relayed``
        self.dropped: list[int] = []  # dropped here since the last result
        self.dropped_total = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.websocket, name)

    async def receive(self) -> Message:
        while True:
            message = await self.websocket.receive()
            if message["type"] != "websocket.receive":
                return message
            if time.monotonic() - self.checked_at >= RECHECK_S:
                try:
                    _, self.plan, _ = await self.gateway._admit_stream(
                        self.auth, self.deployment, opening=False)
                except (SQLAlchemyError, UnavailableError):  # the database, not the stream:
                    self.checked_at = time.monotonic() - RECHECK_S + 1.0  # go on, ask in 1 s
                except KaonError as exc:
                    return await self._end(1008, exc.message)
                else:
                    self.checked_at = time.monotonic()
            if message.get("bytes") is None:  # text: a close request, or garbage the
                return message  # replica answers; not a frame, not numbered
            seq, self.received = self.received, self.received + 1
            if await self._token():
                self.relayed.append(seq)
                return message
            self.dropped.append(seq)  # over the plan's rate: dropped on arrival
            self.dropped_total += 1

    async def _token(self) -> bool:
        """One token from the workspace's bucket: waited for (``block``), or not (False)."""
        key = f"inference:{self.principal.workspace_id}"
        while (wait := self.gateway.limiter.take(key, self.plan.rate_limit_rps,
                                                 self.plan.burst)) > 0:
            if not self.block:
                return False
            await asyncio.sleep(wait)
        return True

    async def send_text(self, text: str) -> None:
        if self.closed:  # closed by a recheck: what the replica still sends goes nowhere
            raise WebSocketDisconnect(1008)
        try:
            result = json.loads(text)
        except ValueError:
            result = None
        if isinstance(result, dict):
            if "error" not in result:  # a frame answered; one the model failed on is free
                self.sent += 1
                try:
                    await self.gateway.meter.record(
                        self.principal.workspace_id, "stream_frames", 1,
                        f"stream:{self.stream_id}:{self.sent}", {"deployment": self.deployment})
                except KaonError:  # not metered, so not sent: the pool ends the relay
                    await self._end(1011, "usage could not be recorded; reopen the stream")
                    raise WebSocketDisconnect(1011) from None
            text = json.dumps(self._renumbered(result))  # a frame's error too: its number
        try:
            await self.websocket.send_text(text)
        except RuntimeError:  # the client's side is closed already
            raise WebSocketDisconnect(1006) from None

    def _renumbered(self, result: dict[str, Any]) -> dict[str, Any]:
        """A replica's result with the client's numbering: its seq, the frames dropped here
        or at the replica since the last result, and the total dropped."""
        if not isinstance(result.get("seq"), int):
            return result
        dropped = list(self.dropped)
        self.dropped.clear()
        at_replica = set(result.get("dropped") or [])
        mine = None
        while self.relayed and self.at_replica <= result["seq"]:  # results come in order
            client = self.relayed.popleft()
            if self.at_replica == result["seq"]:
                mine = client
            elif self.at_replica in at_replica:
                dropped.append(client)
            self.at_replica += 1
        if mine is None:
            return result
        total = int(result.get("dropped_total") or 0) + self.dropped_total
        return {**result, "seq": mine, "dropped": sorted(dropped), "dropped_total": total}

    async def _end(self, code: int, reason: str) -> Message:
        """Close the client's side with ``reason`` (cut to a close frame's 123 bytes), and
        what the relay then reads: the client gone, with that code."""
        self.closed = True
        await close_quietly(self.websocket, code, reason)
        return {"type": "websocket.disconnect", "code": code}


def _error(exc: KaonError, rid: str, path: str = "") -> JSONResponse:
    """``exc`` as the gateway's answer to a request for the deployment's ``path``, in that
    route's protocol (Kaon's, or V2's for ``v2/…``: Triton's clients show its ``error``)."""
    response = error_response(exc, v2=is_v2(f"/{path}"))
    response.headers["X-Request-ID"] = rid
    return response


def _authenticate(token: str) -> Principal | KaonError:
    try:
        with session_scope() as s:
            return authenticate(s, token)
    except KaonError as exc:
        return exc


def _current_plan(workspace_id: str) -> Plan:
    with session_scope() as s:
        return billing.current_plan(s, workspace_id)


def _check_quota(workspace_id: str, metric: str, plan: Plan) -> None:
    with session_scope() as s:
        quota.check(s, workspace_id, metric, plan)


def _consume(workspace_id: str, metric: str, plan: Plan, event_key: str,
             source: dict[str, str]) -> bool:
    with session_scope() as s:
        return quota.check_and_consume(s, workspace_id, metric, 1, plan, event_key=event_key,
                                       source=source)


class GatewayFirst:
    """ASGI middleware: HTTP requests under ``/d/{deployment}/`` go straight to
    :meth:`Gateway.asgi`; everything else (the control plane, streams) to the app. The
    FastAPI route stays for the OpenAPI document and for WebSockets."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app, self.gateway = app, gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/d/") \
                and scope["method"] in METHODS:
            deployment, slash, path = scope["path"][3:].partition("/")
            if deployment and slash:
                await self.gateway.asgi(scope, receive, send, deployment, path)
                return
        await self.app(scope, receive, send)
