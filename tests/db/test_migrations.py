"""Alembic owns the schema: migrations reach the ORM's shape, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from kaon.db.engine import VERSION_TABLE, alembic_config
from kaon.db.models import Base

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        with create_engine(PG_URL).connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    if not _pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    schema = f"kaon_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"create schema {schema}"))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"drop schema {schema} cascade"))
    admin.dispose()


def test_upgrade_to_head_matches_the_orm_models(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")
    engine = create_engine(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = [d for d in compare_metadata(context, Base.metadata)
                if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]
    engine.dispose()
    assert diff == []


def test_downgrade_to_base_removes_every_table(database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names()) - {VERSION_TABLE}
    engine.dispose()
    assert tables == set()
