"""kaon.serve.asgi: the bodies one server process holds at once are bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from kaon.serve import asgi
from kaon.serve.asgi import BUSY, BodyBudget, read_body
from tests.serve.test_app import client, digit_image  # noqa: F401  (the fixture)


def _sender(*chunks: bytes) -> Any:
    """receive() for a body sent in ``chunks``."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


def test_a_body_that_would_pass_the_budget_is_refused_and_holds_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    budget = BodyBudget(100)
    monkeypatch.setattr(asgi, "BODIES", budget)
    scope: dict[str, Any] = {"type": "http", "headers": []}

    async def scenario() -> None:
        first = await read_body(scope, _sender(b"a" * 30, b"b" * 30), limit=1000)
        assert first == b"a" * 30 + b"b" * 30 and budget.held == 60
        # 30 bytes fit, the next 30 do not: refused, and its first 30 given back
        assert await read_body(scope, _sender(b"c" * 30, b"d" * 30), limit=1000) is BUSY
        assert budget.held == 60
        assert await read_body(scope, _sender(b"e" * 70), limit=50) is None  # 413: over limit
        assert budget.held == 60
        budget.give(60)  # the first request answered
        assert await read_body(scope, _sender(b"c" * 30, b"d" * 30), limit=1000) == \
            b"c" * 30 + b"d" * 30
        budget.give(60)
        # a body alone is always let in, up to its own limit (one over the budget included:
        # refused, it would be refused forever, and its client told to retry)
        assert await read_body(scope, _sender(b"f" * 80, b"g" * 80), limit=1000) == \
            b"f" * 80 + b"g" * 80
        assert budget.held == 160

    asyncio.run(scenario())


@pytest.mark.parametrize("path", ["/v1/models/digits/predict", "/v2/models/digits/infer"])
def test_past_the_budget_a_request_gets_503_and_answered_ones_hold_nothing(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, path: str) -> None:  # noqa: F811
    budget = BodyBudget(256 * 1024)
    monkeypatch.setattr(asgi, "BODIES", budget)
    image = digit_image().tolist()
    ok = {"inputs": [image]} if path.startswith("/v1") else {"inputs": [
        {"name": "input", "shape": [1, 28, 28], "datatype": "UINT8",
         "data": np.asarray(image).ravel().tolist()}]}
    for body in (ok, {"inputs": "garbage"}):
        assert client.post(path, json=body).status_code in (200, 400, 422)
    assert budget.held == 0  # every answered request gave its body back
    budget.take(budget.total - 100)  # other requests hold nearly all of it
    refused = client.post(path, json=ok)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    if path.startswith("/v2"):  # V2's format: {"error": message}
        assert "request bodies" in error
    else:
        assert error == "UnavailableError" and "request bodies" in refused.json()["message"]
    assert budget.held == budget.total - 100
