"""AutoML: architecture and hyperparameter search with Optuna under a wall-clock budget.

Exports load lazily so that a trial process (``python -m kaon.tune.worker``) starts without
importing Optuna and matplotlib.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "SearchSpace": "kaon.tune.space", "load_space": "kaon.tune.space",
    "TuneConfig": "kaon.tune.study", "TuneResult": "kaon.tune.study",
    "tune": "kaon.tune.study", "resume": "kaon.tune.study", "pick": "kaon.tune.study",
    "dataset_for": "kaon.tune.data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kaon.tune' has no attribute {name!r}")
