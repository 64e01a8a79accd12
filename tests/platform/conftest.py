"""Fixtures: a migrated database per test (SQLite, and PostgreSQL when one is running),
sessions on it, a seeded workspace, and the control API on SQLite with an admin key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from kaon.config import reset_settings
from kaon.db.engine import get_engine, upgrade
from kaon.platform.workspaces import bootstrap
from tests.conftest import PG_URL, pg_available  # noqa: F401  (re-exported for tests)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, kaon_home: Path) -> Iterator[Engine]:
    """A database at the Alembic head: Kaon's own SQLite engine, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield get_engine()  # KAON_HOME is this test's: a new file, the production settings
        return
    url = request.getfixturevalue("pg_schema_url")
    engine = create_engine(url, pool_pre_ping=True, pool_size=16, max_overflow=48)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> Callable[[], Session]:
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def db(sessions: Callable[[], Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture
def sqlite_db(kaon_home: Path) -> Iterator[Session]:
    """A session on this test's SQLite database (for what needs no PostgreSQL run)."""
    with sessionmaker(get_engine(), expire_on_commit=False)() as session:
        yield session


@pytest.fixture(params=["sqlite", "postgresql"])
def api_db(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
           kaon_home: Path) -> Iterator[Session]:
    """The database the API's own sessions use (KAON_DATABASE_URL): SQLite or PostgreSQL."""
    if request.param == "postgresql":
        monkeypatch.setenv("KAON_DATABASE_URL", request.getfixturevalue("pg_schema_url"))
        reset_settings()
    engine = get_engine()
    with sessionmaker(engine, expire_on_commit=False)() as session:
        yield session
    if request.param == "postgresql":
        engine.dispose()  # before its schema is dropped


@pytest.fixture
def admin_secret(api_db: Session) -> str:
    secret = bootstrap(api_db)
    api_db.commit()
    assert secret is not None
    return secret


@pytest.fixture
def client(admin_secret: str) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from kaon.platform.api import create_control_app

    with TestClient(create_control_app(rate_limit=False)) as c:
        yield c


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
