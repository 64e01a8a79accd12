"""The HTTP model server, driven through FastAPI's TestClient with a real registry underneath."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from kaon.errors import ArtifactError
from kaon.registry import load_model
from kaon.serve import Predictor, RegistryPredictor, create_app
from kaon.serve.batching import ARRIVALS, BatchPolicy
from kaon.serve.logs import JsonFormatter
from tests.registry.fixtures import DIGITS, register_tiny
from tests.serve.test_decode import b64_image, gradient

PREDICT = "/v1/models/digits/predict"


def wait_ready(client: TestClient, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the model never became ready"
        time.sleep(0.02)


def from_registry(ref: str = "digits:1") -> Callable[[], Predictor]:
    return lambda: RegistryPredictor.from_ref(ref)


@pytest.fixture
def client() -> Iterator[TestClient]:
    """A server for ``digits:1`` (a tiny untrained MLP), once its weights are loaded."""
    register_tiny("digits")
    with TestClient(create_app(from_registry())) as c:
        wait_ready(c)
        yield c


def digit_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


# ---- predictions --------------------------------------------------------------------------------
def test_predict_with_nested_lists_gives_one_prediction_per_image(client: TestClient) -> None:
    response = client.post(PREDICT, json={"inputs": [digit_image(0).tolist(),
                                                     [digit_image(1).tolist()]]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("digits", 1)
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        probabilities = prediction["probabilities"]
        assert len(probabilities) == 10
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert prediction["index"] == int(np.argmax(probabilities))
        assert prediction["label"] == DIGITS[prediction["index"]]


def test_predictions_are_the_registered_models_probabilities(client: TestClient) -> None:
    image = digit_image(2)
    body = client.post(PREDICT, json={"inputs": [image.tolist()]}).json()
    expected = load_model("digits:1").predict_proba(torch.from_numpy(image)[None, None])[0]
    assert body["predictions"][0]["probabilities"] == pytest.approx(expected.tolist(), abs=1e-5)


def test_the_plain_asgi_path_answers_as_the_fastapi_route_does(client: TestClient) -> None:
    """Up to INLINE_DECODE images take kaon_json.FastPredict; more go through the route."""
    from kaon.serve.protocols.kaon_json import INLINE_DECODE

    image = digit_image(4).tolist()
    fast = client.post(PREDICT, json={"inputs": [image]})
    routed = client.post(PREDICT, json={"inputs": [image] * (INLINE_DECODE + 1)})
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.json().keys() == routed.json().keys()
    assert fast.json()["predictions"][0] == routed.json()["predictions"][0]
    assert fast.headers["x-request-id"]
    counted = re.search(r'kaon_request_seconds_count\{route="/v1/models/\{name\}/predict",'
                        r'status="200"\} (\d+)', client.get("/metrics").text)
    assert counted is not None and float(counted.group(1)) >= 2  # both, under the route


def test_a_body_that_is_not_declared_json_is_refused_as_the_route_does(
        client: TestClient) -> None:
    body = json.dumps({"inputs": [digit_image(5).tolist()]})
    refused = client.post(PREDICT, content=body, headers={"content-type": "text/plain"})
    assert refused.status_code == 422
    for accepted in ("application/json; charset=utf-8", "application/vnd.kaon+json"):
        assert client.post(PREDICT, content=body,
                           headers={"content-type": accepted}).status_code == 200


def test_base64_png_gives_the_same_prediction_as_the_same_pixels_as_numbers(
        client: TestClient) -> None:
    image = digit_image(3)
    as_png = client.post(PREDICT, json={"inputs": [b64_image(image)]})
    as_numbers = client.post(PREDICT, json={"inputs": [image.tolist()]})
    assert as_png.status_code == 200, as_png.text
    assert as_png.json()["predictions"] == as_numbers.json()["predictions"]
    assert sum(as_png.json()["predictions"][0]["probabilities"]) == pytest.approx(1.0, abs=1e-4)


def test_model_info_shows_version_and_signature(client: TestClient) -> None:
    body = client.get("/v1/models/digits").json()
    assert body["name"] == "digits" and body["version"] == 1
    assert body["signature"]["shape"] == [1, 28, 28]
    assert body["signature"]["class_names"] == DIGITS


# ---- inputs that do not fit: 422 naming the expected signature ----------------------------------
@pytest.mark.parametrize("payload", [
    pytest.param(b64_image(gradient(20, 28)), id="wrong size png"),
    pytest.param(b64_image(np.zeros((28, 28, 3), np.uint8)), id="rgb png to a gray model"),
    pytest.param([[0] * 28] * 27 + [[0] * 20], id="ragged lists"),
    pytest.param(np.full((28, 28), 300).tolist(), id="values above 255"),
    pytest.param(np.zeros((3, 28, 28)).tolist(), id="three channels as numbers"),
    pytest.param("this is not base64 ***", id="not base64"),
])
def test_inputs_that_do_not_fit_get_422_naming_the_signature(client: TestClient,
                                                             payload: Any) -> None:
    response = client.post(PREDICT, json={"inputs": [payload]})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "SignatureError"
    assert body["message"].startswith("inputs[0]:")
    assert "1x28x28 uint8 images" in body["message"]
    assert "[28, 28] or [1, 28, 28]" in body["hint"]


def test_an_empty_batch_is_a_validation_error(client: TestClient) -> None:
    assert client.post(PREDICT, json={"inputs": []}).status_code == 422


def test_unknown_request_fields_are_refused(client: TestClient) -> None:
    response = client.post(PREDICT, json={"inputs": [digit_image().tolist()], "topk": 3})
    assert response.status_code == 422


# ---- routing ------------------------------------------------------------------------------------
def test_an_unknown_model_name_is_404_naming_the_served_model(client: TestClient) -> None:
    response = client.post("/v1/models/fashion/predict",
                           json={"inputs": [digit_image().tolist()]})
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "NotFoundError"
    assert "no model 'fashion'" in body["message"] and "Served: 'digits'" in body["message"]
    assert "/v1/models/digits/predict" in body["hint"]


def test_model_info_for_an_unknown_name_is_404(client: TestClient) -> None:
    assert client.get("/v1/models/fashion").status_code == 404


def test_openapi_document_lists_the_predict_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    predict = paths["/v1/models/{name}/predict"]["post"]
    assert predict["summary"] == "Classify a batch of images"
    assert {"404", "413", "422"} <= predict["responses"].keys()
    assert {"/healthz", "/readyz", "/v1/models/{name}"} <= paths.keys()


# ---- body limit ---------------------------------------------------------------------------------
def limited_client(max_body: int) -> TestClient:
    register_tiny("digits")
    return TestClient(create_app(from_registry(), max_body=max_body))


def test_a_body_over_the_limit_is_413() -> None:
    with limited_client(1000) as client:
        wait_ready(client)
        response = client.post(PREDICT, json={"inputs": [digit_image().tolist()]})
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"
    assert "1000 bytes" in response.json()["message"]


def test_a_body_under_the_limit_is_served() -> None:
    small_png = b64_image(np.zeros((28, 28), np.uint8))
    with limited_client(1000) as client:
        wait_ready(client)
        assert client.post(PREDICT, json={"inputs": [small_png]}).status_code == 200


def test_a_streamed_body_over_the_limit_is_413() -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ['
        for _ in range(10):
            yield b"[" + b"0, " * 200 + b"0], "
        yield b"[0]]}"

    with limited_client(1000) as client:
        wait_ready(client)
        response = client.post(PREDICT, content=chunks(),
                               headers={"content-type": "application/json"})
    assert response.status_code == 413


# ---- liveness and readiness ---------------------------------------------------------------------
def test_healthz_and_readyz_are_200_once_loaded(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model": "digits", "version": 1}


class BlockedLoader:
    """A loader that waits for ``release`` before loading ``digits:1``."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self) -> Predictor:
        assert self.release.wait(20), "the test never released the loader"
        return RegistryPredictor.from_ref("digits:1")


def test_readyz_is_503_while_loading_then_200_while_healthz_is_always_200() -> None:
    register_tiny("digits")
    loader = BlockedLoader()
    with TestClient(create_app(loader)) as client:
        try:
            response = client.get("/readyz")
            assert response.status_code == 503
            assert response.json() == {"status": "not ready", "detail": "loading"}
            assert client.get("/healthz").status_code == 200
        finally:
            loader.release.set()
        wait_ready(client)
        assert client.get("/readyz").json()["model"] == "digits"


def test_predict_while_loading_is_503_service_unavailable() -> None:
    register_tiny("digits")
    loader = BlockedLoader()
    with TestClient(create_app(loader)) as client:
        try:
            response = client.post(PREDICT, json={"inputs": [digit_image().tolist()]})
        finally:
            loader.release.set()
    assert response.status_code == 503


def test_a_failed_load_keeps_readyz_at_503_with_the_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Predictor:
        raise ArtifactError("Weights file /x/model.safetensors is missing.")

    with caplog.at_level(logging.ERROR, logger="kaon.serve"), \
            TestClient(create_app(broken)) as client:
        deadline = time.monotonic() + 10
        while "missing" not in client.get("/readyz").json()["detail"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not ready"
    assert "model.safetensors is missing" in response.json()["detail"]
    # the 503's hint says "Check the server log": the log has it
    assert any("failed to load" in r.getMessage() and "is missing" in r.getMessage()
               for r in caplog.records)


def test_each_response_carries_a_request_id_and_is_logged_as_json(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    from kaon.serve.logs import JsonFormatter

    with caplog.at_level(logging.INFO, logger="kaon.access"):
        mine = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
        theirs = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert mine.headers["X-Request-ID"] == "trace-42"
    assert theirs.headers["X-Request-ID"] != "bad id with spaces"
    line = json.loads(JsonFormatter().format(caplog.records[0]))
    assert line["request_id"] == "trace-42" and line["status"] == 200 and line["ms"] >= 0


def test_a_lone_request_does_not_wait_out_the_batching_window() -> None:
    """With no other request on its way, a batch runs as soon as the model is free: one
    client no longer pays --max-wait-ms on every request (decision 0028)."""
    from tests.serve.test_v2 import INFER, infer_body

    assert ARRIVALS.count == 0  # no request of an earlier test is still counted
    register_tiny("digits")
    policy = BatchPolicy(max_wait_ms=20_000)
    with TestClient(create_app(from_registry(), policy=policy)) as c:
        wait_ready(c)
        for path, body in ((PREDICT, {"inputs": [digit_image(0).tolist()]}),
                           (INFER, infer_body(digit_image(0)[None, None]))):
            started = time.monotonic()
            assert c.post(path, json=body).status_code == 200
            assert time.monotonic() - started < 10  # far below the 20 s window
    assert ARRIVALS.count == 0


def test_the_fronts_readiness_probes_stay_out_of_the_access_log(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """A replica behind ``kaon serve --replicas N`` is probed every 2 s; those probes would
    be most of its access log."""
    from kaon.serve.asgi import PROBE_HEADER

    probe = {PROBE_HEADER[0].decode(): PROBE_HEADER[1].decode()}
    with caplog.at_level(logging.INFO, logger="kaon.access"):
        assert client.get("/readyz", headers=probe).status_code == 200
        assert client.get("/readyz", headers={"X-Request-ID": "a-user"}).status_code == 200
    logged = [json.loads(JsonFormatter().format(r)) for r in caplog.records
              if r.name == "kaon.access"]
    assert [line["request_id"] for line in logged] == ["a-user"]


def test_the_heap_is_frozen_once_the_model_has_loaded() -> None:
    """Start-up objects leave the cyclic GC's view, so full collections do not stall requests."""
    import gc

    register_tiny("digits")
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(from_registry())) as c:
        wait_ready(c)
        assert gc.get_freeze_count() > 10_000  # torch, FastAPI and the model's objects
    gc.unfreeze()


@pytest.mark.parametrize("raw", [b"{\"inputs\": [[1, 2", b"not json", b"{\"inputs\": NaN]"])
def test_a_body_that_is_not_json_is_a_422_naming_the_json_error(client: TestClient,
                                                                 raw: bytes) -> None:
    response = client.post(PREDICT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "json" in response.text.lower()



def test_a_body_nested_past_recursion_is_a_422_naming_the_signature(client: TestClient) -> None:
    raw = b'{"inputs": [' + b"[" * 5000 + b"]" * 5000 + b"]}"
    response = client.post(PREDICT, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "1x28x28 uint8 images" in response.json()["hint"]


def test_a_request_of_many_images_is_split_into_batches_and_answered_in_order() -> None:
    register_tiny("digits")
    seen: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self.inner = RegistryPredictor.from_ref("digits:1")
            self.name, self.version = self.inner.name, self.inner.version
            self.signature = self.inner.signature

        def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
            seen.append(len(images))
            return self.inner.predict(images)

    images = [digit_image(i).tolist() for i in range(10)]
    with TestClient(create_app(Counting, policy=BatchPolicy(max_batch_size=4))) as c:
        wait_ready(c)
        many = c.post(PREDICT, json={"inputs": images}).json()["predictions"]
        one_by_one = [c.post(PREDICT, json={"inputs": [img]}).json()["predictions"][0]
                      for img in images]
    assert seen[:3] == [4, 4, 2]  # pieces of at most max_batch_size, in order
    assert [p["label"] for p in many] == [p["label"] for p in one_by_one]
    np.testing.assert_allclose([p["probabilities"] for p in many],
                               [p["probabilities"] for p in one_by_one], atol=1e-5)
