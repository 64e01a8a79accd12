"""A service written as a class: `kaon serve examples/services/echo.py:Echo --port 8000`.

    curl -s localhost:8000/say -H 'content-type: application/json' -d '{"text": "hi", "times": 2}'
    curl -s localhost:8000/shout -H 'content-type: application/json' -d '{"texts": "hi"}'
    curl -sN localhost:8000/count -H 'content-type: application/json' -d '{"n": 3}'
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

import kaon


class Said(BaseModel):
    lines: list[str]


class Echo(kaon.Service):
    def setup(self) -> None:
        self.prefix = "echo: "  # load models and other state here; runs once

    @kaon.handler
    def say(self, text: str, times: int = 1) -> Said:
        """Repeat a text."""
        return Said(lines=[self.prefix + text] * times)

    @kaon.handler(batch=kaon.Batch(max_batch_size=16, max_wait_ms=5))
    def shout(self, texts: list[str]) -> list[str]:
        """Upper-case texts; concurrent requests arrive here as one list."""
        return [t.upper() for t in texts]

    @kaon.handler
    def count(self, n: int) -> Iterator[int]:
        """Stream 0..n-1 as Server-Sent Events."""
        yield from range(n)
