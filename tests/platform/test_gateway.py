"""`kaon up` end to end: a deployment behind the authenticated, metered gateway.

One real platform process per module (SQLite in a temporary KAON_HOME, replica processes,
a job worker), driven over HTTP with httpx; plans come from a test plans file with a
small hard cap so the quota race and the 429 body can be seen.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from sqlalchemy import create_engine, text
from tritonclient.utils import InferenceServerException

from tests.platform.platform_server import running_platform

REPO = Path(__file__).resolve().parents[2]
CAP = 40  # the test plan's monthly inference requests
IMAGE = np.zeros((28, 28), dtype=int).tolist()


def _plans(path: Path) -> Path:
    shipped = (REPO / "kaon/platform/plans.toml").read_text()
    shipped = re.sub(r"(\[plans\.free\][^\[]*?)included_inference_requests = [\d_]+",
                     rf"\g<1>included_inference_requests = {CAP}", shipped, flags=re.S)
    shipped = re.sub(r"(\[plans\.free\][^\[]*?)rate_limit_rps = [\d.]+\nburst = \d+",
                     r"\g<1>rate_limit_rps = 1000.0\nburst = 1000", shipped, flags=re.S)
    shipped = re.sub(r'(\[plans\.free\][^\[]*?)features = \[\]', r'\g<1>features = ["streams"]',
                     shipped, flags=re.S)
    shipped = re.sub(r"(\[plans\.free\][^\[]*?)max_replicas = \d+", r"\g<1>max_replicas = 2",
                     shipped, flags=re.S)
    path.write_text(shipped)
    return path


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("platform-home")
    with running_platform(home, plans=_plans(home / "test-plans.toml")) as up:
        yield {"url": up.url, "key": up.key, "home": home, "proc": up.process.proc}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def deployed(platform: dict[str, Any]) -> dict[str, Any]:
    url, key = platform["url"], platform["key"]
    r = httpx.post(f"{url}/api/v1/deployments", headers=_auth(key),
                   json={"name": "digits", "model": "digits", "replicas": 1})
    assert r.status_code in (200, 201), r.text
    deadline = time.monotonic() + 90
    while httpx.get(f"{url}/api/v1/deployments/digits",
                    headers=_auth(key)).json()["state"] != "ready":
        assert time.monotonic() < deadline, "the deployment never became ready"
        time.sleep(0.3)
    return platform


@pytest.mark.slow
def test_predict_and_v2_through_the_gateway_are_metered(deployed: dict[str, Any]) -> None:
    url, key = deployed["url"], deployed["key"]
    before = _used(url, key)
    r = httpx.post(f"{url}/d/digits/v1/models/digits/predict", headers=_auth(key),
                   json={"inputs": [IMAGE]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] in [str(i) for i in range(10)]
    assert r.headers["x-request-id"]
    v2 = httpx.post(f"{url}/d/digits/v2/models/digits/infer", headers=_auth(key), json={
        "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "UINT8",
                    "data": [0] * 784}]})
    assert v2.status_code == 200, v2.text
    assert httpx.get(f"{url}/d/digits/v2/health/ready", headers=_auth(key)).status_code == 200
    assert _settled(url, key, before + 2) == before + 2  # two inferences; health is free


@pytest.mark.slow
def test_a_reused_request_id_is_metered_every_time(deployed: dict[str, Any]) -> None:
    url, key = deployed["url"], deployed["key"]
    before = _used(url, key)
    path = f"{url}/d/digits/v1/models/digits/predict"
    same = {**_auth(key), "X-Request-ID": "always-the-same"}
    for _ in range(3):
        r = httpx.post(path, headers=same, json={"inputs": [IMAGE]})
        assert r.status_code == 200 and r.headers["x-request-id"] == "always-the-same"
    failed = httpx.post(path, headers=same, json={"inputs": [[[1, 2]]]})  # refunded...
    assert failed.status_code == 422
    assert _settled(url, key, before + 3) == before + 3  # ...but not the three served


@pytest.mark.slow
def test_bad_keys_get_401_and_other_tenants_get_404(deployed: dict[str, Any]) -> None:
    url, key = deployed["url"], deployed["key"]
    body = {"inputs": [IMAGE]}
    path = f"{url}/d/digits/v1/models/digits/predict"
    assert httpx.post(path, json=body).status_code == 401
    wrong = httpx.post(path, json=body, headers=_auth("kaon_0123456789ab_" + "x" * 43))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    other = httpx.post(f"{url}/api/v1/workspaces", headers=_auth(key), json={"name": "other"})
    assert other.status_code in (200, 201), other.text
    other_key = other.json()["key"]["secret"]
    assert httpx.post(path, json=body, headers=_auth(other_key)).status_code == 404
    assert httpx.post(f"{url}/d/nope/v1/models/digits/predict", json=body,
                      headers=_auth(key)).status_code == 404
    made = httpx.post(f"{url}/api/v1/keys", headers=_auth(key),
                      json={"name": "short-lived", "scopes": ["inference"]}).json()
    assert httpx.post(path, json=body, headers=_auth(made["secret"])).status_code == 200
    assert httpx.delete(f"{url}/api/v1/keys/{made['id']}",
                        headers=_auth(key)).status_code in (200, 204)
    time.sleep(1.2)  # the gateway caches a key's check for at most a second
    assert httpx.post(path, json=body, headers=_auth(made["secret"])).status_code == 401


@pytest.mark.slow
def test_a_body_over_the_limit_is_413_declared_or_streamed(deployed: dict[str, Any]) -> None:
    url, key = deployed["url"], deployed["key"]
    path = f"{url}/d/digits/v1/models/digits/predict"
    big = b"x" * (17 * 1024**2)  # the gateway's limit is 16 MiB, like a replica's
    declared = httpx.post(path, content=big, headers={**_auth(key), "X-Request-ID": "big-1"})
    assert declared.status_code == 413 and declared.json()["error"] == "PayloadTooLarge"
    assert declared.headers["x-request-id"] == "big-1"  # the caller's id, as on a 2xx
    streamed = httpx.post(path, content=iter([big[:9 << 20], big[9 << 20:]]),
                          headers=_auth(key))  # chunked: no length to check up front
    assert streamed.status_code == 413 and "16777216 bytes" in streamed.json()["message"]
    assert httpx.post(path, headers=_auth(key), json={"inputs": [IMAGE]}).status_code == 200


@pytest.mark.slow
def test_triton_clients_work_through_the_gateway_and_read_its_errors(
        deployed: dict[str, Any]) -> None:
    """Triton's own client, at the deployment's path with the key as a header: it infers,
    and the gateway's refusals on V2 routes come in V2's format, so the client shows their
    message and hint (it reads only ``error``: Kaon's format made it say "AuthError")."""
    url, key = deployed["url"], deployed["key"]
    host = url.removeprefix("http://")
    x = np.zeros((2, 1, 28, 28), np.uint8)
    tensor = triton.InferInput("input", list(x.shape), "UINT8")
    tensor.set_data_from_numpy(x, binary_data=True)
    client = triton.InferenceServerClient(f"{host}/d/digits")
    result = client.infer("digits", [tensor], headers=_auth(key))
    assert result.as_numpy("probabilities").shape == (2, 10)
    with pytest.raises(InferenceServerException) as no_key:
        client.infer("digits", [tensor])
    assert no_key.value.status() == "401"
    assert "No API key was sent. Send 'Authorization: Bearer" in no_key.value.message()
    with pytest.raises(InferenceServerException) as elsewhere:
        triton.InferenceServerClient(f"{host}/d/nope").infer("digits", [tensor],
                                                             headers=_auth(key))
    assert elsewhere.value.status() == "404" and "'nope'" in elsewhere.value.message()
    big = httpx.post(f"{url}/d/digits/v2/models/digits/infer", content=b"x" * (17 << 20),
                     headers=_auth(key))
    assert big.status_code == 413 and set(big.json()) == {"error"}
    assert "16777216 bytes" in big.json()["error"]


@pytest.mark.slow
def test_a_caller_without_a_valid_key_is_refused_before_its_body_is_read(
        deployed: dict[str, Any]) -> None:
    """Else anyone could make the gateway buffer 16 MiB per connection: a body past the
    limit sent without a key is a 401, not the 413 that reading it would end in."""
    url = deployed["url"]
    path = f"{url}/d/digits/v1/models/digits/predict"
    big = b"x" * (17 * 1024**2)
    for headers in ({}, _auth("kaon_0123456789ab_" + "x" * 43)):
        refused = httpx.post(path, content=iter([big[:9 << 20], big[9 << 20:]]),
                             headers={**headers, "X-Request-ID": "keyless-1"})
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.headers["x-request-id"] == "keyless-1"


@pytest.mark.slow
def test_a_stream_through_the_gateway_meters_each_frame(deployed: dict[str, Any]) -> None:
    from websockets.sync.client import connect

    from tests.serve.test_stream import tensor_frame

    url, key = deployed["url"], deployed["key"]
    before = _used(url, key, "stream_frames")
    with connect(url.replace("http", "ws") + "/d/digits/v1/models/digits/stream",
                 additional_headers=_auth(key)) as ws:
        for i in range(3):
            ws.send(tensor_frame(i))
        seqs = [__import__("json").loads(ws.recv(timeout=10))["seq"] for _ in range(3)]
    assert seqs == [0, 1, 2]
    # a browser cannot set headers on a WebSocket: the key may come as ?api_key=
    with connect(url.replace("http", "ws") + f"/d/digits/v1/models/digits/stream?api_key={key}"
                 ) as ws:
        ws.send(tensor_frame(0))
        assert __import__("json").loads(ws.recv(timeout=10))["seq"] == 0
    assert _settled(url, key, before + 4, "stream_frames") == before + 4
    # a refused stream gets the HTTP routes' status and body as the handshake's answer
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        connect(url.replace("http", "ws") + "/d/digits/v1/models/digits/stream")
    assert refused.value.response.status_code == 401
    assert b"No API key was sent" in refused.value.response.body


@pytest.mark.slow
def test_64_requests_racing_for_the_last_10_units_let_exactly_10_through(
        deployed: dict[str, Any]) -> None:
    url, key = deployed["url"], deployed["key"]
    used = _used(url, key)
    engine = create_engine(f"sqlite:///{deployed['home'] / 'kaon.db'}")
    with engine.begin() as conn:  # leave exactly 10 units of the month's quota
        conn.execute(text("update usage_counters set used = :u where workspace_id = 'default' "
                          "and metric = 'inference_requests'"), {"u": CAP - 10})
        conn.execute(text("update usage_counters set used = 0 where workspace_id = 'default' "
                          "and metric = 'stream_frames'"))  # frames draw on the same quota
    engine.dispose()

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as c:
            return await asyncio.gather(*(
                c.post(f"{url}/d/digits/v1/models/digits/predict", headers=_auth(key),
                       json={"inputs": [IMAGE]}) for _ in range(64)))

    responses = asyncio.run(race())
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 10 and codes.count(429) == 54, codes
    first = next(r for r in responses if r.status_code == 429)
    refused = first.json()
    assert first.headers["x-quota-reset"] == refused["reset_at"]
    assert refused["plan"] == "free" and refused["limit"] == CAP
    assert refused["reset_at"].endswith("Z") or "+00:00" in refused["reset_at"]
    assert used >= 0 and _settled(url, key, CAP) == CAP


def _settled(url: str, key: str, expected: int, metric: str = "inference_requests") -> int:
    """The usage counter once the gateway's journal has reached the database (a committer
    process reads it every 0.25 s; waited for up to 30 s on a busy machine)."""
    deadline = time.monotonic() + 30.0
    while _used(url, key, metric) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and nothing more arrives: no double counting
    return _used(url, key, metric)


def _used(url: str, key: str, metric: str = "inference_requests") -> int:
    usage = httpx.get(f"{url}/api/v1/usage", headers=_auth(key)).json()
    return int(usage["metrics"][metric]["used"])


def _replicas(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(b"--uds" in Path(f"/proc/{c}/cmdline").read_bytes() for c in children
               if Path(f"/proc/{c}").exists())


@pytest.mark.slow
def test_scaling_and_deleting_a_deployment_changes_its_processes(
        deployed: dict[str, Any]) -> None:  # last: it deletes the shared deployment
    url, key, pid = deployed["url"], deployed["key"], deployed["proc"].pid
    assert _replicas(pid) == 1
    r = httpx.patch(f"{url}/api/v1/deployments/digits", headers=_auth(key), json={"replicas": 2})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 60
    while _replicas(pid) != 2:
        assert time.monotonic() < deadline, "the deployment was not scaled"
        time.sleep(0.2)
    too_many = httpx.patch(f"{url}/api/v1/deployments/digits", headers=_auth(key),
                           json={"replicas": 3})
    assert too_many.status_code == 409 and "replica" in too_many.text  # the plan's limit
    assert httpx.delete(f"{url}/api/v1/deployments/digits",
                        headers=_auth(key)).status_code == 204
    # gone from the moment the 204 is sent: not served by its replicas while they stop
    assert httpx.post(f"{url}/d/digits/v1/models/digits/predict", headers=_auth(key),
                      json={"inputs": [IMAGE]}).status_code == 404
    deadline = time.monotonic() + 60
    while _replicas(pid) != 0:
        assert time.monotonic() < deadline, "the deleted deployment's replicas still run"
        time.sleep(0.2)
    assert httpx.post(f"{url}/d/digits/v1/models/digits/predict", headers=_auth(key),
                      json={"inputs": [IMAGE]}).status_code == 404


@pytest.mark.slow
def test_the_console_page_cannot_be_framed_or_run_scripts(platform: dict[str, Any]) -> None:
    page = httpx.get(f"{platform['url']}/")
    assert page.status_code == 200 and "Kaon" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none'
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
