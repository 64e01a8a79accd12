"""``kaon serve`` refuses bad options before it binds the port or loads the model, and its
batching policy and timeout reach a ``FILE.py:Class`` service."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kaon.cli.main import app
from kaon.errors import ConfigError
from tests.registry.fixtures import register_tiny
from tests.serve.test_batching import another_request_on_its_way

runner = CliRunner()


def test_an_unknown_device_is_refused_with_the_choices() -> None:
    register_tiny("digits")
    result = runner.invoke(app, ["serve", "digits:1", "--device", "tpu"])
    assert isinstance(result.exception, ConfigError)
    assert "Unknown device 'tpu'" in str(result.exception) and "cuda:N" in str(result.exception)


def test_a_missing_gpu_is_refused_before_serving() -> None:
    register_tiny("digits")
    missing = torch.cuda.device_count() if torch.cuda.is_available() else 0
    result = runner.invoke(app, ["serve", "digits:1", "--device", f"cuda:{missing}"])
    assert isinstance(result.exception, ConfigError)
    assert "PyTorch sees" in str(result.exception)
    assert "--device cpu" in str(result.exception)


SIZES = """
import asyncio

import kaon


class Sizes(kaon.Service):
    @kaon.handler(batch=kaon.Batch())  # size and wait from the command line
    def flags(self, xs: list[int]) -> list[int]:
        return [len(xs)] * len(xs)  # each caller learns the size of its batch

    @kaon.handler(batch=kaon.Batch(max_batch_size=1))  # its own size wins
    def own(self, xs: list[int]) -> list[int]:
        return [len(xs)] * len(xs)

    @kaon.handler
    async def slow(self) -> str:
        await asyncio.sleep(10)
        return "late"
"""


def test_the_batching_policy_and_timeout_reach_a_service(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sizes.py").write_text(SIZES)
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda built, **_: served.update(app=built))
    result = runner.invoke(app, ["serve", f"{tmp_path / 'sizes.py'}:Sizes",
                                 "--max-batch-size", "2", "--max-wait-ms", "10000",
                                 "--timeout", "2", "--threads", str(torch.get_num_threads())])
    assert result.exit_code == 0, result.output
    with TestClient(served["app"]) as client, ThreadPoolExecutor(4) as pool, \
            another_request_on_its_way():
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        post = client.post
        first = pool.submit(post, "/flags", json={"xs": 0})
        time.sleep(0.2)  # far past the default 5 ms wait: only --max-wait-ms keeps it open
        # (while a request is on its way: a lone one would run at once, decision 0028)
        rest = [pool.submit(post, "/flags", json={"xs": i}) for i in (1, 2, 3)]
        flags = [f.result().json() for f in [first, *rest]]
        own = list(pool.map(lambda i: post("/own", json={"xs": i}).json(), range(2)))
        slow = post("/slow", json={})
    assert flags == [2, 2, 2, 2]  # the first waited for company, and no batch grew past 2
    assert own == [1, 1]
    assert slow.status_code == 504 and "within 2.0s" in slow.json()["message"]


def test_a_service_refuses_a_bad_timeout_before_serving(tmp_path: Path) -> None:
    (tmp_path / "sizes.py").write_text(SIZES)
    result = runner.invoke(app, ["serve", f"{tmp_path / 'sizes.py'}:Sizes", "--timeout", "0"])
    assert isinstance(result.exception, ConfigError)
    assert "--timeout 0.0 must be more than 0" in str(result.exception)


@pytest.mark.parametrize(("args", "words"), [
    (["--max-bodies-mb", "0"], "--max-bodies-mb 0 must both be more than 0"),
    (["--port", "99999"], "--port 99999 is not a TCP port"),
    (["--port", "-5"], "--port -5 is not a TCP port"),
    (["--threads", "-3"], "--threads -3 must be 0"),
])
def test_a_bad_port_thread_count_or_budget_is_refused_before_serving(
        args: list[str], words: str) -> None:
    register_tiny("digits")
    result = runner.invoke(app, ["serve", "digits:1", *args])
    assert isinstance(result.exception, ConfigError), result.output
    assert words in str(result.exception)


def test_a_port_in_use_is_refused_before_the_model_loads() -> None:
    import socket

    register_tiny("digits")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = runner.invoke(app, ["serve", "digits:1", "--port", str(port)])
    assert isinstance(result.exception, ConfigError), result.output
    assert f"Cannot listen on 127.0.0.1:{port}" in str(result.exception)
    assert "choose another --port" in str(result.exception)


def test_missing_weights_are_refused_before_serving() -> None:
    from kaon.registry import get

    register_tiny("digits")
    get("digits:1").artifact.unlink()
    result = runner.invoke(app, ["serve", "digits:1"])
    assert "is missing" in str(result.exception) and "Serving" not in result.output
