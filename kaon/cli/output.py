"""Shared printing helpers: rich consoles and the ``--json`` convention."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console

console = Console()
console_err = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Print one JSON document on one line (the last line a script reads). NaN and infinities
    (an AUC on a one-class split, say) become null: JSON has no such numbers."""
    print(json.dumps(_finite(payload), default=str, sort_keys=True, allow_nan=False),
          flush=True)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
