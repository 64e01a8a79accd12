"""Streams through the gateway under HTTP's rules, frame by frame: each frame takes a token
from the workspace's rate-limit bucket, a stream whose key is revoked or whose quota is used
up is closed at its next check, and a frame whose usage cannot be recorded is not sent.

The gateway, its database (SQLite), its rate limiter and its usage writer are the real ones;
the deployment behind it is a stand-in that answers each frame with its number, so that only
the gateway's own rules are timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from kaon.config import reset_settings
from kaon.db.models import utcnow
from kaon.platform import auth, gateway, metering
from kaon.platform.common import period_of
from kaon.platform.meterlog import MeterWriter
from kaon.platform.ratelimit import RateLimiter
from kaon.platform.workspaces import DEFAULT_WORKSPACE, bootstrap

REPO = Path(__file__).resolve().parents[2]
CAP = 50  # the test plan's monthly inference requests, which frames draw on
STREAM = "/d/cam/v1/models/digits/stream?policy=block"  # every frame answered, in time
DROPPING = "/d/cam/v1/models/digits/stream"  # drop_oldest, the default


class EchoPool:
    """A deployment that answers each frame with its number, as a replica's relay would."""

    async def forward_ws(self, websocket: WebSocket, path: str, query: str) -> None:
        await websocket.accept()
        seq = 0
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await websocket.send_text(json.dumps({"seq": seq}))
                seq += 1
        except WebSocketDisconnect:  # the pool's relay ends quietly, as here
            return


class ClosingPool(EchoPool):
    """One that ends the stream when the client asks ({"type": "close"}), as a replica does."""

    async def forward_ws(self, websocket: WebSocket, path: str, query: str) -> None:
        await websocket.accept()
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), 2.0)
            except asyncio.TimeoutError:  # the request never came: say so (no hang)
                await websocket.close(4000)
                return
            if message["type"] == "websocket.disconnect" or message.get("text"):
                await websocket.close(1000)
                return


class LatePool(EchoPool):
    """One whose last result comes after the client's side has closed, as a replica's can."""

    async def forward_ws(self, websocket: WebSocket, path: str, query: str) -> None:
        await super().forward_ws(websocket, path, query)
        with contextlib.suppress(WebSocketDisconnect):  # as the pool's relay does
            await websocket.send_text(json.dumps({"seq": 99}))


class FailingPool(EchoPool):
    """One whose model fails on frames of the byte 1: that frame's result is an error, and
    the stream goes on, as a replica's does."""

    async def forward_ws(self, websocket: WebSocket, path: str, query: str) -> None:
        await websocket.accept()
        seq = 0
        with contextlib.suppress(WebSocketDisconnect):
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                result: dict[str, object] = {"seq": seq}
                if message.get("bytes") == b"\x01":
                    result.update(error="PredictionError", message="the model failed")
                await websocket.send_text(json.dumps(result))
                seq += 1


class Deployments:
    def __init__(self, pool: type[EchoPool] = EchoPool) -> None:
        self.kind = pool

    def pool(self, workspace_id: str, name: str) -> EchoPool | None:
        return self.kind() if (workspace_id, name) == (DEFAULT_WORKSPACE, "cam") else None


def _plans(path: Path, rps: float, burst: int) -> Path:
    text = (REPO / "kaon/platform/plans.toml").read_text()
    free = re.search(r"\[plans\.free\].*?(?=\n\[plans\.)", text, flags=re.S)
    assert free is not None
    block = free.group(0)
    block = re.sub(r"included_inference_requests = [\d_]+",
                   f"included_inference_requests = {CAP}", block)
    block = re.sub(r"rate_limit_rps = [\d.]+\nburst = \d+",
                   f"rate_limit_rps = {rps}\nburst = {burst}", block)
    block = block.replace("features = []", 'features = ["streams"]')
    block = re.sub(r"max_streams = \d+", "max_streams = 2", block)
    path.write_text(text.replace(free.group(0), block))
    return path


class SteppedLimiter(RateLimiter):
    """The real limiter on a clock the test moves, counting the tokens asked of it: a frame
    dropped over the rate is dropped for certain, however slowly the gateway reads it."""

    def __init__(self) -> None:
        self.now, self.asked = 0.0, 0
        super().__init__(clock=lambda: self.now)

    def take(self, key: str, rate: float, burst: int, n: float = 1.0) -> float:
        self.asked += 1
        return super().take(key, rate, burst, n)

    def refill_after(self, asked: int) -> None:
        """Once ``asked`` tokens were asked for (the opening's and one per frame), a second
        passes: the bucket is full again."""
        deadline = time.monotonic() + 30
        while self.asked < asked:
            assert time.monotonic() < deadline, f"{self.asked} of {asked} tokens asked for"
            time.sleep(0.01)
        self.now += 1.0


def _serve(meter: MeterWriter, pool: type[EchoPool] = EchoPool,
           limiter: RateLimiter | None = None) -> TestClient:
    app = FastAPI()
    app.include_router(gateway.Gateway(Deployments(pool), meter, limiter=limiter,
                                       cache_s=0.0).router())
    return TestClient(app)


@pytest.fixture
def secret(sqlite_db: Session, kaon_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KAON_PLANS_FILE", str(_plans(kaon_home.parent / "plans.toml", 10, 3)))
    reset_settings()
    made = bootstrap(sqlite_db)
    sqlite_db.commit()
    assert made is not None
    return made


@pytest.fixture
def meter(secret: str) -> Iterator[MeterWriter]:
    writer = MeterWriter()  # group commit: recorded when record() returns
    writer.start()
    yield writer
    writer.stop()


def _headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_each_frame_of_a_block_stream_waits_for_a_token_from_the_workspaces_bucket(
        secret: str, meter: MeterWriter, sqlite_db: Session) -> None:
    """10 frames a second, a burst of 3 (one taken by the opening): 8 frames take at least
    0.5 s, however fast they are sent (before, a stream took one token in all)."""
    with _serve(meter) as client, client.websocket_connect(STREAM, headers=_headers(secret)) as ws:
        started = time.monotonic()
        for i in range(8):
            ws.send_bytes(bytes([i]))
        seqs = [ws.receive_json()["seq"] for _ in range(8)]
        elapsed = time.monotonic() - started
    assert seqs == list(range(8))
    assert elapsed >= 0.5, f"8 frames went through in {elapsed:.3f} s: not paced"
    sqlite_db.expire_all()
    assert metering.usage(sqlite_db, DEFAULT_WORKSPACE, period_of(utcnow()))["stream_frames"] == 8


def test_a_drop_oldest_stream_drops_frames_over_the_rate_and_reports_them_in_its_numbering(
        secret: str, meter: MeterWriter) -> None:
    """Over the plan's rate a drop_oldest stream's frames are dropped on arrival, not queued
    (its latency stays that of one frame); results carry the client's own frame numbers,
    and every frame is either answered or reported dropped."""
    answered: list[int] = []
    reported: list[int] = []
    limiter = SteppedLimiter()
    with _serve(meter, limiter=limiter) as client, \
            client.websocket_connect(DROPPING, headers=_headers(secret)) as ws:
        for i in range(8):  # the bucket holds 2 tokens: most of these are over the rate
            ws.send_bytes(bytes([i]))
        limiter.refill_after(1 + 8)
        ws.send_bytes(b"\x08")
        while 8 not in answered:
            result = ws.receive_json()
            answered.append(result["seq"])
            reported += result["dropped"]
    assert answered == sorted(answered) and answered[:2] == [0, 1]
    assert len(reported) >= 3 and sorted(answered + reported) == list(range(9))
    assert result["dropped_total"] == len(reported)


def test_a_frame_the_model_failed_on_keeps_the_clients_number_and_is_not_billed(
        secret: str, meter: MeterWriter, sqlite_db: Session) -> None:
    """A replica answers a frame its model failed on with an error result and goes on; the
    gateway gives it the client's frame number like any result, and does not meter it."""
    results: list[dict[str, object]] = []
    limiter = SteppedLimiter()
    with _serve(meter, FailingPool, limiter) as client, \
            client.websocket_connect(DROPPING, headers=_headers(secret)) as ws:
        for _ in range(6):  # over the rate: the replica's numbering falls behind the client's
            ws.send_bytes(b"\x00")
        limiter.refill_after(1 + 6)
        ws.send_bytes(b"\x01")  # the client's frame 6
        while not results or "error" not in results[-1]:  # (ends: every frame answered)
            results.append(ws.receive_json())
        limiter.refill_after(1 + 7)
        ws.send_bytes(b"\x00")  # frame 7
        results.append(ws.receive_json())
    failed = [r for r in results if "error" in r]
    assert [r["seq"] for r in failed] == [6] and results[-1]["seq"] == 7
    sqlite_db.expire_all()
    billed = metering.usage(sqlite_db, DEFAULT_WORKSPACE, period_of(utcnow()))["stream_frames"]
    assert billed == len(results) - 1  # every answered frame but the failed one


@pytest.mark.parametrize("change", ["revoke the key", "use up the quota"])
def test_a_stream_is_closed_at_its_next_check_once_it_may_not_go_on(
        change: str, secret: str, meter: MeterWriter, sqlite_db: Session,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "RECHECK_S", 0.0)  # check at every frame
    with _serve(meter) as client, client.websocket_connect(STREAM, headers=_headers(secret)) as ws:
        ws.send_bytes(b"\x00")
        assert ws.receive_json()["seq"] == 0
        if change == "revoke the key":
            key = auth.authenticate(sqlite_db, f"Bearer {secret}")
            assert key.key_id is not None
            auth.revoke_key(sqlite_db, DEFAULT_WORKSPACE, key.key_id)
        else:
            metering.record(sqlite_db, DEFAULT_WORKSPACE, "stream_frames", CAP, "used-up")
        sqlite_db.commit()
        ws.send_bytes(b"\x01")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1008
    assert ("revoked" if change == "revoke the key" else "quota is used up") in \
        closed.value.reason


def test_a_result_after_the_stream_was_closed_is_neither_metered_nor_sent(
        secret: str, meter: MeterWriter, sqlite_db: Session,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "RECHECK_S", 0.0)
    with _serve(meter, LatePool) as client, \
            client.websocket_connect(STREAM, headers=_headers(secret)) as ws:
        ws.send_bytes(b"\x00")
        assert ws.receive_json()["seq"] == 0
        key = auth.authenticate(sqlite_db, f"Bearer {secret}")
        assert key.key_id is not None
        auth.revoke_key(sqlite_db, DEFAULT_WORKSPACE, key.key_id)
        sqlite_db.commit()
        ws.send_bytes(b"\x01")
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    sqlite_db.expire_all()
    assert metering.usage(sqlite_db, DEFAULT_WORKSPACE, period_of(utcnow()))["stream_frames"] == 1


def test_a_frame_whose_usage_cannot_be_recorded_is_not_sent(secret: str) -> None:
    stopped: Any = MeterWriter(journal=Path("never-started"))  # its record() refuses: 503
    with _serve(stopped) as client, \
            client.websocket_connect(STREAM, headers=_headers(secret)) as ws:
        ws.send_bytes(b"\x00")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1011 and "usage could not be recorded" in closed.value.reason


def test_a_workspace_opens_at_most_its_plans_max_streams_at_once(
        secret: str, meter: MeterWriter) -> None:
    from starlette.testclient import WebSocketDenialResponse

    with _serve(meter) as client:
        with client.websocket_connect(STREAM, headers=_headers(secret)), \
                client.websocket_connect(STREAM, headers=_headers(secret)):
            with pytest.raises(WebSocketDenialResponse) as refused, \
                    client.websocket_connect(STREAM, headers=_headers(secret)):
                pass
            assert refused.value.status_code == 409
            assert "allows 2 open stream(s) at once" in refused.value.json()["message"]
        for _ in range(100):  # until the closes reach the server and the bucket refills
            try:
                with client.websocket_connect(STREAM, headers=_headers(secret)) as ws:
                    ws.send_bytes(b"\x00")
                    assert ws.receive_json()["seq"] == 0
                break
            except WebSocketDenialResponse:
                time.sleep(0.05)
        else:
            pytest.fail("a closed stream's place was not freed")


def test_a_database_that_cannot_answer_a_check_does_not_close_the_stream(
        secret: str, meter: MeterWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy or unreachable database is the platform's trouble, not the stream's: the check
    is asked again later, and the frames go on (they are metered by the journal's writer)."""
    from sqlalchemy.exc import OperationalError

    def busy(workspace_id: str) -> None:
        raise OperationalError("SELECT plan", {}, Exception("database is locked"))

    monkeypatch.setattr(gateway, "RECHECK_S", 0.0)
    with _serve(meter) as client, client.websocket_connect(STREAM, headers=_headers(secret)) as ws:
        ws.send_bytes(b"\x00")
        assert ws.receive_json()["seq"] == 0
        monkeypatch.setattr(gateway, "_current_plan", busy)
        for i in range(1, 3):
            ws.send_bytes(bytes([i]))
            assert ws.receive_json()["seq"] == i


def test_a_close_request_reaches_the_replica_even_over_the_rate(
        secret: str, meter: MeterWriter) -> None:
    """Only binary frames are paced or dropped: a client's {"type": "close"} sent when its
    bucket is empty still ends the stream (before the fix it was dropped as a frame)."""
    with _serve(meter, ClosingPool) as client, \
            client.websocket_connect(DROPPING, headers=_headers(secret)) as ws:
        for i in range(6):  # empties the bucket (2 tokens after the opening)
            ws.send_bytes(bytes([i]))
        ws.send_text('{"type": "close"}')
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1000
