"""The Open Inference Protocol (KServe V2) routes and the Prometheus metrics."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi.testclient import TestClient

from tests.serve.test_app import PREDICT, client, digit_image  # noqa: F401 (fixture)

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


def test_binary_tensor_extension_round_trip(client: TestClient) -> None:  # noqa: F811
    images = np.stack([digit_image(3), digit_image(4)])
    header = {"inputs": [{"name": "input", "shape": [2, 28, 28], "datatype": "UINT8",
                          "parameters": {"binary_data_size": images.nbytes}}],
              "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}
    head = json.dumps(header).encode()
    response = client.post(INFER, content=head + images.tobytes(), headers={
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream"})
    assert response.status_code == 200
    length = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:length])
    proba = np.frombuffer(response.content[length:], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == proba.nbytes


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


def test_an_unknown_model_is_a_404(client: TestClient) -> None:  # noqa: F811
    response = client.post("/v2/models/nope/infer", json=infer_body(digit_image()[None]))
    assert response.status_code == 404 and "digits" in response.json()["error"]


def test_batches_form_under_concurrency_and_show_in_the_metrics(client: TestClient) -> None:  # noqa: F811
    body = {"inputs": [digit_image(i).tolist() for i in range(4)]}
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.post(PREDICT, json=body).status_code, range(16)))
    assert codes == [200] * 16
    text = client.get("/metrics").text
    sizes = {float(le): float(n) for le, n in
             re.findall(r'kaon_batch_size_bucket\{le="([\d.]+)"\} ([\d.]+)', text)}
    total = float(re.search(r"kaon_batch_size_count ([\d.]+)", text)[1])  # type: ignore[index]
    assert total < 64  # 64 images went through in fewer model calls: batches formed
    assert sizes[1.0] < total  # some batch held more than one image
    assert 'kaon_request_seconds_count{route="/v1/models/{name}/predict",status="200"}' in text
