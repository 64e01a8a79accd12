"""Test data shared by the control-plane tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from kaon.db.models import Model, ModelVersion, new_id
from kaon.errors import KaonError

TRAIN_SPEC: dict[str, Any] = {
    "name": "mnist-mlp",
    "data": {"dataset": "mnist"},
    "model": {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]},
    "epochs": 1,
}


def register_model(session: Session, workspace_id: str, name: str = "mnist-mlp",
                   versions: int = 2) -> None:
    """Registry rows only (no weights): what deployments check a model against."""
    model = Model(id=new_id("mdl"), workspace_id=workspace_id, name=name,
                  last_version=versions)
    session.add(model)
    session.flush()
    for v in range(1, versions + 1):
        session.add(ModelVersion(id=new_id("mv"), model_id=model.id, version=v, spec={},
                                 dataset="mnist", dataset_hash="0" * 64, metrics={},
                                 signature={}, lineage={}, artifact="/nowhere",
                                 sha256="0" * 64, size_bytes=0))
    session.flush()


def slow_clock(monkeypatch: pytest.MonkeyPatch, module: object) -> None:
    """Widen the window between a check and its write: each creation stamps its row 0.2 s
    after counting, so without a lock every racer counts before the first one commits."""
    real = module.utcnow  # type: ignore[attr-defined]

    def slow() -> datetime:
        time.sleep(0.2)
        return real()

    monkeypatch.setattr(module, "utcnow", slow)


def race(sessions: Callable[[], Session], calls: list[Callable[[Session], object]],
         ) -> tuple[list[int], list[int], list[BaseException]]:
    """Run each call in its own thread and transaction, all at once: (allowed, refused by a
    KaonError, other errors), as indices of ``calls``."""
    allowed: list[int] = []
    refused: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            with sessions() as s:
                calls[i](s)
                s.commit()
            allowed.append(i)
        except KaonError:  # the limit's own error: PlanLimitError, ConflictError
            refused.append(i)
        except BaseException as exc:  # pragma: no cover - reported by the assert
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return allowed, refused, errors
