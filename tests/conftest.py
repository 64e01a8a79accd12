"""Shared fixtures: every test gets its own KAON_HOME; real datasets come from KAON_DATA_PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kaon.config import reset_settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(
    os.environ.get("KAON_DATA_PATH", str(REPO.parent / "shared" / "datasets")).split(":")[0]
)


@pytest.fixture(autouse=True)
def kaon_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty KAON_HOME per test, with the shared datasets on KAON_DATA_PATH."""
    home = tmp_path / "kaon-home"
    monkeypatch.setenv("KAON_HOME", str(home))
    monkeypatch.setenv("KAON_DATA_PATH", str(SHARED_DATASETS))
    monkeypatch.setenv("KAON_DOWNLOAD", "false")
    monkeypatch.delenv("KAON_DATABASE_URL", raising=False)
    monkeypatch.setenv("KAON_CONFIG", str(tmp_path / "no-such-kaon.toml"))  # no developer's file
    reset_settings()
    yield home
    reset_settings()


@pytest.fixture
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "mnist").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS
