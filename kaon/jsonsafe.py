"""JSON that every parser reads. Python writes NaN and infinities (an AUC on a one-class test
split, say) as bare ``NaN``/``Infinity``, which strict parsers (``jq``, ``JSON.parse``)
refuse; here they become null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every NaN and infinity made None, through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``; anything else it cannot write is ``str``."""
    return json.dumps(finite(value), default=str, allow_nan=False, **kwargs)
