"""Deployments made real: one replica pool per deployment row, kept in line with the table.

The control API only writes rows (create, scale, delete); this reconciler, running inside
``kaon up``, makes the processes follow: at once when a route of the same process commits a
change (:meth:`DeploymentRuntime.after_commit`), and every second for any other writer. It
starts a
:class:`~kaon.serve.pool.ReplicaPool` for a new row, scales one whose replica count changed,
replaces one whose model or batching changed, stops one whose row is gone, and writes the
state back (``starting`` → ``ready``, or ``failed``). Because the table is the source of
truth, a restarted platform brings every deployment back.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from kaon.db.engine import session_scope
from kaon.platform.models import Deployment
from kaon.serve.pool import ReplicaPool

MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class Desired:
    id: str
    workspace_id: str
    name: str
    model: str
    version: int
    replicas: int
    max_batch_size: int
    max_wait_ms: float

    def config(self) -> dict[str, object]:
        return {"kind": "model", "target": f"{self.model}:{self.version}",
                "workspace": self.workspace_id, "max_body": MAX_BODY, "threads": 1,
                "device": "auto",
                "policy": {"max_batch_size": self.max_batch_size,
                           "max_wait_ms": self.max_wait_ms, "max_queue": 1024,
                           "timeout_s": 30.0}}


class DeploymentRuntime:
    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.pools: dict[tuple[str, str], tuple[Desired, ReplicaPool]] = {}
        self._task: asyncio.Task[None] | None = None
        self._states: dict[str, str] = {}
        # deleted deployments whose pools still stop: the gateway answers 404 for them at
        # once, not the old replicas for up to a tick and then 503 while they drain
        self._gone: set[str] = set()
        self._wake = asyncio.Event()
        self._loop_ref: asyncio.AbstractEventLoop | None = None

    def pool(self, workspace_id: str, name: str) -> ReplicaPool | None:
        entry = self.pools.get((workspace_id, name))
        return entry[1] if entry and entry[0].id not in self._gone else None

    def after_commit(self, db: Session, deleted: str | None = None) -> None:
        """Once ``db`` commits (a route's create, scale or delete), reconcile now instead of
        at the next tick; ``deleted`` (a deployment id) is no longer served from then on.
        Nothing happens if it rolls back. Safe to call from the route's worker thread: the
        change is applied on the event loop, queued ahead of the route's response."""
        db.info.setdefault(_ON_COMMIT, []).append(lambda: self._committed(deleted))

    def _committed(self, deleted: str | None) -> None:
        loop = self._loop_ref
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._changed, deleted)
        else:  # not started: no loop to hand it to, and nothing waits on the wake
            self._changed(deleted)

    def _changed(self, deleted: str | None) -> None:
        if deleted is not None:
            self._gone.add(deleted)
        self._wake.set()

    async def start(self) -> None:
        self._loop_ref = asyncio.get_running_loop()
        await self.reconcile()
        self._task = asyncio.create_task(self._loop(), name="kaon-deployments")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(pool.stop() for _, pool in self.pools.values()))
        self.pools.clear()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):  # (not the builtin before 3.11)
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            with contextlib.suppress(Exception):  # a database hiccup: try again next tick
                await self.reconcile()

    async def reconcile(self) -> None:
        rows = await asyncio.to_thread(_desired)
        wanted = {(d.workspace_id, d.name): d for d in rows}
        for key in [k for k in self.pools if k not in wanted]:
            _, pool = self.pools.pop(key)
            await pool.stop()
        for key, desired in wanted.items():
            current = self.pools.get(key)
            if current is None or _needs_new_pool(current[0], desired):
                if current is not None:
                    await current[1].stop()
                pool = ReplicaPool(desired.config(), desired.replicas)
                await pool.start()
                self.pools[key] = (desired, pool)
            elif current[0].replicas != desired.replicas:
                await current[1].scale(desired.replicas)
                self.pools[key] = (desired, current[1])
        # a deleted id is kept while a pool of it lives (the rows read may predate the delete)
        self._gone &= {d.id for d, _ in self.pools.values()}
        await asyncio.to_thread(self._write_states)

    def _write_states(self) -> None:
        states = {}
        for desired, pool in self.pools.values():
            failing = any(r.failures >= 3 for r in pool.replicas)
            states[desired.id] = ("ready" if pool.ready else "failed" if failing
                                  else "starting")
        changed = {k: v for k, v in states.items() if self._states.get(k) != v}
        if changed:
            with session_scope() as s:
                for deployment_id, state in changed.items():
                    s.execute(update(Deployment).where(Deployment.id == deployment_id)
                              .values(state=state).execution_options(synchronize_session=False))
        self._states = states


_ON_COMMIT = "kaon.deployrt.on_commit"


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    for callback in session.info.pop(_ON_COMMIT, ()):
        callback()


@event.listens_for(Session, "after_rollback")
def _drop_on_rollback(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)


def _needs_new_pool(old: Desired, new: Desired) -> bool:
    return (old.id, old.model, old.version, old.max_batch_size, old.max_wait_ms) != (
        new.id, new.model, new.version, new.max_batch_size, new.max_wait_ms)


def _desired() -> list[Desired]:
    with session_scope() as s:
        return [Desired(d.id, d.workspace_id, d.name, d.model, d.version, d.replicas,
                        d.max_batch_size, d.max_wait_ms)
                for d in s.scalars(select(Deployment)).all()]
