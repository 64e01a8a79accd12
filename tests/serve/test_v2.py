"""The Open Inference Protocol (KServe V2) routes and the Prometheus metrics."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from httpx import Response

from kaon.serve import RegistryPredictor, create_app
from kaon.serve.batching import BatchPolicy
from tests.registry.fixtures import register_tiny
from tests.serve.test_app import PREDICT, client, digit_image, wait_ready  # noqa: F401 (fixture)
from tests.serve.test_batching import another_request_on_its_way

INFER = "/v2/models/digits/infer"


def infer_body(images: np.ndarray, datatype: str = "UINT8") -> dict[str, object]:
    return {"id": "req-1", "inputs": [{"name": "input", "shape": list(images.shape),
                                       "datatype": datatype,
                                       "data": images.reshape(-1).tolist()}]}


def test_health_and_model_metadata(client: TestClient) -> None:  # noqa: F811
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/digits").json()
    assert meta["inputs"][0] == {"name": "input", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}
    assert client.get("/v2/models/digits/ready").json()["ready"] is True


def test_json_infer_matches_kaon_predict(client: TestClient) -> None:  # noqa: F811
    images = np.stack([digit_image(0), digit_image(1)])
    v2 = client.post(INFER, json=infer_body(images)).json()
    v1 = client.post(PREDICT, json={"inputs": [i.tolist() for i in images]}).json()
    proba = next(o for o in v2["outputs"] if o["name"] == "probabilities")
    labels = next(o for o in v2["outputs"] if o["name"] == "label")
    assert v2["id"] == "req-1" and v2["model_name"] == "digits"
    assert proba["shape"] == [2, 10] and proba["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(proba["data"], (2, 10)),
                               [p["probabilities"] for p in v1["predictions"]], atol=1e-5)
    assert labels["data"] == [p["label"] for p in v1["predictions"]]


def test_fp32_and_4d_shapes_are_accepted(client: TestClient) -> None:  # noqa: F811
    images = np.stack([digit_image(2)])[:, None].astype(np.float32)
    response = client.post(INFER, json=infer_body(images, "FP32"))
    assert response.status_code == 200


def _binary_request(images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"id": "b-1", "inputs": [
        {"name": "input", "shape": list(images.shape), "datatype": "UINT8",
         "parameters": {"binary_data_size": images.nbytes}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                    {"name": "label"}]}).encode()
    return header + images.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                       "Content-Type": "application/octet-stream"}


def test_binary_tensor_extension_round_trip(client: TestClient) -> None:  # noqa: F811
    body, headers = _binary_request(np.stack([digit_image(3), digit_image(4)]))
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200
    length = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:length])
    proba = np.frombuffer(response.content[length:], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == proba.nbytes


def _headers(response: Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")}


def test_infer_is_answered_before_fastapi_the_same_as_its_route(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """``POST /v2/models/{name}/infer`` is answered in plain ASGI (decision 0029): with the V2
    routes gone from the app, it still works (and a path only a route serves is a 404), and
    its answers are byte for byte those of the route (``/versions/1/infer``)."""
    images = np.stack([digit_image(5), digit_image(6)])
    body, headers = _binary_request(images)
    requests = [{"json": infer_body(images)}, {"content": body, "headers": headers},
                {"content": gzip.compress(body), "headers": {**headers,
                                                             "Content-Encoding": "gzip"}},
                {"json": infer_body(np.zeros((1, 32, 32), dtype=np.uint8))},
                {"content": b"not json"},
                {"content": b'{"inputs": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"}]
    paths = [(INFER, "/v2/models/digits/versions/1/infer"),
             ("/v2/models/nope/infer", "/v2/models/nope/versions/1/infer")]  # a KaonError
    for (fast_path, route_path), request in itertools.product(paths, requests):
        fast = client.post(fast_path, **request)  # type: ignore[arg-type]
        route = client.post(route_path, **request)  # type: ignore[arg-type]
        assert (fast.status_code, fast.content) == (route.status_code, route.content)
        assert _headers(fast) == _headers(route)
    metrics = client.get("/metrics").text
    assert 'kaon_request_seconds_count{route="/v2/models/{name}/infer",status="200"} 3.0' \
        in metrics
    assert 'kaon_request_seconds_count{route="/v2/models/{name}/infer",status="404"} 6.0' \
        in metrics

    from fastapi import APIRouter

    from kaon.serve.protocols import v2
    monkeypatch.setattr(v2, "router", lambda runtime, max_body: APIRouter())
    with TestClient(create_app(lambda: RegistryPredictor.from_ref("digits:1"))) as bare:
        wait_ready(bare)
        assert bare.post(INFER, content=body, headers=headers).status_code == 200
        assert bare.post(INFER, json=infer_body(images)).json()["id"] == "req-1"
        assert bare.post("/v2/models/nope/infer", json=infer_body(images)).status_code == 404
        assert bare.post("/v2/models/digits/versions/1/infer",
                         json=infer_body(images)).status_code == 404


def test_a_wrong_shape_is_a_400_in_the_protocols_error_format(client: TestClient) -> None:  # noqa: F811
    response = client.post(INFER, json=infer_body(np.zeros((1, 32, 32), dtype=np.uint8)))
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and "[N, 1, 28, 28]" in response.json()["error"]


def test_malformed_requests_are_400s(client: TestClient) -> None:  # noqa: F811
    assert client.post(INFER, content=b"not json").status_code == 400
    assert client.post(INFER, json={"inputs": []}).status_code == 400
    bad_type = infer_body(np.zeros((1, 28, 28), dtype=np.uint8), "COMPLEX")
    assert "datatype" in client.post(INFER, json=bad_type).json()["error"]
    short = infer_body(np.zeros((1, 28, 28), dtype=np.uint8))
    short["inputs"][0]["data"] = [1, 2, 3]  # type: ignore[index]
    assert client.post(INFER, json=short).status_code == 400


def _one(**changes: object) -> dict[str, object]:
    body = infer_body(np.zeros((1, 28, 28), dtype=np.uint8))
    body["inputs"][0].update(changes)  # type: ignore[index]
    return body


@pytest.mark.parametrize("body", [
    _one(data=[300] * 784),                                  # past UINT8
    _one(datatype="INT64", data=[10**30] * 784),             # past INT64
    _one(parameters="x"),                                    # parameters not an object
    _one(shape=[2**60, 1, 28, 28], data=[]),                 # a count that wraps in int64
    _one(shape=[True, 28, 28]),                              # a bool is not a dimension
    {**_one(), "parameters": [1]},
    {**_one(), "outputs": [{"name": "label", "parameters": "x"}]},
], ids=["uint8-range", "int64-range", "parameters", "huge-shape", "bool-dim",
        "request-parameters", "output-parameters"])
def test_out_of_range_and_mistyped_fields_are_400s_not_500s(
        client: TestClient, body: dict[str, object]) -> None:  # noqa: F811
    response = client.post(INFER, json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}


def test_binary_sizes_and_header_lengths_must_be_plain_integers(client: TestClient) -> None:  # noqa: F811
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 784.0}}]}).encode()
    response = client.post(INFER, content=header + image.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 400 and "binary_data_size" in response.json()["error"]
    for length in ("\u00b2", "0\u00b3", "-1", "1e3"):  # '²' passes str.isdigit()
        response = client.post(INFER, content=header + image.tobytes(), headers={
            "Inference-Header-Content-Length": length.encode("latin-1")})  # raw bytes
        assert response.status_code == 400, (length, response.text)
        assert "Inference-Header-Content-Length" in response.json()["error"]


def test_a_request_larger_than_the_queue_is_413_not_a_retry_forever() -> None:
    images = np.zeros((5, 28, 28), dtype=np.uint8)
    with _serving(BatchPolicy(max_batch_size=2, max_queue=4)) as server:
        wait_ready(server)
        v2 = server.post(INFER, json=infer_body(images))
        v1 = server.post(PREDICT, json={"inputs": images.tolist()})
        fits = server.post(INFER, json=infer_body(images[:4]))
    assert v2.status_code == 413 and "at most 4" in v2.json()["error"]
    assert v1.status_code == 413 and "--max-queue" in v1.json()["hint"]
    assert "Retry-After" not in v2.headers
    assert fits.status_code == 200


def test_an_unknown_model_is_a_404(client: TestClient) -> None:  # noqa: F811
    response = client.post("/v2/models/nope/infer", json=infer_body(digit_image()[None]))
    assert response.status_code == 404 and "digits" in response.json()["error"]


def test_batches_and_routes_show_in_the_metrics(client: TestClient) -> None:  # noqa: F811
    body = {"inputs": [digit_image(i).tolist() for i in range(4)]}
    assert client.post(PREDICT, json=body).status_code == 200
    text = client.get("/metrics").text
    sizes, calls = _batch_sizes(text)
    assert calls >= 1 and sizes[2.0] < sizes[4.0]  # one request's 4 images: one call of 4
    assert 'kaon_request_seconds_count{route="/v1/models/{name}/predict",status="200"}' in text


# ---- over HTTP: batching, the queue bound, isolation, error formats --------------------------
class _Poisonable:
    """The registered model; a batch holding an image whose first pixel is 255 fails, and a
    batch takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        from kaon.serve import RegistryPredictor

        self.inner = RegistryPredictor.from_ref("digits:1")
        self.name, self.version, self.signature = (self.inner.name, self.inner.version,
                                                   self.inner.signature)
        self.delay = delay

    def predict(self, images: torch.Tensor) -> list[dict[str, object]]:
        time.sleep(self.delay)
        if bool((images[:, 0, 0, 0] == 255).any()):
            raise ValueError("poisoned image")
        return self.inner.predict(images)


def _serving(policy: BatchPolicy, delay: float = 0.0) -> TestClient:
    register_tiny("digits")
    return TestClient(create_app(lambda: _Poisonable(delay), policy=policy))


def _batch_sizes(text: str) -> tuple[dict[float, float], float]:
    sizes = {float(le): float(n) for le, n in
             re.findall(r'kaon_batch_size_bucket\{le="([\d.]+)"\} ([\d.]+)', text)}
    return sizes, float(re.search(r"kaon_batch_size_count ([\d.]+)", text)[1])  # type: ignore[index]


def test_single_image_requests_batch_together_under_concurrency() -> None:
    """While the model runs one batch, the requests that arrive meanwhile make the next
    (no window needed: decision 0028 runs a lone request at once)."""
    with _serving(BatchPolicy(max_batch_size=16, max_wait_ms=50), delay=0.05) as server:
        wait_ready(server)
        body = {"inputs": [digit_image(0).tolist()]}  # one image per request
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: server.post(PREDICT, json=body).status_code,
                                  range(32)))
        sizes, calls = _batch_sizes(server.get("/metrics").text)
    assert codes == [200] * 32
    assert calls < 32 and sizes[1.0] < calls  # some model call held several requests' images


@pytest.mark.parametrize("route", [PREDICT, INFER])
def test_a_full_queue_answers_503_with_retry_after(route: str) -> None:
    policy = BatchPolicy(max_batch_size=1, max_wait_ms=0, max_queue=1)
    image = digit_image(0)
    body = {"inputs": [image.tolist()]} if route == PREDICT else infer_body(image[None])
    with _serving(policy, delay=0.3) as server:
        wait_ready(server)
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: server.post(route, json=body), range(6)))
        metrics = server.get("/metrics").text
    refused = [r for r in responses if r.status_code == 503]
    assert refused and any(r.status_code == 200 for r in responses)
    assert all(r.headers["Retry-After"] == "1" for r in refused)
    error = "Overloaded" if route == PREDICT else "The server is at capacity (1 items queued)."
    assert all(r.json()["error"] == error for r in refused)  # each protocol's own format
    assert f"kaon_rejected_total {float(len(refused))}" in metrics


def test_one_bad_item_fails_only_its_own_request_in_a_shared_batch() -> None:
    # the batch flushes when all four are in (the window outlasts a slow machine)
    with _serving(BatchPolicy(max_batch_size=4, max_wait_ms=10_000)) as server:
        wait_ready(server)
        poison = digit_image(0)
        poison[0, 0] = 255
        good = digit_image(1)
        good[0, 0] = 0
        bodies = [poison] + [good] * 3
        with ThreadPoolExecutor(4) as pool, another_request_on_its_way():  # all in one window
            responses = list(pool.map(
                lambda img: server.post(PREDICT, json={"inputs": [img.tolist()]}), bodies))
        sizes, calls = _batch_sizes(server.get("/metrics").text)
    assert [r.status_code for r in responses[1:]] == [200] * 3
    assert responses[0].status_code == 500 and "poisoned" in responses[0].json()["message"]
    assert sizes[1.0] < calls  # the four went to the model together first


def test_errors_come_in_each_protocols_format(client: TestClient) -> None:  # noqa: F811
    invalid = client.post(PREDICT, json={"inputs": [5], "extra": 1})
    assert invalid.status_code == 422
    body = invalid.json()
    assert body["error"] == "ValidationError" and "extra" in body["message"]
    assert "1x28x28 uint8 images" in body["hint"]  # the signature the route expects
    assert client.get("/nope").json()["error"] == "HTTPError"
    assert client.get("/v2/nope").json() == {
        "error": "Not Found. See /docs for this server's routes."}
    deep = b'{"inputs": [{"name": "input", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    response = client.post(INFER, content=deep)
    assert response.status_code == 400 and set(response.json()) == {"error"}


def test_v2_server_metadata_versions_and_output_selection(client: TestClient) -> None:  # noqa: F811
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/models/digits/versions/1").json()["name"] == "digits"
    assert client.get("/v2/models/digits/versions/1/ready").json()["ready"] is True
    missing = client.get("/v2/models/digits/versions/9")
    assert missing.status_code == 404 and "version" in missing.json()["error"]
    body = infer_body(digit_image()[None]) | {"outputs": [{"name": "label"}]}
    answer = client.post("/v2/models/digits/versions/1/infer", json=body).json()
    assert [o["name"] for o in answer["outputs"]] == ["label"]
    wrong = client.post(INFER, json=infer_body(digit_image()[None]) | {
        "outputs": [{"name": "logits"}]})
    assert wrong.status_code == 400 and "logits" in wrong.json()["error"]


def test_values_outside_pixels_are_400s_and_floats_round(client: TestClient) -> None:  # noqa: F811
    image = np.minimum(digit_image(5), 254)
    for bad, datatype in ((np.full((1, 28, 28), 256.0), "FP32"),
                          (np.full((1, 28, 28), -1), "INT16"),
                          (np.full((1, 28, 28), np.nan), "FP64")):
        response = client.post(INFER, content=json.dumps(infer_body(bad, datatype)),
                               headers={"content-type": "application/json"})  # NaN allowed
        assert response.status_code == 400 and "0..255" in response.json()["error"], datatype
    exact = client.post(INFER, json=infer_body(image[None])).json()
    rounded = client.post(INFER, json=infer_body(image[None] + 0.3, "FP32")).json()
    assert exact["outputs"] == rounded["outputs"]


@pytest.mark.parametrize(("data", "datatype", "words"), [
    ([1.9] + [0] * 783, "UINT8", "must hold integers, got floats"),   # was truncated to 1
    (["1"] * 784, "UINT8", "must hold integers, got strings"),
    ([True] * 784, "UINT8", "must hold integers, got booleans"),
    ([True, 1] + [0] * 782, "UINT8", "must hold integers, got booleans"),  # numpy: int64
    ([[[0.5] * 27 + [False]] * 28], "FP32", "must hold numbers, got booleans"),  # nested
    ([5] * 784, "BOOL", "must hold booleans, got integers"),
    (["0.5"] * 784, "FP32", "must hold numbers, got strings"),
    ([-1] * 784, "UINT8", "outside UINT8's range 0..255"),
])
def test_json_data_must_be_of_its_declared_datatype(
        client: TestClient, data: list[object], datatype: str, words: str) -> None:  # noqa: F811
    response = client.post(INFER, json=_one(data=data, datatype=datatype))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error and "takes one input 'input' of shape [N, 1, 28, 28]" in error


@pytest.mark.parametrize(("changes", "words"), [
    ({"name": "pixels"}, "'pixels' is not this model's input"),
    ({"name": None}, "None is not this model's input"),
])
def test_an_input_of_another_name_is_refused(client: TestClient, changes: dict[str, object],  # noqa: F811
                                             words: str) -> None:
    response = client.post(INFER, json=_one(**changes))
    assert response.status_code == 400 and words in response.json()["error"]


def test_bytes_past_the_binary_tensors_and_a_non_string_id_are_400s(client: TestClient) -> None:  # noqa: F811
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": 784}}]}).encode()
    extra = client.post(INFER, content=header + image.tobytes() + b"junk",
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert extra.status_code == 400 and "4 bytes follow" in extra.json()["error"]
    numbered = client.post(INFER, json={**infer_body(image), "id": 7})
    assert numbered.status_code == 400 and "'id' must be a string" in numbered.json()["error"]


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_a_compressed_request_body_is_inflated(client: TestClient, coding: str) -> None:  # noqa: F811
    import gzip
    import zlib

    image = digit_image(3)[None]
    plain = json.dumps(infer_body(image)).encode()
    squeeze = {"gzip": gzip.compress, "deflate": zlib.compress,
               "raw-deflate": lambda b: zlib.compress(b, wbits=-zlib.MAX_WBITS)}[coding]
    response = client.post(INFER, content=squeeze(plain), headers={
        "Content-Encoding": coding.removeprefix("raw-"), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == client.post(INFER, content=plain).json()["outputs"]


def test_a_compressed_body_is_bounded_and_checked() -> None:
    import gzip

    register_tiny("digits")
    app = create_app(lambda: RegistryPredictor.from_ref("digits:1"), max_body=64 * 1024)
    with TestClient(app) as small:
        wait_ready(small)
        bomb = gzip.compress(b" " * (10 * 1024 * 1024))  # 10 KB sent, 10 MB inflated
        response = small.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413 and "inflates past" in response.json()["error"]
        ratio = gzip.compress(b" " * (2 << 20))  # 2 KB sent, 2 MiB: under the limit of 16,
        with TestClient(create_app(lambda: RegistryPredictor.from_ref("digits:1"))) as big:
            wait_ready(big)  # but a thousand times what was sent
            refused = big.post(INFER, content=ratio, headers={"Content-Encoding": "gzip"})
            assert refused.status_code == 413 and "100 times" in refused.json()["error"]
        two = gzip.compress(b'{"inputs": [') + gzip.compress(b"]}")  # two gzip members
        joined = small.post(INFER, content=two, headers={"Content-Encoding": "gzip"})
        assert joined.status_code == 400 and "follow the gzip stream" in joined.json()["error"]
        garbage = small.post(INFER, content=b"not gzip", headers={"Content-Encoding": "gzip"})
        assert garbage.status_code == 400 and "not gzip data" in garbage.json()["error"]
        other = small.post(INFER, content=b"{}", headers={"Content-Encoding": "br"})
        assert other.status_code == 415 and "gzip or deflate" in other.json()["error"]
