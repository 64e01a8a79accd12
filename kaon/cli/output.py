"""Shared printing helpers: rich consoles and the ``--json`` convention."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from kaon import jsonsafe

console = Console()
console_err = Console(stderr=True)


def print_json(payload: Any) -> None:
    """Print one JSON document on one line (the last line a script reads). NaN and infinities
    (an AUC on a one-class split, say) become null: JSON has no such numbers."""
    print(jsonsafe.dumps(payload, sort_keys=True), flush=True)


def confirm(question: str) -> None:
    """Ask ``question`` on stderr (stdout stays for ``--json``); go on only on a yes. A
    stdin that ends unanswered (a script without ``--yes``) is an error that says so."""
    import typer

    from kaon.errors import ConfigError

    try:
        ok = typer.confirm(question, err=True)
    except typer.Abort:  # Ctrl-C or Ctrl-D at a terminal; else stdin ended: nobody there
        if sys.stdin.isatty():
            ok = False
        else:
            raise ConfigError(f"{question} was not answered: stdin ended.",
                              hint="Pass --yes to go ahead without the question.") from None
    if not ok:
        console_err.print("Cancelled; nothing was changed.")
        raise typer.Exit(1)
