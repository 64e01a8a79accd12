"""Shared fixtures: every test gets its own KAON_HOME; real datasets come from KAON_DATA_PATH."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

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


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_pg: bool | None = None


def pg_available() -> bool:
    global _pg
    if _pg is None:
        try:
            engine = create_engine(PG_URL)
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            engine.dispose()
            _pg = True
        except Exception:
            _pg = False
    return _pg


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL schema's URL (skips when no server runs)."""
    if not pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    schema = f"kaon_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"create schema {schema}"))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"drop schema {schema} cascade"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database's URL: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        yield request.getfixturevalue("pg_schema_url")
