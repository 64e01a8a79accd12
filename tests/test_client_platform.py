"""``kaon.Client``'s platform methods against one real ``kaon up`` process (no mocks).

Errors come back as the KaonError subclass the server raised; a few response-parsing cases
(429s, non-JSON bodies, a closed port) need no server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from kaon import Client
from kaon.client_platform import error_from_response, parse_model_ref
from kaon.errors import ConfigError, NotFoundError, SignatureError, UnavailableError
from kaon.net import free_port
from kaon.platform.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    PlanLimitError,
    QuotaExceeded,
    RateLimited,
)
from tests.platform.platform_server import Platform, backdate_plan_changes, running_platform

SPEC = {"name": "digits-job", "data": {"dataset": "mnist", "limit": 500},
        "model": {"family": "mlp", "hidden": [8]}, "epochs": 1}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("sdk-platform")) as p:
        yield p


@pytest.fixture
def client(platform: Platform) -> Iterator[Client]:
    with Client(platform.url, api_key=platform.key) as c:
        yield c


# ---- no server needed ------------------------------------------------------------------------
def _response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_an_error_body_is_rebuilt_into_the_class_it_names() -> None:
    exc = error_from_response(_response(409, {"error": "PlanLimitError", "message": "too many",
                                              "hint": "upgrade"}))
    assert isinstance(exc, PlanLimitError) and exc.message == "too many" and exc.hint == "upgrade"
    assert isinstance(error_from_response(_response(422, {"error": "ValidationError",
                                                          "message": "name: bad"})), ConfigError)
    assert isinstance(error_from_response(_response(422, {"error": "SignatureError",
                                                          "message": "shape"})), SignatureError)
    assert isinstance(error_from_response(_response(401, {"detail": "x"})), AuthError)
    assert isinstance(error_from_response(_response(403, {"error": "Nope", "message": "x"})),
                      ForbiddenError)
    plain = error_from_response(httpx.Response(502, text="Bad gateway"))
    assert isinstance(plain, UnavailableError) and "not a Kaon error" in plain.message
    assert plain.hint is not None and "Check the URL" in plain.hint


def test_429s_carry_retry_after_or_the_quota_fields() -> None:
    limited = error_from_response(_response(429, {"error": "RateLimited", "message": "slow",
                                                  "retry_after": 3}, {"Retry-After": "3"}))
    assert isinstance(limited, RateLimited) and limited.retry_after == 3
    header_only = error_from_response(_response(429, {"message": "slow"}, {"Retry-After": "7"}))
    assert isinstance(header_only, RateLimited) and header_only.retry_after == 7
    quota = error_from_response(_response(429, {
        "error": "QuotaExceeded", "message": "used up", "hint": "wait", "plan": "free",
        "metric": "inference_requests", "limit": 40, "used": 40,
        "reset_at": "2026-12-01T00:00:00+00:00"}))
    assert isinstance(quota, QuotaExceeded)
    assert (quota.plan, quota.limit, quota.used, quota.reset_at) == (
        "free", 40, 40, "2026-12-01T00:00:00+00:00")
    assert quota.to_dict()["reset_at"] == quota.reset_at


def test_model_references() -> None:
    assert parse_model_ref("digits") == ("digits", None)
    assert parse_model_ref("digits:3") == ("digits", 3)
    for bad in ("digits@production", "digits:x", ":1", ""):
        with pytest.raises(ConfigError):
            parse_model_ref(bad)


def test_a_platform_that_does_not_answer_is_unavailable() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", api_key="kaon_x", timeout=2) as c, \
            pytest.raises(UnavailableError, match="Cannot reach"):
        c.me()


@pytest.fixture(scope="module")
def not_kaon() -> Iterator[str]:
    """Some other web server: 200 with an HTML page for /, 404 with an HTML page elsewhere."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def _page(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!DOCTYPE html><html><body>nginx</body></html>")

        do_GET = do_POST = _page

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_another_server_is_not_taken_for_kaon(not_kaon: str) -> None:
    with Client(not_kaon, api_key="kaon_x", timeout=5) as c:
        assert not c.ready()  # a 200 page that is not Kaon's
        with pytest.raises(NotFoundError, match="not a Kaon error") as info:
            c.me()
        assert info.value.hint is not None and "without /api/v1" in info.value.hint
        with pytest.raises(NotFoundError, match="not a Kaon error"):
            c.predict("digits", np.zeros((1, 28, 28), dtype=np.uint8))
        with pytest.raises(UnavailableError, match="not ready"):
            c.wait_ready(timeout=0.3)
        with pytest.raises(UnavailableError, match="not Kaon's JSON"):
            c._request("GET", "/readyz")  # a 200 HTML answer where JSON was due


def test_ids_cannot_reach_another_route() -> None:
    """An id from an untrusted source stays one path segment: '/' is encoded, and httpx's
    resolution of '..' never sees a dot segment."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Record(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(self.path)
            self.send_response(204)
            self.end_headers()

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{server.server_port}", api_key="kaon_x") as c:
            c.cancel_job("../../subscription")
            c.delete_dataset("../deployments/prod")
            c.job_logs("../deployments/prod?x=1")
            c.model("../../api/v1/keys")
            for bad in ("..", "."):
                with pytest.raises(ConfigError, match="not an id"):
                    c.job(bad)
    finally:
        server.shutdown()
    assert seen == ["/api/v1/jobs/..%2F..%2Fsubscription/cancel",
                    "/api/v1/datasets/..%2Fdeployments%2Fprod",
                    "/api/v1/jobs/..%2Fdeployments%2Fprod%3Fx%3D1/logs?offset=0",
                    "/v1/models/..%2F..%2Fapi%2Fv1%2Fkeys"]


def test_a_model_server_that_does_not_answer_is_unavailable() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as c, \
            pytest.raises(UnavailableError, match="Cannot reach"):
        c.predict("digits", np.zeros((1, 28, 28), dtype=np.uint8))


# ---- a real platform -------------------------------------------------------------------------
@pytest.mark.slow
def test_me_and_auth_errors(platform: Platform, client: Client) -> None:
    me = client.me()
    assert me["role"] == "owner" and me["workspace"]["id"] == "default"
    assert "admin" in me["scopes"]
    assert [w["name"] for w in client.workspaces()] == ["default"]
    with Client(platform.url) as anonymous, pytest.raises(AuthError, match="No API key"):
        anonymous.me()
    with Client(platform.url, api_key="kaon_0123456789ab_" + "x" * 43) as wrong, \
            pytest.raises(AuthError):
        wrong.keys()
    with pytest.raises(NotFoundError):
        client.job("job-000000000000")
    with pytest.raises(NotFoundError):
        client.deployment("nope")


@pytest.mark.slow
def test_keys_create_list_revoke_and_scopes(platform: Platform, client: Client) -> None:
    made = client.create_key("reader", ["read"])
    assert made["secret"].startswith("kaon_") and made["scopes"] == ["read"]
    listed = client.keys()  # (a list of key records, not a mapping's keys)
    assert made["id"] in [k["id"] for k in listed]
    with Client(platform.url, api_key=made["secret"]) as reader:
        assert reader.me()["scopes"] == ["read"]
        assert reader.usage()["period"]
        with pytest.raises(ForbiddenError):
            reader.subscribe("pro")
        with pytest.raises(ForbiddenError):
            reader.create_key("wider", ["admin"])
        revoked = client.revoke_key(made["id"])
        assert revoked["revoked_at"] is not None
        with pytest.raises(AuthError):
            reader.me()


@pytest.mark.slow
def test_plans_subscribe_usage_and_an_invoice(platform: Platform, client: Client) -> None:
    catalog = client.plans()
    assert {"free", "pro"} <= {p["name"] for p in catalog["plans"]}
    with pytest.raises(ConfigError, match="Unknown plan"):
        client.subscribe("platinum")
    assert client.subscribe("pro")["plan"] == "pro"
    assert client.subscription()["plan"] == "pro"
    assert client.usage()["plan"] == "pro"
    assert client.cancel_subscription()["cancel_at_period_end"] is True
    assert client.subscribe("pro")["cancel_at_period_end"] is False
    with pytest.raises(ConflictError, match="not over yet"):
        client.generate_invoice(client.usage()["period"])
    period = backdate_plan_changes(platform)
    invoice = client.generate_invoice(period)
    assert invoice["period"] == period and invoice["total_cents"] == 4900
    assert client.invoice(period)["id"] == invoice["id"] == client.invoice(invoice["id"])["id"]
    assert [i["id"] for i in client.invoices()] == [invoice["id"]]
    page = client.invoice_html(period)
    assert "$49.00" in page and invoice["id"] in page
    with pytest.raises(NotFoundError, match="No invoice for 1999-01"):
        client.invoice("1999-01")
    assert any(a["action"] == "invoice.generate" for a in client.audit())


@pytest.mark.slow
def test_deploy_wait_and_infer_through_the_gateway(client: Client) -> None:
    assert [m["name"] for m in client.registered_models()] == ["digits"]
    assert client.registered_model("digits:1")["version"] == 1
    dep = client.deploy("digits:1", name="sdk-digits")
    assert dep["model"] == "digits" and dep["version"] == 1
    with pytest.raises(ConflictError, match="exists"):
        client.deploy("digits", name="sdk-digits")
    with pytest.raises(NotFoundError):
        client.deploy("no-such-model", name="other")
    assert client.wait_deployment_ready("sdk-digits", timeout=120)["state"] == "ready"
    before = client.usage()["metrics"]["inference_requests"]["used"]
    predictions = client.infer("sdk-digits", np.zeros((3, 28, 28), dtype=np.uint8))
    assert len(predictions) == 3 and predictions[0].label in [str(i) for i in range(10)]
    assert abs(sum(predictions[0].probabilities) - 1) < 1e-3
    # one request, however many images; on a plan without a hard cap the event is journaled
    # and committed in the background, so the count catches up within a moment
    deadline = time.monotonic() + 30
    while (used := client.usage()["metrics"]["inference_requests"]["used"]) != before + 1:
        assert used <= before + 1 and time.monotonic() < deadline, (before, used)
        time.sleep(0.2)
    app_key = client.create_key("app", ["inference"])["secret"]
    with Client(client.url, api_key=app_key) as app:  # inference only: no read scope
        assert app.deployment_model("sdk-digits") == "digits"
        assert len(app.infer("sdk-digits", np.zeros((1, 28, 28), dtype=np.uint8))) == 1
        with pytest.raises(ForbiddenError):
            app.deployments()
    with pytest.raises(SignatureError, match="1x28x28"):
        client.infer("sdk-digits", np.zeros((1, 32, 32), dtype=np.uint8), model="digits")
    assert client.scale("sdk-digits", max_batch_size=8)["max_batch_size"] == 8
    assert [d["name"] for d in client.deployments()] == ["sdk-digits"]
    client.delete_deployment("sdk-digits")
    assert client.deployments() == []
    with pytest.raises(NotFoundError):  # at once, while its replicas still stop
        client.infer("sdk-digits", np.zeros((1, 28, 28), dtype=np.uint8), model="digits")


@pytest.mark.slow
def test_jobs_submit_list_cancel(client: Client, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="epochs"):
        client.submit_job({**SPEC, "epochs": 0})
    with pytest.raises(ConfigError, match="does not exist"):
        client.submit_job(tmp_path / "missing.yaml")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    job = client.submit_job(spec_file, max_attempts=1)
    assert job["state"] == "queued" and job["spec"]["name"] == "digits-job"
    assert job["id"] in [j["id"] for j in client.jobs(state="queued")]
    assert client.job(job["id"])["max_attempts"] == 1
    assert client.job_logs(job["id"]) == {"text": "", "offset": 0, "state": "queued"}
    assert client.cancel_job(job["id"])["state"] == "cancelled"
    assert client.wait_job(job["id"], timeout=5)["state"] == "cancelled"
    assert job["id"] not in [j["id"] for j in client.jobs(state="queued")]
    with pytest.raises(NotFoundError):
        client.job_logs("job-000000000000")


@pytest.mark.slow
def test_job_logs_from_an_offset_and_followed_to_the_end(platform: Platform,
                                                         client: Client) -> None:
    job = client.submit_job(SPEC, max_attempts=1)
    log = platform.home / "jobs" / job["id"] / "log.txt"  # where the platform's workers write
    log.parent.mkdir(parents=True)
    log.write_text("[worker w1] attempt 1 starts\nepoch 1: loss 0.5  accuracy 0.8 ✓\n")
    first = client.job_logs(job["id"])
    assert first["text"].startswith("[worker w1]") and first["state"] == "queued"
    assert first["offset"] == log.stat().st_size
    with log.open("a") as f:
        f.write("done\n")
    assert client.job_logs(job["id"], first["offset"])["text"] == "done\n"
    client.cancel_job(job["id"])
    assert "".join(client.follow_job_logs(job["id"], poll_s=0.1)) == log.read_text()


@pytest.mark.slow
def test_members_add_and_remove(platform: Platform, client: Client) -> None:
    made = client.add_member("ada@example.com", "viewer")
    user_id = made["member"]["user_id"]
    assert "ada@example.com" in [m["email"] for m in client.members()]
    with Client(platform.url, api_key=made["key"]["secret"]) as ada:
        assert ada.me()["role"] == "viewer"
    client.remove_member(user_id)
    assert "ada@example.com" not in [m["email"] for m in client.members()]
