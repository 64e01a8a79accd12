"""Migration 0004 builds the control plane's tables as the ORM declares them, and goes away."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from kaon.db.engine import VERSION_TABLE, alembic_config
from kaon.db.models import Base
from kaon.platform import models  # noqa: F401  (registers the tables in Base.metadata)

PLATFORM_TABLES = {"users", "workspaces", "members", "api_keys", "subscriptions",
                   "subscription_changes", "usage_events", "usage_counters", "invoices",
                   "audit_log", "jobs", "deployments"}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        yield request.getfixturevalue("pg_schema_url")


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    names = set(inspect(engine).get_table_names()) - {VERSION_TABLE}
    engine.dispose()
    return names


def test_head_matches_the_orm(url: str) -> None:
    command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = [d for d in compare_metadata(context, Base.metadata)
                if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]
    engine.dispose()
    assert diff == []
    assert _tables(url) >= PLATFORM_TABLES


def test_downgrade_to_0003_removes_only_the_platform_tables_and_upgrade_again(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "0003")
    assert _tables(url) == {"runs", "epoch_metrics", "models", "model_versions", "model_aliases"}
    command.upgrade(cfg, "head")
    assert _tables(url) >= PLATFORM_TABLES
    command.downgrade(cfg, "base")
    assert _tables(url) == set()


def test_every_workspace_owned_table_indexes_workspace_id() -> None:
    for table in Base.metadata.sorted_tables:
        if table.name not in PLATFORM_TABLES or "workspace_id" not in table.c:
            continue
        indexed = any(next(iter(i.columns)).name == "workspace_id" for i in table.indexes)
        pk_first = next(iter(table.primary_key.columns)).name == "workspace_id"
        assert indexed or pk_first, table.name
