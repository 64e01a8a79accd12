"""Shared printing helpers: rich consoles and the ``--json`` convention."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

console = Console()
console_err = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Print one JSON document on one line (the last line a script reads)."""
    print(json.dumps(payload, default=str, sort_keys=True), flush=True)
