"""Limits on what a workspace holds hold under concurrency: creations racing for a plan's last
deployment slot, a downgrade racing a creation, submissions racing for the job queue's last
place are serialised by the workspace's lock, on SQLite and on PostgreSQL (real servers, real
transactions)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

from kaon.db.models import new_id
from kaon.platform import billing, deployments, jobs
from kaon.platform.models import Job, Workspace
from kaon.platform.plans import get_catalog
from tests.platform.helpers import TRAIN_SPEC, race, register_model, slow_clock

WS = "ws-cccccccccccc"


@pytest.fixture
def ws(db: Session) -> str:
    db.add(Workspace(id=WS, name="c"))
    register_model(db, WS)
    db.commit()
    return WS


def test_racing_creations_never_pass_max_deployments(
        sessions: Callable[[], Session], ws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    free = get_catalog().get("free")
    assert free.max_deployments == 1
    slow_clock(monkeypatch, deployments)
    calls = [lambda s, i=i: deployments.create_deployment(s, ws, f"web-{i}", "mnist-mlp",
                                                          plan=free) for i in range(6)]
    allowed, refused, errors = race(sessions, calls)
    assert errors == []
    assert (len(allowed), len(refused)) == (1, 5)
    with sessions() as s:
        assert len(deployments.list_deployments(s, ws)) == 1


def test_a_downgrade_racing_a_creation_leaves_the_workspace_within_its_plan(
        sessions: Callable[[], Session], ws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with sessions() as s:
        billing.subscribe(s, ws, "pro")
        deployments.create_deployment(s, ws, "web-0", "mnist-mlp", plan=get_catalog().get("pro"))
        s.commit()
    slow_clock(monkeypatch, deployments)

    def create(s: Session) -> object:  # what the API route does: lock, then read the plan
        from kaon.platform.common import lock_workspace

        lock_workspace(s, ws)
        return deployments.create_deployment(s, ws, "web-1", "mnist-mlp",
                                             plan=billing.limits_plan(s, ws))

    allowed, refused, errors = race(sessions, [create, lambda s: billing.subscribe(s, ws, "free")])
    assert errors == []
    assert len(allowed) == 1 and len(refused) == 1
    with sessions() as s:
        count = len(deployments.list_deployments(s, ws))
        plan = billing.limits_plan(s, ws)
        assert count <= plan.max_deployments, (count, plan.name)


def test_racing_submissions_never_pass_the_job_queues_bound(
        sessions: Callable[[], Session], ws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with sessions() as s:
        s.add_all([Job(id=new_id("job"), workspace_id=ws, kind="train", spec=TRAIN_SPEC,
                       state="queued", attempts=0, max_attempts=1, cancel_requested=False,
                       compute_seconds=0.0) for _ in range(jobs.MAX_QUEUED - 1)])
        s.commit()
    slow_clock(monkeypatch, jobs)
    calls = [lambda s: jobs.submit_job(s, ws, "train", TRAIN_SPEC) for _ in range(4)]
    allowed, refused, errors = race(sessions, calls)
    assert errors == []
    assert (len(allowed), len(refused)) == (1, 3)
    with sessions() as s:
        assert len(jobs.list_jobs(s, ws, state="queued")) == jobs.MAX_QUEUED


def test_a_workspace_is_locked_once_per_transaction(
        sessions: Callable[[], Session], ws: str) -> None:
    """A route locks before reading the plan and its service locks again: one UPDATE, until
    the transaction ends; the next transaction locks anew."""
    from sqlalchemy import event

    from kaon.platform.common import lock_workspace

    updates: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("UPDATE workspaces"):
            updates.append(statement)

    with sessions() as s:
        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", seen)
        try:
            lock_workspace(s, ws)
            lock_workspace(s, ws)
            assert len(updates) == 1
            s.commit()
            lock_workspace(s, ws)
            assert len(updates) == 2
            s.rollback()
        finally:
            event.remove(engine, "before_cursor_execute", seen)


def test_through_the_api_a_downgrade_racing_a_creation_leaves_the_workspace_within_its_plan(
        client: Any, admin_secret: str, api_db: Session,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race through the routes (the test above calls the services): the creation
    route must lock before it reads the plan, or it creates on the plan being replaced."""
    from kaon.db.models import DEFAULT_WORKSPACE
    from tests.platform.conftest import bearer

    register_model(api_db, DEFAULT_WORKSPACE)
    api_db.commit()
    h = bearer(admin_secret)
    assert client.post("/api/v1/subscription", headers=h, json={"plan": "pro"}).status_code == 200
    assert client.post("/api/v1/deployments", headers=h,
                       json={"name": "web-0", "model": "mnist-mlp"}).status_code == 201
    slow_clock(monkeypatch, deployments)
    # both routes stamp through billing's clock under the lock: without the creation
    # route's own lock, it reads "pro" first and the downgrade commits while it sleeps
    slow_clock(monkeypatch, billing)
    statuses: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def post(what: str, path: str, body: dict[str, str]) -> None:
        barrier.wait()
        statuses[what] = client.post(path, headers=h, json=body).status_code

    threads = [threading.Thread(target=post, args=(
                   "create", "/api/v1/deployments", {"name": "web-1", "model": "mnist-mlp"})),
               threading.Thread(target=post, args=(
                   "downgrade", "/api/v1/subscription", {"plan": "free"}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses.values()) in ([200, 409], [201, 409]), statuses
    plan = client.get("/api/v1/subscription", headers=h).json()["plan"]
    held = client.get("/api/v1/deployments", headers=h).json()
    assert len(held) <= get_catalog().get(plan).max_deployments, (plan, statuses)
