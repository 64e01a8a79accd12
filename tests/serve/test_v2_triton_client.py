"""Triton's own HTTP client (``tritonclient.http``, from PyPI) against a real `kaon serve`:
the Open Inference Protocol as existing KServe/Triton clients speak it, unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from kaon.config import reset_settings
from tests.registry.fixtures import register_tiny
from tests.serve.test_replicas import _start


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("kaon-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KAON_HOME", str(home))
        reset_settings()  # read KAON_HOME now, whatever ran before in this process
        register_tiny("digits")
    reset_settings()
    server, url = _start(["digits"], Path(home), replicas=1)
    try:
        yield url.removeprefix("http://")
    finally:
        server.terminate()
        server.wait(timeout=30)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)


def kaon_predictions(host: str, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    body = httpx.post(f"http://{host}/v1/models/digits/predict",
                      json={"inputs": x.tolist()}, timeout=30).json()["predictions"]
    return (np.array([p["probabilities"] for p in body], dtype=np.float32),
            [p["label"] for p in body])


def test_health_and_metadata_through_the_triton_client(served: str) -> None:
    client = triton.InferenceServerClient(served)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_infer_through_the_triton_client_matches_kaon_predict(
        served: str, binary_in: bool, binary_out: bool) -> None:
    x = images(3)
    expected, labels = kaon_predictions(served, x)
    tensor = triton.InferInput("input", list(x.shape), "UINT8")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_out)
               for n in ("probabilities", "label")]
    result = triton.InferenceServerClient(served).infer("digits", [tensor], outputs=outputs,
                                                        request_id="r-7")
    assert result.get_response()["id"] == "r-7"
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert got == labels


def test_outputs_in_both_layouts_in_one_response(served: str) -> None:
    """Each requested output keeps its own binary_data flag."""
    x = images(2, seed=1)
    expected, labels = kaon_predictions(served, x)
    tensor = triton.InferInput("input", list(x.shape), "UINT8")
    tensor.set_data_from_numpy(x)
    result = triton.InferenceServerClient(served).infer("digits", [tensor], outputs=[
        triton.InferRequestedOutput("probabilities", binary_data=False),
        triton.InferRequestedOutput("label", binary_data=True)])
    by_name = {o["name"]: o for o in result.get_response()["outputs"]}
    assert "data" in by_name["probabilities"]
    assert by_name["label"]["parameters"]["binary_data_size"] == sum(4 + len(s) for s in labels)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    assert [v.decode() for v in result.as_numpy("label")] == labels


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_requests_float_inputs_and_a_version(served: str, compression: str) -> None:
    x = images(4, seed=2)
    expected, _ = kaon_predictions(served, x)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x.astype(np.float32))
    result = triton.InferenceServerClient(served).infer(
        "digits", [tensor], model_version="1", request_compression_algorithm=compression)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


def test_errors_reach_the_triton_client_with_status_and_message(served: str) -> None:
    client = triton.InferenceServerClient(served)
    x = images(1)
    tensor = triton.InferInput("input", list(x.shape), "UINT8")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [tensor])
    assert unknown.value.status() == "404" and "digits" in unknown.value.message()
    with pytest.raises(InferenceServerException) as version:
        client.infer("digits", [tensor], model_version="2")
    assert version.value.status() == "404"
    bad = triton.InferInput("input", [2, 5], "UINT8")
    bad.set_data_from_numpy(np.zeros((2, 5), np.uint8))
    with pytest.raises(InferenceServerException) as shape:
        client.infer("digits", [bad])
    assert shape.value.status() == "400" and "[N, 1, 28, 28]" in shape.value.message()


def test_the_asyncio_triton_client(served: str) -> None:
    x = images(5, seed=3)
    expected, _ = kaon_predictions(served, x)

    async def infer() -> np.ndarray:
        client = triton_aio.InferenceServerClient(served)
        try:
            tensor = triton_aio.InferInput("input", list(x.shape), "UINT8")
            tensor.set_data_from_numpy(x)
            results = await asyncio.gather(*(client.infer("digits", [tensor])
                                             for _ in range(4)))
            return np.stack([r.as_numpy("probabilities") for r in results])
        finally:
            await client.close()

    for probabilities in asyncio.run(infer()):
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)
