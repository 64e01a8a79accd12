"""The serving runtime behind every protocol: model loading, readiness and the batcher.

Protocols (Kaon JSON, Open Inference Protocol V2) decode their own wire formats into uint8
image arrays and call :meth:`Runtime.predict`; nothing else touches the model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from kaon.errors import KaonError, NotFoundError, PredictionError, UnavailableError
from kaon.procs import freeze_heap
from kaon.serve.batching import ARRIVALS, Batcher, BatchPolicy, OverQueueBound
from kaon.serve.metrics import ServerMetrics
from kaon.serve.predictor import Predictor

log = logging.getLogger("kaon.serve")


class Runtime:
    def __init__(self, load: Callable[[], Predictor], policy: BatchPolicy,
                 metrics: ServerMetrics) -> None:
        self._load = load
        self.policy = policy
        self.metrics = metrics
        self.predictor_or_none: Predictor | None = None
        self.error: Exception | None = None
        self.loaded = threading.Event()
        # an item is one request's images (up to a batch of them); its units, their number
        self.batcher: Batcher[np.ndarray, tuple[list[dict[str, Any]], float]] = Batcher(
            self._predict_batch, policy, on_batch=metrics.observe_batch, arrivals=ARRIVALS)
        metrics.dropped.set_function(lambda: self.batcher.dropped)  # read at each scrape

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model in the background (``/readyz`` waits) and start batching."""
        threading.Thread(target=self._load_once, name="kaon-model-loader", daemon=True).start()
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop(drain=True)

    def _load_once(self) -> None:
        try:
            predictor = self._load()
            freeze_heap()
            self.predictor_or_none = predictor
        except Exception as exc:
            self.error = exc  # /readyz answers 503 with it, and its hint points here:
            log.error("the model failed to load: %s", exc, exc_info=exc)
        finally:
            self.loaded.set()

    @property
    def ready(self) -> bool:
        return self.predictor_or_none is not None

    def predictor(self, name: str | None = None) -> Predictor:
        if self.error is not None:
            raise UnavailableError(f"The model failed to load: {self.error}",
                                   hint="Check the server log; restart it once fixed.")
        p = self.predictor_or_none
        if p is None:
            raise UnavailableError("The model is still loading.",
                                   hint="Poll /readyz until it answers 200.")
        if name is not None and name != p.name:
            raise NotFoundError(f"This server has no model {name!r}. Served: {p.name!r}.",
                                hint=f"Use /v1/models/{p.name}/predict or "
                                     f"/v2/models/{p.name}/infer.")
        return p

    # ---- prediction ---------------------------------------------------------------------------
    async def predict(self, images: np.ndarray, timed: bool = False) -> list[dict[str, Any]]:
        """uint8 (N, C, H, W) → one result per image. The images join a dynamic batch
        together, as one item (split in pieces of at most ``max_batch_size``).

        With ``timed``, each result also carries ``model_ms``: the model call of its batch.
        """
        if len(images) > self.policy.max_queue:
            raise OverQueueBound(len(images), self.policy.max_queue)
        self.metrics.queue_depth.set(self.batcher.depth)
        size = self.policy.max_batch_size
        pieces = [images] if len(images) <= size else [
            images[i:i + size] for i in range(0, len(images), size)]
        tasks = [asyncio.ensure_future(self.batcher.submit(p, units=len(p))) for p in pieces]
        try:
            done = await (tasks[0] if len(tasks) == 1 else asyncio.gather(*tasks))
        except BaseException as exc:
            for task in tasks:  # one piece refused or failed: drop the others
                task.cancel()
            if isinstance(exc, Exception) and not isinstance(exc, KaonError):
                log.error("the model raised on a request's input", exc_info=exc)
                raise PredictionError(
                    f"The model failed on this request's input: {type(exc).__name__}: {exc}",
                    hint="Other requests were served. Check this input; the server log has "
                         "the traceback.") from exc
            raise
        outcomes = [done] if len(tasks) == 1 else done
        if timed:
            return [{**r, "model_ms": round(seconds * 1000, 3)}
                    for results, seconds in outcomes for r in results]
        return [r for results, _ in outcomes for r in results]

    def _predict_batch(self, pieces: Sequence[np.ndarray]
                       ) -> list[tuple[list[dict[str, Any]], float]]:
        """One model call for the batch's pieces; each piece gets its images' results."""
        predictor = self.predictor()
        started = time.perf_counter()
        batch = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        if not batch.flags.writeable:  # a frame read straight from the socket's bytes
            batch = batch.copy()
        results = predictor.predict(torch.from_numpy(batch))
        seconds = time.perf_counter() - started
        out, at = [], 0
        for piece in pieces:
            out.append((results[at:at + len(piece)], seconds))
            at += len(piece)
        return out
