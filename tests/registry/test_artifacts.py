"""Weights on disk are safetensors only: anything else, or anything altered, is refused."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from kaon.errors import ArtifactError
from kaon.registry.artifacts import check_safetensors, load_weights, save_weights, sha256_file


def state() -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.arange(12, dtype=torch.float32).view(3, 4),
            "layer.bias": torch.tensor([1.0, -1.0, 0.5])}


def saved(tmp_path: Path, name: str = "model.safetensors") -> tuple[Path, str]:
    path = tmp_path / name
    sha, _ = save_weights(state(), path)
    return path, sha


def test_weights_round_trip_exactly(tmp_path: Path) -> None:
    path, sha = saved(tmp_path)
    loaded = load_weights(path, expected_sha256=sha)
    assert loaded.keys() == state().keys()
    assert all(torch.equal(loaded[k], v) for k, v in state().items())


def test_save_reports_the_file_hash_and_size_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "w" / "model.safetensors"
    sha, size = save_weights(state(), path, metadata={"kaon.model": "m:1"})
    assert sha == sha256_file(path) and size == path.stat().st_size
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"kaon.model": "m:1"}


def test_a_pt_file_is_refused_by_its_name(tmp_path: Path) -> None:
    path, _ = saved(tmp_path, "model.pt")
    with pytest.raises(ArtifactError, match=r"Kaon loads only \.safetensors weights"):
        load_weights(path)


@pytest.mark.parametrize("writer", [
    pytest.param(lambda p: torch.save(state(), p), id="torch.save zip"),
    pytest.param(lambda p: p.write_bytes(pickle.dumps({"w": [1.0, 2.0]})), id="raw pickle"),
])
def test_a_pickle_renamed_to_safetensors_is_refused(
        tmp_path: Path, writer: Callable[[Path], object]) -> None:
    path = tmp_path / "model.safetensors"
    writer(path)
    with pytest.raises(ArtifactError, match="not a safetensors file") as info:
        load_weights(path)
    assert info.value.hint and "never loaded" in info.value.hint


def test_a_file_whose_header_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe\x00!" + b"\x00" * 16)
    with pytest.raises(ArtifactError, match="header is not JSON"):
        check_safetensors(path)


@pytest.mark.parametrize("keep", [0, 5, 20])
def test_a_file_truncated_inside_its_header_is_refused(tmp_path: Path, keep: int) -> None:
    path, _ = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ArtifactError, match="not a safetensors file"):
        load_weights(path)


def test_a_file_truncated_inside_its_tensor_data_is_refused(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ArtifactError):
        load_weights(path)


def test_a_file_truncated_inside_its_data_is_refused_when_its_hash_is_known(
        tmp_path: Path) -> None:
    path, sha = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ArtifactError):
        load_weights(path, expected_sha256=sha)


def test_weights_changed_after_registration_fail_the_hash_check(tmp_path: Path) -> None:
    path, sha = saved(tmp_path)
    save_weights({**state(), "layer.bias": torch.zeros(3)}, path)  # still valid safetensors
    with pytest.raises(ArtifactError, match="does not match its recorded SHA-256"):
        load_weights(path, expected_sha256=sha)


def test_a_missing_file_is_an_artifact_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="is missing") as info:
        load_weights(tmp_path / "gone.safetensors")
    assert info.value.hint
