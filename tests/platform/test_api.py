"""The control API end to end on a real SQLite database: auth, scopes, tenancy, errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from kaon.platform.api import create_control_app
from kaon.platform.common import period_of
from kaon.platform.models import SubscriptionChange
from kaon.platform.ratelimit import RateLimiter
from tests.platform.conftest import bearer
from tests.platform.helpers import TRAIN_SPEC, register_model

API = "/api/v1"


def _last_month() -> str:
    first = datetime.now(timezone.utc).replace(day=1)
    return period_of(first - timedelta(days=1))


def _subscribed_since_last_month(db: Session, workspace_id: str) -> str:
    """Backdate the workspace's history so last month can be invoiced."""
    start = datetime.now(timezone.utc).replace(day=1) - timedelta(days=40)
    db.add(SubscriptionChange(workspace_id=workspace_id, at=start, from_plan=None,
                              to_plan="pro"))
    db.commit()
    return _last_month()


def _floats(value: Any) -> list[Any]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


def test_me_and_the_basic_reads(client: TestClient, admin_secret: str) -> None:
    h = bearer(admin_secret)
    me = client.get(f"{API}/me", headers=h).json()
    assert me["role"] == "owner" and me["workspace"]["id"] == "default"
    assert set(me["scopes"]) == {"admin", "deploy", "inference", "read", "train"}
    for path in ["workspace", "workspaces", "members", "keys", "plans", "subscription",
                 "usage", "invoices", "audit", "jobs", "deployments"]:
        assert client.get(f"{API}/{path}", headers=h).status_code == 200, path
    keys = client.get(f"{API}/keys", headers=h).json()
    assert keys and all("secret" not in k and "hash" not in k for k in keys)
    plans = client.get(f"{API}/plans", headers=h).json()
    pro = next(p for p in plans["plans"] if p["name"] == "pro")
    assert pro["inference_cents_per_request"] == "0.01" and isinstance(pro["price_cents"], int)
    usage = client.get(f"{API}/usage", headers=h).json()
    assert usage["plan"] == "free" and usage["metrics"]["inference_requests"]["included"]


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nope", "Basic dXNlcjpwYXNz",
                                    "Bearer kaon_0123456789ab_" + "A" * 43])
def test_missing_or_wrong_keys_are_401_with_www_authenticate(client: TestClient,
                                                             header: str | None) -> None:
    r = client.get(f"{API}/me", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "AuthError"


def test_an_app_key_cannot_see_or_revoke_the_admin_key(client: TestClient,
                                                        admin_secret: str) -> None:
    h = bearer(admin_secret)
    app = client.post(f"{API}/keys", headers=h, json={"name": "app", "scopes": ["inference"]})
    app_h = bearer(app.json()["secret"])
    admin_id = next(k["id"] for k in client.get(f"{API}/keys", headers=h).json()
                    if "admin" in k["scopes"])
    assert client.get(f"{API}/keys", headers=app_h).status_code == 403  # needs read
    refused = client.delete(f"{API}/keys/{admin_id}", headers=app_h)
    assert refused.status_code == 403 and "revoke itself" in refused.json()["message"]
    assert client.get(f"{API}/me", headers=h).status_code == 200  # the admin key still works
    twin = client.post(f"{API}/keys", headers=app_h, json={"name": "twin",
                                                           "scopes": ["inference"]}).json()
    assert client.delete(f"{API}/keys/{twin['id']}", headers=app_h).status_code == 200
    assert client.delete(f"{API}/keys/{app.json()['id']}", headers=app_h).status_code == 200
    assert client.get(f"{API}/me", headers=app_h).status_code == 401  # revoked itself


def test_revoked_keys_are_401(client: TestClient, admin_secret: str) -> None:
    made = client.post(f"{API}/keys", headers=bearer(admin_secret),
                       json={"name": "temp", "scopes": ["read"]})
    assert made.status_code == 201
    secret = made.json()["secret"]
    assert client.get(f"{API}/me", headers=bearer(secret)).status_code == 200
    assert client.delete(f"{API}/keys/{made.json()['id']}",
                         headers=bearer(admin_secret)).json()["revoked_at"]
    r = client.get(f"{API}/me", headers=bearer(secret))
    assert r.status_code == 401 and "revoked" in r.json()["message"]


def test_missing_scopes_are_403(client: TestClient, admin_secret: str) -> None:
    h = bearer(admin_secret)
    reader = client.post(f"{API}/keys", headers=h,
                         json={"name": "reader", "scopes": ["read"]}).json()["secret"]
    assert client.post(f"{API}/jobs", headers=bearer(reader),
                       json={"kind": "train", "spec": TRAIN_SPEC}).status_code == 403
    assert client.post(f"{API}/subscription", headers=bearer(reader),
                       json={"plan": "pro"}).status_code == 403
    # a key cannot mint a key with more than it has
    r = client.post(f"{API}/keys", headers=bearer(reader),
                    json={"name": "more", "scopes": ["admin"]})
    assert r.status_code == 403
    viewer = client.post(f"{API}/members", headers=h,
                         json={"email": "v@example.com", "role": "viewer"})
    assert viewer.status_code == 201
    vkey = viewer.json()["key"]["secret"]
    assert client.get(f"{API}/jobs", headers=bearer(vkey)).status_code == 200
    assert client.delete(f"{API}/deployments/x", headers=bearer(vkey)).status_code == 403
    assert client.get(f"{API}/audit", headers=bearer(vkey)).status_code == 403


def test_a_big_body_is_413(client: TestClient, admin_secret: str) -> None:
    r = client.post(f"{API}/jobs", headers=bearer(admin_secret),
                    content=b'{"kind": "train", "spec": {"x": "' + b"a" * 2_000_000 + b'"}}')
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"


def test_the_control_plane_has_a_budget_of_bodies_of_its_own(
        client: TestClient, admin_secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In `kaon up` the gateway and the control plane share a process: inference bodies
    waiting on slow replicas, filling the process's budget, must not turn away the call that
    would scale those replicas up."""
    from kaon.serve import asgi

    full = asgi.BodyBudget(1024)
    full.take(1024)
    monkeypatch.setattr(asgi, "BODIES", full)
    r = client.post(f"{API}/jobs", headers=bearer(admin_secret),
                    json={"kind": "train", "spec": {"name": "x"}})
    assert r.status_code != 503, r.text


def test_a_big_body_without_a_valid_key_is_401_before_it_is_read(client: TestClient) -> None:
    """The key is checked first: a body past the 1 MiB limit sent without a
    valid key is a 401, not the 413 that reading it would end in."""
    big = b'{"kind": "train", "spec": {"x": "' + b"a" * 2_000_000 + b'"}}'
    for headers in ({}, bearer("kaon_0123456789ab_" + "x" * 43)):
        r = client.post(f"{API}/jobs", headers=headers, content=big)
        assert r.status_code == 401 and r.json()["error"] == "AuthError", r.text
        assert r.headers["www-authenticate"] == "Bearer"


def test_validation_errors_name_the_field(client: TestClient, admin_secret: str) -> None:
    h = bearer(admin_secret)
    r = client.post(f"{API}/members", headers=h, json={"email": "x@example.com",
                                                        "role": "emperor"})
    assert r.status_code == 422 and "body.role" in r.json()["message"]
    r = client.post(f"{API}/workspaces", headers=h, json={"name": "../etc"})
    assert r.status_code == 422 and "body.name" in r.json()["message"]
    assert "lower-case letters" in r.json()["hint"]
    r = client.post(f"{API}/deployments", headers=h,
                    json={"name": "web", "model": "m", "replicas": 10**30})
    assert r.status_code == 422 and "body.replicas" in r.json()["message"]
    r = client.post(f"{API}/keys", headers=h, json={"name": "k", "scopes": ["read"], "x": 1})
    assert r.status_code == 422 and "body.x" in r.json()["message"]
    r = client.post(f"{API}/members", headers=h, json={"email": "no-at-sign"})
    assert r.status_code == 422 and "e-mail" in r.json()["message"]
    r = client.post(f"{API}/jobs", headers=h, json={"kind": "train", "spec": {"name": "x"}})
    assert r.status_code == 422 and "data" in r.json()["message"]
    deep = b"[" * 50_000 + b"]" * 50_000
    r = client.post(f"{API}/jobs", headers={**h, "content-type": "application/json"},
                    content=deep)
    assert r.status_code == 400 and r.json()["error"] == "HTTPError"


@pytest.mark.parametrize("path", [
    "keys/%00", "keys/..%2F..%2Fetc%2Fpasswd", "keys/" + "9" * 5000, "jobs/%E2%98%83",
    "jobs/job-000000000000", "invoices/inv-000000000000", "invoices/x.html",
    "deployments/%27%3B%20drop%20table%20deployments%3B--", "deployments/" + "a" * 300])
def test_odd_ids_are_404(client: TestClient, admin_secret: str, path: str) -> None:
    r = client.get(f"{API}/{path}", headers=bearer(admin_secret))
    assert r.status_code == 404, r.text
    r = client.delete(f"{API}/{path}", headers=bearer(admin_secret))
    assert r.status_code in (404, 405), r.text  # jobs and invoices are never deleted


@pytest.mark.parametrize(("method", "path"), [
    ("get", "jobs?limit=99999999999999999999999"), ("get", "jobs?limit=abc"),
    ("get", "jobs?state=%00"), ("get", "audit?before_id=-1"), ("get", "usage?period=2026-13"),
    ("get", "usage?period=%00"), ("post", "invoices/99999999999999999999"),
    ("post", "invoices/2026-00")])
def test_odd_query_values_are_422(client: TestClient, admin_secret: str, method: str,
                                  path: str) -> None:
    r = getattr(client, method)(f"{API}/{path}", headers=bearer(admin_secret))
    assert r.status_code == 422, r.text


def test_adding_a_known_address_does_not_reach_its_other_workspace(
        client: TestClient, admin_secret: str) -> None:
    victim = bearer(admin_secret)
    alice = client.post(f"{API}/members", headers=victim,
                        json={"email": "alice@victim.example", "name": "Alice Secret"})
    assert alice.status_code == 201
    made = client.post(f"{API}/workspaces", headers=victim, json={"name": "mallory"}).json()
    mallory = bearer(made["key"]["secret"])
    added = client.post(f"{API}/members", headers=mallory,
                        json={"email": "Alice@victim.example", "role": "owner"})
    assert added.status_code == 201, added.text
    assert added.json()["member"]["name"] != "Alice Secret"
    assert added.json()["member"]["user_id"] != alice.json()["member"]["user_id"]
    as_alice = bearer(added.json()["key"]["secret"])
    listed = client.get(f"{API}/workspaces", headers=as_alice).json()
    assert [w["name"] for w in listed] == ["mallory"]  # not the default workspace
    again = client.post(f"{API}/members", headers=mallory,
                        json={"email": "alice@victim.example"})
    assert again.status_code == 409  # but one address once per workspace


def test_workspace_b_cannot_touch_workspace_a(client: TestClient, admin_secret: str,
                                             api_db: Session) -> None:
    a = bearer(admin_secret)
    register_model(api_db, "default")
    period = _subscribed_since_last_month(api_db, "default")
    a_key = client.post(f"{API}/keys", headers=a, json={"name": "ci", "scopes": ["read"]}).json()
    a_job = client.post(f"{API}/jobs", headers=a, json={"kind": "train", "spec": TRAIN_SPEC})
    assert a_job.status_code == 201, a_job.text
    a_dep = client.post(f"{API}/deployments", headers=a, json={"name": "web",
                                                               "model": "mnist-mlp"})
    assert a_dep.status_code == 201, a_dep.text
    a_inv = client.post(f"{API}/invoices/{period}", headers=a)
    assert a_inv.status_code == 200, a_inv.text
    created = client.post(f"{API}/workspaces", headers=a, json={"name": "team-b"})
    assert created.status_code == 201
    b = bearer(created.json()["key"]["secret"])
    assert client.get(f"{API}/me", headers=b).json()["workspace"]["name"] == "team-b"

    job_id, inv_id = a_job.json()["id"], a_inv.json()["id"]
    for method, path in [
            ("get", f"keys/{a_key['id']}"), ("delete", f"keys/{a_key['id']}"),
            ("get", f"jobs/{job_id}"), ("post", f"jobs/{job_id}/cancel"),
            ("get", "deployments/web"), ("patch", "deployments/web"),
            ("delete", "deployments/web"), ("get", f"invoices/{inv_id}"),
            ("get", f"invoices/{inv_id}.html")]:
        kwargs: dict[str, Any] = {"json": {"replicas": 1}} if method == "patch" else {}
        r = client.request(method.upper(), f"{API}/{path}", headers=b, **kwargs)
        assert r.status_code == 404, (method, path, r.status_code)
        assert r.json()["error"] == "NotFoundError"
    for path in ["jobs", "deployments", "invoices", "keys", "members", "audit"]:
        listing = client.get(f"{API}/{path}", headers=b).text
        assert job_id not in listing and inv_id not in listing and a_key["id"] not in listing
    # and A's things are intact
    assert client.get(f"{API}/jobs/{job_id}", headers=a).json()["state"] == "queued"
    assert client.get(f"{API}/deployments/web", headers=a).json()["replicas"] == 1
    assert client.get(f"{API}/keys", headers=a).json()[0]["revoked_at"] is None
    # the creator owns both workspaces; each key still sees only its own
    assert [w["name"] for w in client.get(f"{API}/workspaces", headers=a).json()] == [
        "default", "team-b"]


def test_invoices_over_http_are_idempotent_json_and_html(client: TestClient, admin_secret: str,
                                                         api_db: Session) -> None:
    h = bearer(admin_secret)
    period = _subscribed_since_last_month(api_db, "default")
    first, second = (client.post(f"{API}/invoices/{period}", headers=h) for _ in range(2))
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    body = first.json()
    assert body["lines"][0]["amount_cents"] == 4900 and _floats(body) == []
    assert [i["id"] for i in client.get(f"{API}/invoices", headers=h).json()] == [body["id"]]
    assert client.get(f"{API}/invoices/{body['id']}", headers=h).json() == body
    page = client.get(f"{API}/invoices/{body['id']}.html", headers=h)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "$49.00" in page.text
    this_month = period_of(datetime.now(timezone.utc))
    assert client.post(f"{API}/invoices/{this_month}", headers=h).status_code == 409


def test_admin_actions_are_audited(client: TestClient, admin_secret: str,
                                   api_db: Session) -> None:
    h = bearer(admin_secret)
    register_model(api_db, "default")
    api_db.commit()
    key = client.post(f"{API}/keys", headers=h, json={"name": "k", "scopes": ["read"]}).json()
    client.delete(f"{API}/keys/{key['id']}", headers=h)
    member = client.post(f"{API}/members", headers=h, json={"email": "m@example.com"}).json()
    uid = member["member"]["user_id"]
    assert client.patch(f"{API}/members/{uid}", headers=h,
                        json={"role": "admin"}).json()["role"] == "admin"
    assert client.delete(f"{API}/members/{uid}", headers=h).status_code == 204
    assert client.get(f"{API}/me", headers=bearer(member["key"]["secret"])).status_code == 401
    assert client.post(f"{API}/subscription", headers=h, json={"plan": "pro"}).json()[
        "plan"] == "pro"
    assert client.post(f"{API}/deployments", headers=h,
                       json={"name": "web", "model": "mnist-mlp"}).status_code == 201
    assert client.patch(f"{API}/deployments/web", headers=h,
                        json={"replicas": 3}).json()["replicas"] == 3
    assert client.patch(f"{API}/deployments/web", headers=h,
                        json={"replicas": 9}).status_code == 409  # pro allows 4
    refused = client.post(f"{API}/subscription/cancel", headers=h)  # 3 replicas: not on free
    assert refused.status_code == 409 and "free plan allows" in refused.json()["message"]
    assert client.delete(f"{API}/deployments/web", headers=h).status_code == 204
    assert client.post(f"{API}/subscription/cancel", headers=h).json()["cancel_at_period_end"]
    job = client.post(f"{API}/jobs", headers=h, json={"kind": "train", "spec": TRAIN_SPEC})
    assert client.post(f"{API}/jobs/{job.json()['id']}/cancel",
                       headers=h).json()["state"] == "cancelled"
    actions = [a["action"] for a in client.get(f"{API}/audit", headers=h).json()]
    for action in ["key.create", "key.revoke", "member.add", "member.role", "member.remove",
                   "subscription.change", "subscription.cancel", "deployment.create",
                   "deployment.scale", "deployment.delete", "job.cancel"]:
        assert action in actions, action
    page = client.get(f"{API}/audit?limit=2", headers=h).json()
    older = client.get(f"{API}/audit?limit=2&before_id={page[-1]['id']}", headers=h).json()
    assert len(page) == 2 and older[0]["id"] < page[-1]["id"]


def test_the_rate_limit_answers_429_with_retry_after(admin_secret: str) -> None:
    now = [0.0]
    app = create_control_app(limiter=RateLimiter(clock=lambda: now[0]))
    with TestClient(app) as client:
        h = bearer(admin_secret)
        codes = [client.get(f"{API}/me", headers=h).status_code for _ in range(11)]
        assert codes == [200] * 10 + [429]  # the free plan's burst is 10
        r = client.get(f"{API}/me", headers=h)
        assert r.headers["retry-after"] == "1" and r.json()["error"] == "RateLimited"
        now[0] += 1.0
        assert client.get(f"{API}/me", headers=h).status_code == 200
        now[0] += 10.0  # a full bucket again
        made = client.post(f"{API}/keys", headers=h, json={"name": "second",
                                                           "scopes": ["read"]})
        assert made.status_code == 201, made.text
        codes = [client.get(f"{API}/me", headers=h).status_code for _ in range(9)]
        other = client.get(f"{API}/me", headers=bearer(made.json()["secret"]))
        assert codes == [200] * 9 and other.status_code == 429  # one bucket per workspace


def test_every_operation_is_documented_with_a_summary(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ops = [(path, method, op) for path, item in spec["paths"].items()
           for method, op in item.items()]
    assert len(ops) >= 27
    for path, method, op in ops:
        assert op.get("summary"), (method, path)
        assert path.startswith("/api/v1/")
    assert "apiKey" in json.dumps(spec["components"]["securitySchemes"])


def test_job_logs_are_read_from_an_offset_and_tune_requests_queue_jobs(client: Any,
                                                                       admin_secret: str) -> None:
    from kaon.platform.jobrun import job_dir

    auth = bearer(admin_secret)
    job = client.post("/api/v1/jobs", headers=auth, json={"kind": "train", "spec": {
        "name": "j", "data": {"dataset": "mnist"}, "model": {"family": "mlp"}}}).json()
    empty = client.get(f"/api/v1/jobs/{job['id']}/logs", headers=auth)
    assert empty.status_code == 200 and empty.text == ""
    assert empty.headers["x-log-offset"] == "0" and empty.headers["x-job-state"] == "queued"
    job_dir(job["id"]).mkdir(parents=True)
    (job_dir(job["id"]) / "log.txt").write_text("epoch 1: loss 0.5\nepoch 2: loss 0.4\n")
    first = client.get(f"/api/v1/jobs/{job['id']}/logs", headers=auth)
    assert first.text.startswith("epoch 1") and first.headers["x-log-offset"] == "36"
    rest = client.get(f"/api/v1/jobs/{job['id']}/logs?offset=18", headers=auth)
    assert rest.text == "epoch 2: loss 0.4\n"
    past = client.get(f"/api/v1/jobs/{job['id']}/logs?offset=1000", headers=auth)
    assert past.text == "" and past.headers["x-log-offset"] == "36"  # the end, not 1000
    from kaon.platform.api.work import MAX_LOG_CHUNK

    text = "a" * (MAX_LOG_CHUNK - 1) + "épochs done\n"  # é straddles the first chunk's end
    (job_dir(job["id"]) / "log.txt").write_text(text, encoding="utf-8")
    got, offset = "", 0
    while True:
        chunk = client.get(f"/api/v1/jobs/{job['id']}/logs?offset={offset}", headers=auth)
        if not chunk.text:
            break
        got, offset = got + chunk.text, int(chunk.headers["x-log-offset"])
    assert got == text  # put back together exactly, no replacement characters
    assert client.get("/api/v1/jobs/job-000000000000/logs", headers=auth).status_code == 404
    free = client.post("/api/v1/tune", headers=auth,
                       json={"dataset": "breastmnist", "time_seconds": 120})
    assert free.status_code == 409 and "automl" in free.text  # not on the free plan
    assert client.post("/api/v1/subscription", headers=auth,
                       json={"plan": "pro"}).status_code == 200
    tune = client.post("/api/v1/tune", headers=auth,
                       json={"dataset": "breastmnist", "time_seconds": 120})
    assert tune.status_code == 201 and tune.json()["kind"] == "tune", tune.text
    bad = client.post("/api/v1/tune", headers=auth, json={"dataset": "breastmnist"})
    assert bad.status_code == 422 and "time_seconds" in bad.text
    weighted = client.post("/api/v1/tune", headers=auth, json={
        "dataset": "breastmnist", "time_seconds": 120, "space": {"class_weight": ["balanced"]}})
    assert weighted.status_code == 201, weighted.text
    assert weighted.json()["spec"]["space"] == {"class_weight": ["balanced"]}  # the rest: defaults
    bad_space = client.post("/api/v1/tune", headers=auth, json={
        "dataset": "breastmnist", "time_seconds": 120, "space": {"class_weight": ["inverse"]}})
    assert bad_space.status_code == 422 and "class_weight" in bad_space.text


def test_models_are_listed_per_workspace(client: Any, admin_secret: str) -> None:
    from tests.registry.fixtures import register_tiny

    register_tiny("digits")  # into the default workspace, as a train job would
    auth = bearer(admin_secret)
    listed = client.get(f"{API}/models", headers=auth).json()
    assert [(m["name"], m["version"]) for m in listed] == [("digits", 1)]
    assert "artifact" not in listed[0] and listed[0]["signature"]["shape"] == [1, 28, 28]
    assert client.get(f"{API}/models/digits:1", headers=auth).json()["version"] == 1
    assert client.get(f"{API}/models/digits:9", headers=auth).status_code == 404
    assert client.get(f"{API}/models/..%2Fetc", headers=auth).status_code in (404, 422)
    other = client.post(f"{API}/workspaces", headers=auth, json={"name": "team-m"}).json()
    b = bearer(other["key"]["secret"])
    assert client.get(f"{API}/models", headers=b).json() == []
    assert client.get(f"{API}/models/digits", headers=b).status_code == 404


def test_a_deleted_model_version_gives_its_stored_bytes_back(client: Any, admin_secret: str,
                                                             api_db: Session) -> None:
    from kaon.platform import metering
    from kaon.registry import delete
    from tests.registry.fixtures import register_tiny

    register_tiny("digits")  # into the default workspace, metered as a train job's would be
    register_tiny("digits")
    held = metering.stored(api_db, "default")
    assert held > 0 and metering.stored_by(api_db, "default", "model", "digits:1") == held // 2
    delete("digits:1")
    api_db.expire_all()
    assert metering.stored(api_db, "default") == held // 2
    delete("digits")
    api_db.expire_all()
    assert metering.stored(api_db, "default") == 0
    usage = client.get(f"{API}/usage", headers=bearer(admin_secret)).json()
    assert usage["metrics"]["storage_bytes"]["used"] == 0
