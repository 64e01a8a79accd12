"""The spine end to end: real MNIST slice → train → register → `kaon serve` on loopback → HTTP."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from kaon import Client
from kaon.config import reset_settings
from kaon.data import load_dataset
from kaon.errors import NotFoundError, SignatureError
from kaon.net import free_port
from kaon.nn.spec import parse_spec
from kaon.train import TrainResult, train
from tests.conftest import SHARED_DATASETS


@pytest.fixture(scope="module")
def served_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """Train once for the module, then serve that model from a real `kaon serve` process."""
    if not (SHARED_DATASETS / "mnist").is_dir():
        pytest.skip("real MNIST not found")
    kaon_home = tmp_path_factory.mktemp("e2e-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KAON_HOME", str(kaon_home))
        mp.setenv("KAON_DATA_PATH", str(SHARED_DATASETS))
        mp.setenv("KAON_DOWNLOAD", "false")
        reset_settings()
        result = _train()
    reset_settings()
    assert result.model == "mnist-e2e:1"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kaon.cli.main", "serve", "mnist-e2e@production",
         "--port", str(port)],
        env={**os.environ, "KAON_HOME": str(kaon_home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # (a full pipe would block it)
    client = Client(f"http://127.0.0.1:{port}", timeout=30)
    try:
        client.wait_ready(timeout=60)
        yield client
    finally:
        client.close()
        server.terminate()
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)  # a clean shutdown


def _train() -> TrainResult:
    spec = parse_spec({
        "name": "mnist-e2e",
        "data": {"dataset": "mnist", "limit": 6000, "val_fraction": 0.1},
        "model": {"family": "mlp", "hidden": [64]},
        "schedule": {"name": "cosine"}, "epochs": 2, "batch_size": 64,
        "register": {"alias": "production"},
    })
    return train(spec)


def test_served_model_classifies_real_test_images_sent_as_numbers(served_model: Client) -> None:
    test = load_dataset("mnist").splits["test"]
    images, labels = test.images[:200, 0].numpy(), test.labels[:200].tolist()
    predictions = served_model.predict("mnist-e2e", images)
    accuracy = np.mean([p.index == y for p, y in zip(predictions, labels, strict=True)])
    assert accuracy > 0.85
    assert all(abs(sum(p.probabilities) - 1) < 1e-4 for p in predictions)


def test_served_model_accepts_png_images(served_model: Client) -> None:
    test = load_dataset("mnist").splits["test"]
    pngs = []
    for img in test.images[:20, 0].numpy():
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        pngs.append(buf.getvalue())
    by_png = served_model.predict("mnist-e2e", pngs)
    by_numbers = served_model.predict("mnist-e2e", test.images[:20, 0].numpy())
    assert [p.label for p in by_png] == [p.label for p in by_numbers]


def test_wrong_image_size_is_a_422_naming_the_signature(served_model: Client) -> None:
    with pytest.raises(SignatureError, match="1x28x28"):
        served_model.predict("mnist-e2e", np.zeros((1, 32, 32), dtype=np.uint8))


def test_unknown_model_is_a_404(served_model: Client) -> None:
    with pytest.raises(NotFoundError, match="mnist-e2e"):
        served_model.predict("cifar", np.zeros((1, 28, 28), dtype=np.uint8))


def test_open_inference_protocol_round_trip_with_a_plain_http_client(
        served_model: Client) -> None:
    import httpx

    test = load_dataset("mnist").splits["test"]
    images, labels = test.images[:50].numpy(), test.labels[:50].tolist()
    body = {"inputs": [{"name": "input", "datatype": "UINT8", "shape": list(images.shape),
                        "data": images.reshape(-1).tolist()}]}
    base = str(served_model._http.base_url)
    assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}
    reply = httpx.post(f"{base}/v2/models/mnist-e2e/infer", json=body, timeout=30).json()
    label = next(o for o in reply["outputs"] if o["name"] == "label")
    assert np.mean([int(a) == b for a, b in zip(label["data"], labels, strict=True)]) > 0.8


def test_model_endpoint_reports_version_and_signature(served_model: Client) -> None:
    info = served_model.model("mnist-e2e")
    assert info["version"] == 1
    assert info["signature"]["shape"] == [1, 28, 28]


def test_the_load_generator_measures_the_served_model(served_model: Client) -> None:
    import asyncio

    from kaon.serve.loadgen import measure

    url = f"{served_model._http.base_url}/v1/models/mnist-e2e/predict"
    body = {"inputs": [np.zeros((28, 28), dtype=int).tolist()]}
    levels = asyncio.run(measure(url, body, [1, 4], window_s=0.3, warmup_s=0.2,
                                 max_windows=4))
    assert [lv.concurrency for lv in levels] == [1, 4]
    assert all(lv.requests_per_s > 0 and lv.errors == 0 and lv.windows <= 4 for lv in levels)
    assert all(lv.p99_ms >= lv.p50_ms > 0 for lv in levels)
