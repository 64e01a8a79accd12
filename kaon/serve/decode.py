"""Request inputs → one uint8 (N, C, H, W) tensor, checked against the model's signature."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from kaon.errors import SignatureError
from kaon.registry.signature import Signature

_MODES = {1: "L", 3: "RGB"}


def decode_inputs(inputs: list[Any], sig: Signature) -> torch.Tensor:
    """Each input is a base64 PNG/JPEG string or nested numbers shaped (H, W) or (C, H, W)."""
    arrays = [decode_one(item, sig, i) for i, item in enumerate(inputs)]
    return torch.from_numpy(np.stack(arrays))


def decode_one(item: Any, sig: Signature, index: int) -> np.ndarray:
    if isinstance(item, str):
        return _decode_image(item, sig, index)
    if isinstance(item, list):
        return _decode_numbers(item, sig, index)
    raise _mismatch(index, f"got a {type(item).__name__}", sig)


def _decode_image(text: str, sig: Signature, index: int) -> np.ndarray:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _mismatch(index, "the string is not valid base64", sig) from None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            mode, size = img.mode, img.size
            if img.format not in ("PNG", "JPEG"):
                raise _mismatch(index, f"got a {img.format} image (send PNG or JPEG)", sig)
            c, h, w = sig.shape
            want = _MODES.get(c)
            if mode != want:
                raise _mismatch(index, f"got a {mode} image with {len(img.getbands())} "
                                       f"channel(s)", sig)
            if size != (w, h):
                raise _mismatch(index, f"got a {size[0]}x{size[1]} (width x height) image", sig)
            img.load()  # decode only once the header says the size is right
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise _mismatch(index, "the bytes are not a PNG or JPEG image", sig) from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _decode_numbers(values: list[Any], sig: Signature, index: int) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise _mismatch(index, "the nested lists are ragged or hold non-numbers", sig) from None
    if array.dtype.kind not in "iuf":  # strings, booleans, objects (ragged lists)
        raise _mismatch(index, "the nested lists are ragged or hold non-numbers", sig)
    array = array.astype(np.float64)
    c, h, w = sig.shape
    if array.shape == (h, w) and c == 1:
        array = array[None]
    if array.shape != (c, h, w):
        raise _mismatch(index, f"got shape {list(array.shape)}", sig)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise _mismatch(index, "values must be finite pixel values in 0..255", sig)
    return np.rint(array).astype(np.uint8)


def _mismatch(index: int, problem: str, sig: Signature) -> SignatureError:
    c, h, w = sig.shape
    shapes = f"[{h}, {w}] or [{c}, {h}, {w}]" if c == 1 else f"[{c}, {h}, {w}]"
    return SignatureError(
        f"inputs[{index}]: {problem}; the model expects {sig.describe()}.",
        hint=f"Send a base64 {_MODES.get(c, '?')} PNG/JPEG of {w}x{h} pixels, "
             f"or nested numbers shaped {shapes}.",
    )
