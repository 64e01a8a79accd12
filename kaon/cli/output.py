"""Shared printing helpers: rich consoles and the ``--json`` convention."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from kaon import jsonsafe

console = Console()
console_err = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Print one JSON document on one line (the last line a script reads). NaN and infinities
    (an AUC on a one-class split, say) become null: JSON has no such numbers."""
    print(jsonsafe.dumps(payload, sort_keys=True), flush=True)
