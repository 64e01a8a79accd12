"""A real ``kaon up`` subprocess for tests that drive the platform over HTTP (SDK, CLI).

SQLite in its own KAON_HOME with a tiny registered model ``digits``; the shipped plans with
the rate limits raised (tests send many requests at once); no job workers. The admin key is
read from its log, as a user would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from kaon.net import free_port
from tests.registry.fixtures import register_tiny

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Platform:
    url: str
    key: str  # the owner's admin key, as printed on first start
    home: Path


def relaxed_plans(path: Path) -> Path:
    """The shipped plans file with every plan's rate limit raised to 1000/s."""
    shipped = (REPO / "kaon/platform/plans.toml").read_text()
    shipped = re.sub(r"rate_limit_rps = [\d.]+\nburst = [\d_]+",
                     "rate_limit_rps = 1000.0\nburst = 1000", shipped)
    path.write_text(shipped)
    return path


@contextmanager
def running_platform(home: Path) -> Iterator[Platform]:
    """``kaon up --workers 0`` on a free port with ``home`` as KAON_HOME, until the block ends."""
    env = {**os.environ, "KAON_HOME": str(home), "KAON_DOWNLOAD": "false",
           "KAON_PLANS_FILE": str(relaxed_plans(home / "plans.toml"))}
    env.pop("KAON_DATABASE_URL", None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KAON_HOME", str(home))
        mp.delenv("KAON_DATABASE_URL", raising=False)
        from kaon.config import reset_settings

        reset_settings()
        register_tiny("digits")
        reset_settings()
    port = free_port()
    log_path = home / "up.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "kaon.cli.main", "up", "--port", str(port),
                             "--workers", "0"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "kaon up never answered"
            time.sleep(0.2)
        key = re.search(r"kaon_[0-9a-f]{12}_\S+", log_path.read_text())
        assert key, log_path.read_text()
        yield Platform(url=url, key=key[0], home=home)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def last_month(today: date | None = None) -> str:
    today = today or datetime.now(timezone.utc).date()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def backdate_plan_changes(platform: Platform) -> str:
    """Move every plan change of the default workspace to the start of the month before
    last, so last month (returned, ``YYYY-MM``) is over and billable at the current plan."""
    year, month = map(int, last_month().split("-"))
    year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    engine = create_engine(f"sqlite:///{platform.home / 'kaon.db'}")
    with engine.begin() as conn:
        conn.execute(text("update subscription_changes set at = :at "
                          "where workspace_id = 'default'"),
                     {"at": f"{year:04d}-{month:02d}-01 00:00:00.000000"})
    engine.dispose()
    return last_month()
