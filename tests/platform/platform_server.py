"""A real ``kaon up`` subprocess for tests that drive the platform over HTTP (SDK, CLI).

SQLite in its own KAON_HOME with a tiny registered model ``digits``; the shipped plans with
the rate limits raised (tests send many requests at once); no job workers. The admin key is
read from its log, as a user would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.registry.fixtures import register_tiny

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Platform:
    url: str
    key: str  # the owner's admin key, as printed on first start
    home: Path
    process: Any = None  # the PlatformProcess (kill(), pid)


def relaxed_plans(path: Path) -> Path:
    """The shipped plans file with every plan's rate limit raised to 1000/s."""
    shipped = (REPO / "kaon/platform/plans.toml").read_text()
    shipped = re.sub(r"rate_limit_rps = [\d.]+\nburst = [\d_]+",
                     "rate_limit_rps = 1000.0\nburst = 1000", shipped)
    path.write_text(shipped)
    return path


@contextmanager
def running_platform(home: Path, plans: Path | None = None) -> Iterator[Platform]:
    """``kaon up --workers 0`` on a free port with ``home`` as KAON_HOME, until the block ends
    (``plans``: a plans file; default: the shipped one with the rate limits raised)."""
    from kaon.platform.launch import PlatformProcess

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KAON_HOME", str(home))
        mp.delenv("KAON_DATABASE_URL", raising=False)
        from kaon.config import reset_settings

        reset_settings()
        register_tiny("digits")
        reset_settings()
    env = {"KAON_DOWNLOAD": "false",
           "KAON_PLANS_FILE": str(plans or relaxed_plans(home / "plans.toml"))}
    process = PlatformProcess(home, env=env)
    process.env.pop("KAON_DATABASE_URL", None)
    with process:
        assert process.key, process.log()
        yield Platform(url=process.url, key=process.key, home=home, process=process)


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
