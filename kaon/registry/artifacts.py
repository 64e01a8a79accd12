"""Weights on disk: safetensors only. Loading refuses any other format (no pickle, ever)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kaon.errors import ArtifactError

SUFFIX = ".safetensors"
_MAX_HEADER = 100 * 1024 * 1024


def save_weights(state: dict[str, torch.Tensor], path: Path,
                 metadata: dict[str, str] | None = None) -> tuple[str, int]:
    """Write tensors atomically; return (sha256, size in bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp),
              metadata=metadata)
    os.replace(tmp, path)
    return sha256_file(path), path.stat().st_size


def load_weights(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file after checking that it is one (and, optionally, its hash)."""
    check_safetensors(path)
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise ArtifactError(f"Weights file {path} does not match its recorded SHA-256.",
                            hint="The artifact was changed after registration; re-register it.")
    return load_file(str(path))


def check_safetensors(path: Path) -> None:
    """Refuse files that are not safetensors, by name and by header."""
    if not path.is_file():
        raise ArtifactError(f"Weights file {path} is missing.",
                            hint="The model's artifact folder was removed; re-register it.")
    if path.suffix != SUFFIX:
        raise ArtifactError(f"Refusing to load {path}: Kaon loads only {SUFFIX} weights.",
                            hint="Convert the weights with safetensors.torch.save_file.")
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ArtifactError(f"{path} is not a safetensors file (too short).")
        (size,) = struct.unpack("<Q", raw)
        if size > _MAX_HEADER or size > path.stat().st_size - 8:
            raise ArtifactError(f"{path} is not a safetensors file (bad header length).",
                                hint="Pickled (.pt/.pth/.bin) files are never loaded.")
        try:
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, ValueError):
            raise ArtifactError(f"{path} is not a safetensors file (header is not JSON).",
                                hint="Pickled (.pt/.pth/.bin) files are never loaded.") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path} is not a safetensors file (header is not an object).")
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    expected = 8 + size + max(ends, default=0)
    if expected != path.stat().st_size:
        raise ArtifactError(f"{path} is truncated or padded: its header describes {expected} "
                            f"bytes but the file has {path.stat().st_size}.",
                            hint="The file was damaged; re-register or retrain the model.")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
