"""The deployment runtime's hooks into a route's transaction: act once it commits, not before."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.orm import Session

from kaon.platform.deployrt import DeploymentRuntime, Desired


def _runtime_serving(deployment_id: str) -> tuple[DeploymentRuntime, object]:
    runtime, pool = DeploymentRuntime(), object()
    desired = Desired(deployment_id, "ws-1", "digits", "digits", 1, 1, 32, 5.0)
    runtime.pools[("ws-1", "digits")] = (desired, pool)  # type: ignore[assignment]
    return runtime, pool


def test_a_deleted_deployment_is_not_served_once_its_transaction_commits(
        sqlite_db: Session) -> None:
    async def main() -> None:
        runtime, pool = _runtime_serving("dep-1")
        runtime._loop_ref = asyncio.get_running_loop()  # as start() sets it
        runtime.after_commit(sqlite_db, deleted="dep-1")
        assert runtime.pool("ws-1", "digits") is pool  # not before the commit

        def commit_in_a_worker_thread() -> None:  # as FastAPI runs a sync route's teardown
            sqlite_db.execute(text("SELECT 1"))
            sqlite_db.commit()

        await asyncio.to_thread(commit_in_a_worker_thread)
        # applied on the loop ahead of the thread's completion: before a response could go
        assert runtime.pool("ws-1", "digits") is None
        assert runtime._wake.is_set()  # and the reconciler runs now, not at its next tick

    asyncio.run(main())


def test_a_rolled_back_delete_changes_nothing(sqlite_db: Session) -> None:
    runtime, pool = _runtime_serving("dep-1")
    runtime.after_commit(sqlite_db, deleted="dep-1")
    sqlite_db.execute(text("SELECT 1"))
    sqlite_db.rollback()
    sqlite_db.execute(text("SELECT 1"))
    sqlite_db.commit()  # a later commit of the same session does not run the dropped hook
    assert runtime.pool("ws-1", "digits") is pool and not runtime._gone
