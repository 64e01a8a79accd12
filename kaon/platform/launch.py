"""Start ``kaon up`` as a child process and wait for it: for scripts, benchmarks and tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from kaon.net import free_port

KEY = re.compile(r"kaon_[0-9a-f]{12}_\S+")


class PlatformProcess:
    """``kaon up`` on a free port with its own KAON_HOME; ``key`` is the first admin key."""

    def __init__(self, home: Path, *, workers: int = 0, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.home, self.workers = Path(home), workers
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "KAON_HOME": str(self.home), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.key: str | None = None

    def start(self, timeout: float = 60) -> PlatformProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "up.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kaon.cli.main", "up", "--port", str(self.port),
             "--workers", str(self.workers)], env=self.env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kaon up exited: {self.log()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("kaon up did not answer in time")
            time.sleep(0.2)
        found = KEY.search(self.log())
        self.key = self.key or (found[0] if found else None)
        return self

    def log(self) -> str:
        path = self.home / "up.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def deploy(self, name: str, model: str, timeout: float = 120, **fields: Any) -> None:
        """Create a deployment and wait until the gateway can reach it."""
        r = httpx.post(f"{self.url}/api/v1/deployments", headers=self.headers,
                       json={"name": name, "model": model, **fields})
        if r.status_code not in (200, 201):
            raise RuntimeError(r.text)
        self.wait_ready(name, timeout)

    def wait_ready(self, name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while httpx.get(f"{self.url}/api/v1/deployments/{name}",
                        headers=self.headers).json().get("state") != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError(f"deployment {name} not ready: {self.log()[-2000:]}")
            time.sleep(0.3)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no draining."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> PlatformProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
