"""`kaon serve --replicas N`: worker processes on one port; a killed replica comes back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.registry.fixtures import register_tiny


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _workers(pid: int) -> list[int]:
    """uvicorn's worker processes (spawned children; not multiprocessing's resource tracker)."""
    workers = []
    for child in _children(pid):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        if "spawn_main" in cmdline:
            workers.append(child)
    return workers


@pytest.mark.slow
def test_a_killed_replica_is_restarted_and_no_request_hangs(kaon_home: Path) -> None:
    register_tiny("digits")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "kaon.cli.main", "serve", "digits:1",
                               "--replicas", "2", "--port", str(port)],
                              env={**os.environ, "KAON_HOME": str(kaon_home)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    body = {"inputs": [np.zeros((28, 28), dtype=int).tolist()]}
    try:
        deadline = time.monotonic() + 90
        while len(_workers(server.pid)) < 2 or not _ready(url):
            assert time.monotonic() < deadline, "replicas never became ready"
            time.sleep(0.2)
        before = _workers(server.pid)
        os.kill(before[0], signal.SIGKILL)
        outcomes = []
        until = time.monotonic() + 8
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                outcomes.append(httpx.post(f"{url}/v1/models/digits/predict", json=body,
                                           timeout=5).status_code)
            except httpx.TransportError:
                outcomes.append("connection error")
            assert time.monotonic() - started < 6  # failed fast or succeeded: never hung
        assert outcomes.count(200) > 0
        deadline = time.monotonic() + 60
        while len(_workers(server.pid)) < 2:
            assert time.monotonic() < deadline, "the killed replica was not restarted"
            time.sleep(0.2)
        assert before[0] not in _workers(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
