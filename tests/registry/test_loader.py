"""``load_model``: a registered version back as a ready-to-run module with its preprocessing."""

from __future__ import annotations

import pytest
import torch

from kaon.errors import ArtifactError, NotFoundError
from kaon.nn.fold import count_batchnorms
from kaon.registry import Signature, load_model
from kaon.registry.artifacts import save_weights
from tests.registry.fixtures import MNIST_SIGNATURE, register_tiny, tiny_model, tiny_spec


def digits(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)


def test_loaded_model_has_the_registered_weights_and_is_in_eval_mode() -> None:
    register_tiny("digits", seed=3)
    loaded = load_model("digits:1")
    expected = tiny_model(tiny_spec("digits"), seed=3).state_dict()
    assert not loaded.module.training
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in expected.items())


def test_predict_proba_normalises_then_applies_softmax() -> None:
    register_tiny("digits")
    loaded = load_model("digits")
    images = digits(5)
    mean, std = MNIST_SIGNATURE.mean[0], MNIST_SIGNATURE.std[0]
    with torch.no_grad():
        expected = torch.softmax(loaded.module((images.float() / 255 - mean) / std), dim=1)
    proba = loaded.predict_proba(images)
    assert proba.shape == (5, 10)
    torch.testing.assert_close(proba, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(proba.sum(1), torch.ones(5, dtype=proba.dtype))


def test_predict_proba_is_the_same_in_small_batches() -> None:
    register_tiny("digits")
    loaded = load_model("digits")
    images = digits(7)
    torch.testing.assert_close(loaded.predict_proba(images, batch_size=3),
                               loaded.predict_proba(images))


def test_predict_proba_of_no_images_is_an_empty_table_with_one_column_per_class() -> None:
    register_tiny("digits")
    assert load_model("digits").predict_proba(digits(0)).shape == (0, 10)


def test_a_sigmoid_model_gives_two_column_probabilities() -> None:
    signature = Signature(shape=(1, 28, 28), mean=[0.5], std=[0.25], output="sigmoid",
                          class_names=["normal", "pneumonia"])
    spec = tiny_spec("xray", loss="binary_cross_entropy")
    register_tiny("xray", spec=spec, signature=signature)
    loaded = load_model("xray")
    proba = loaded.predict_proba(digits(4))
    with torch.no_grad():
        p = torch.sigmoid(loaded.module(loaded.normalizer(digits(4))).view(-1))
    assert proba.shape == (4, 2)
    torch.testing.assert_close(proba[:, 1], p)
    torch.testing.assert_close(proba.sum(1), torch.ones(4))


def test_a_convolutional_model_loads_and_predicts() -> None:
    spec = tiny_spec("cnn", model={"family": "cnn", "channels": [4]})
    register_tiny("cnn", spec=spec)
    proba = load_model("cnn").predict_proba(digits(3))
    torch.testing.assert_close(proba.sum(1), torch.ones(3))


def test_load_by_alias_gets_the_aliased_version() -> None:
    register_tiny("digits", seed=1, alias="production")
    register_tiny("digits", seed=2)
    assert load_model("digits@production").info.version == 1
    assert load_model("digits").info.version == 2


def test_loading_an_unknown_model_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="No model named 'ghost'"):
        load_model("ghost")


def test_weights_replaced_after_registration_are_refused() -> None:
    info = register_tiny("digits")
    other = tiny_model(tiny_spec("digits"), seed=99).state_dict()
    save_weights(other, info.artifact)
    with pytest.raises(ArtifactError, match="does not match its recorded SHA-256"):
        load_model("digits:1")


def test_a_registered_artifact_swapped_for_a_pickle_is_refused() -> None:
    info = register_tiny("digits")
    torch.save(tiny_model(tiny_spec("digits")).state_dict(), info.artifact)
    with pytest.raises(ArtifactError, match="not a safetensors file"):
        load_model("digits:1")


def test_a_batchnorm_model_is_served_folded_with_the_same_probabilities() -> None:
    spec = tiny_spec("bn", model={"family": "cnn", "channels": [4, 8]})
    register_tiny("bn", spec=spec)
    folded, as_trained = load_model("bn"), load_model("bn", fold=False)
    assert count_batchnorms(folded.module) == 0 and count_batchnorms(as_trained.module) > 0
    images = digits(16)
    torch.testing.assert_close(folded.predict_proba(images), as_trained.predict_proba(images),
                               rtol=1e-4, atol=1e-6)
