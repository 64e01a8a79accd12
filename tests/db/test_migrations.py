"""Alembic owns the schema: migrations reach the ORM's shape, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from kaon.db.engine import VERSION_TABLE, alembic_config
from kaon.db.models import Base
from kaon.platform import models  # noqa: F401  (the platform's tables join Base.metadata)


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
