"""Migration 0004 adds the control plane's tables and takes only them away again.

(That head matches the ORM, platform tables included: tests/db/test_migrations.py.)"""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect

from kaon.db.engine import VERSION_TABLE, alembic_config
from kaon.db.models import Base
from kaon.platform import models  # noqa: F401  (registers the tables in Base.metadata)

PLATFORM_TABLES = {"users", "workspaces", "members", "api_keys", "subscriptions",
                   "subscription_changes", "usage_events", "usage_counters", "invoices",
                   "audit_log", "jobs", "deployments"}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    names = set(inspect(engine).get_table_names()) - {VERSION_TABLE}
    engine.dispose()
    return names


def test_downgrade_to_0003_removes_only_the_platform_tables_and_upgrade_again(
        database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "0003")
    assert _tables(database_url) == {"runs", "epoch_metrics", "models", "model_versions",
                                     "model_aliases"}
    command.upgrade(cfg, "head")
    assert _tables(database_url) >= PLATFORM_TABLES
    command.downgrade(cfg, "base")
    assert _tables(database_url) == set()


def test_every_workspace_owned_table_indexes_workspace_id() -> None:
    for table in Base.metadata.sorted_tables:
        if table.name not in PLATFORM_TABLES or "workspace_id" not in table.c:
            continue
        indexed = any(next(iter(i.columns)).name == "workspace_id" for i in table.indexes)
        pk_first = next(iter(table.primary_key.columns)).name == "workspace_id"
        assert indexed or pk_first, table.name


def test_0006_sets_each_workspace_s_stored_bytes_from_its_events(database_url: str) -> None:
    from sqlalchemy import text

    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0005")
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO workspaces (id, name, created_at) "
                          "VALUES ('ws-000000000001', 'w', CURRENT_TIMESTAMP)"))
        for key, n in (("a", 300), ("b", 200), ("c", 7)):
            conn.execute(text(
                "INSERT INTO usage_events (workspace_id, metric, quantity, occurred_at, "
                "event_key, source) VALUES ('ws-000000000001', :m, :n, CURRENT_TIMESTAMP, :k, "
                "'{}')"), {"m": "storage_bytes" if key != "c" else "training_seconds",
                           "n": n, "k": key})
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT period, metric, used FROM usage_counters")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("stored", "storage_bytes", 500)]
    command.downgrade(cfg, "base")
