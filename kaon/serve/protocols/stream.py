"""Real-time frame streams over WebSocket: ``/v1/models/{name}/stream``.

A client opens a stream (``?policy=drop_oldest|block&max_pending=8``), sends frames as binary
messages — PNG/JPEG bytes, or a raw tensor: ``b"KTNS"`` + a 4-byte little-endian header length
+ a JSON header ``{"shape": [H, W] | [C, H, W], "dtype": "uint8"}`` + the pixel bytes — and
receives one JSON result per frame, in order, with its server-side latency and the number of
frames still waiting behind it. When frames come
faster than the model keeps up, at most ``max_pending`` wait: ``drop_oldest`` discards the
oldest waiting frame (and says which, in the next result), ``block`` stops reading the socket
so the sender is held back by TCP. Garbage gets an error message and closes that stream only;
a frame the model fails on gets a result with ``error`` and the stream goes on; a frame the
server is too busy for (other clients' load) is dropped and reported under ``drop_oldest``
when a newer frame waits, else tried again.

Every Kaon server declines WebSocket compression (permessage-deflate; uvicorn's
``ws_per_message_deflate=False``, and the replica pool's hop from the front to a replica).
Camera frames (sensor noise, or JPEG) shrink little under deflate, and a sender that
compresses each 86 KB frame spends more CPU on zlib than the server spends on the frame: a
client offering compression (browsers and Python's ``websockets`` do by default) then sends
uncompressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError

from kaon.errors import KaonError, PredictionError
from kaon.registry.signature import Signature
from kaon.serve import logs
from kaon.serve.asgi import refuse_handshake
from kaon.serve.batching import Overloaded, RequestTimeout
from kaon.serve.runtime import Runtime

MAGIC = b"KTNS"
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_PENDING = 64
MAX_LISTED = 256  # dropped frames one result lists at most (``dropped_total`` counts all)
RETRY_S = 0.02  # a frame refused by a saturated server is tried again after this


def frame_limit(sig: Signature) -> int:
    """The largest frame a stream for ``sig`` takes: room for its pixels eight times over (a
    PNG or JPEG of noise is larger than the raw pixels; a 16-bit RGBA PNG sent to a grey
    model takes 8 bytes a pixel) and 64 KiB of metadata (EXIF), at least 1 MiB and at most
    ``MAX_FRAME_BYTES``. It bounds what a stream's waiting frames can hold to
    ``max_pending`` times that: 64 MiB for 240×360 grey at 64 waiting, not 512 MiB."""
    c, h, w = sig.shape
    return min(MAX_FRAME_BYTES, max(1 << 20, 8 * c * h * w + 65536))


class BadFrame(Exception):
    pass


def decode_frame(data: bytes, sig: Signature) -> np.ndarray:
    """One binary message → uint8 (C, H, W) matching the signature."""
    c, h, w = sig.shape
    if data.startswith(MAGIC):
        if len(data) < 8:
            raise BadFrame("tensor frame shorter than its 8-byte prefix")
        (length,) = struct.unpack("<I", data[4:8])
        try:
            header = json.loads(data[8:8 + length])
            shape = header["shape"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise BadFrame(f"tensor header is not valid JSON with a 'shape': {exc}") from None
        if not isinstance(shape, list) or not all(type(d) is int for d in shape):
            raise BadFrame(f"tensor header's 'shape' must be a list of integers, got "
                           f"{shape!r:.60}")
        if header.get("dtype", "uint8") != "uint8":
            raise BadFrame("tensor frames must be uint8")
        pixels = data[8 + length:]
        if len(shape) == 2 and c == 1:
            shape = [1, *shape]
        if shape != [c, h, w] or len(pixels) != c * h * w:
            raise BadFrame(f"tensor frame of shape {header['shape']} and {len(pixels)} bytes; "
                           f"expected {sig.describe()}")
        return np.frombuffer(pixels, dtype=np.uint8).reshape(c, h, w)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ("PNG", "JPEG") or img.size != (w, h):
                raise BadFrame(f"got a {img.format} image of {img.size[0]}x{img.size[1]}; "
                               f"expected {sig.describe()}")
            img = img.convert("L" if c == 1 else "RGB")
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise BadFrame("the frame is neither a PNG/JPEG image nor a KTNS tensor") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy()


@dataclass
class _Pending:
    seq: int
    data: bytes
    received: float = field(default_factory=time.perf_counter)


class Stream:
    """One client's stream: a bounded queue between the socket reader and the model."""

    def __init__(self, ws: WebSocket, runtime: Runtime, sig: Signature,
                 policy: Literal["drop_oldest", "block"], max_pending: int) -> None:
        self.ws, self.runtime, self.sig = ws, runtime, sig
        self.policy, self.max_pending = policy, max_pending
        self.limit = frame_limit(sig)
        self.pending: deque[_Pending] = deque()
        self.changed = asyncio.Condition()
        self.dropped: list[int] = []
        self.dropped_total = 0
        self.frames = self.answered = 0
        self.closed = False
        self.client_code: int | None = None  # the close code of a client that closed first

    async def read(self) -> None:
        seq = 0
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    self.client_code = int(message.get("code") or 1000)
                    break
                data = message.get("bytes")
                if data is None:
                    if _is_close(message.get("text") or ""):
                        break
                    raise BadFrame("send frames as binary messages")
                if len(data) > self.limit:
                    c, h, w = self.sig.shape
                    raise BadFrame(f"frame of {len(data)} bytes is over {self.limit} bytes, "
                                   f"the most a stream of {c}x{h}x{w} frames takes")
                async with self.changed:
                    if self.policy == "block":
                        await self.changed.wait_for(
                            lambda: len(self.pending) < self.max_pending or self.closed)
                    elif len(self.pending) >= self.max_pending:
                        self._dropped(self.pending.popleft().seq)
                    self.pending.append(_Pending(seq, data))
                    self.changed.notify_all()
                seq += 1
                self.frames = seq
        finally:
            async with self.changed:
                self.closed = True
                self.changed.notify_all()

    async def process(self) -> None:
        while True:
            async with self.changed:
                await self.changed.wait_for(lambda: bool(self.pending) or self.closed)
                if not self.pending:
                    return
                frame = self.pending.popleft()
                waiting = len(self.pending)
                dropped, self.dropped = self.dropped, []
                self.changed.notify_all()
            image = decode_frame(frame.data, self.sig)
            try:
                result = await self._predict(image)
            except _Skipped:  # the server was saturated and a newer frame waits: drop this
                async with self.changed:  # reported with the next result, in order
                    self.dropped = [*dropped, *self.dropped][:MAX_LISTED - 1]
                    self._dropped(frame.seq)
                    self.dropped.sort()
                continue
            except PredictionError as exc:  # this frame only: the stream goes on
                result = {"error": "PredictionError", "message": exc.message}
            done = time.perf_counter()
            await self.ws.send_json({
                "seq": frame.seq, **result,  # model_ms: the model call of this frame's batch
                "latency_ms": round((done - frame.received) * 1000, 3),
                "pending": waiting,  # frames still waiting behind this one
                "dropped": dropped, "dropped_total": self.dropped_total})
            self.answered += 1

    def _dropped(self, seq: int) -> None:
        """Frame ``seq`` is dropped: listed in the next result (the first ``MAX_LISTED``
        of them), and counted."""
        if len(self.dropped) < MAX_LISTED:
            self.dropped.append(seq)
        self.dropped_total += 1
        self.runtime.metrics.stream_dropped.inc()

    async def _predict(self, image: np.ndarray) -> dict[str, Any]:
        """The frame's result. When the server is saturated (its queue full, or the frame
        past its deadline, because of other clients' load), a ``drop_oldest`` stream drops
        the frame if a newer one waits, and every other frame is tried again shortly: a
        passing overload thins or slows a stream, it does not end it."""
        while True:
            try:
                (result,) = await self.runtime.predict(image[None], timed=True)
                return result
            except (Overloaded, RequestTimeout) as exc:
                if isinstance(exc, Overloaded):
                    self.runtime.metrics.rejected.inc()
                if self.policy == "drop_oldest" and self.pending:
                    raise _Skipped from None
                await asyncio.sleep(RETRY_S)


class _Skipped(Exception):
    """A frame dropped because the server was saturated when its turn came."""


def _is_close(text: str) -> bool:
    """The client's close request, ``{"type": "close"}`` (however it is spaced)."""
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "close"


def _open_error(policy: str, max_pending: str) -> str | None:
    """What is wrong with a stream's opening query, if anything."""
    if policy not in ("drop_oldest", "block"):
        return f"policy {policy!r:.40} is not drop_oldest or block"
    if not re.fullmatch(r"[0-9]{1,3}", max_pending) or not 1 <= int(max_pending) <= MAX_PENDING:
        return f"max_pending must be an integer 1..{MAX_PENDING}, got {max_pending!r:.40}"
    return None


async def _send_error(ws: WebSocket, message: str, code: int) -> None:
    """An error message, then the close; the client may have gone already."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await ws.send_json({"error": message})
        await ws.close(code=code)


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter(tags=["streams"])

    @api.websocket("/v1/models/{name}/stream")
    async def stream(ws: WebSocket, name: str, policy: str = "drop_oldest",
                     max_pending: str = "8") -> None:
        # a bad opening is refused at the handshake, as HTTP: 400 (query) or 404 (model)
        problem = _open_error(policy, max_pending)
        if problem is not None:
            hint = f"Open /v1/models/{name}/stream?policy=drop_oldest|block&max_pending=8."
            await refuse_handshake(ws, JSONResponse(
                status_code=400, content=KaonError(problem, hint).to_dict()))
            return
        try:
            p = runtime.predictor(name)
        except KaonError as exc:
            await refuse_handshake(ws, JSONResponse(status_code=exc.http_status,
                                                    content=exc.to_dict()))
            return
        await ws.accept()
        s = Stream(ws, runtime, p.signature, policy, int(max_pending))  # type: ignore[arg-type]
        runtime.metrics.streams.inc()
        started, code = time.perf_counter(), 1000
        reader = asyncio.create_task(s.read())
        try:
            await s.process()
            await reader
            if s.client_code is None:  # the client asked to close ({"type": "close"})
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                    await ws.close(code=1000)
            else:
                code = s.client_code
        except (BadFrame, KaonError) as exc:
            reader.cancel()
            code = 1003 if isinstance(exc, BadFrame) else 1011
            await _send_error(ws, str(getattr(exc, "message", exc)), code)
        except WebSocketDisconnect as exc:
            reader.cancel()
            code = exc.code  # the client went away (1000 if it closed cleanly)
        finally:
            runtime.metrics.streams.dec()
            runtime.metrics.stream_dropped_per_stream.labels(policy).observe(s.dropped_total)
            logs.access({"stream": logs.request_id(ws.headers.get("x-request-id")),
                         "path": ws.url.path, "policy": policy, "frames": s.frames,
                         "answered": s.answered, "dropped": s.dropped_total,
                         "close_code": code,
                         "ms": round((time.perf_counter() - started) * 1000, 3)})

    return api
