"""Request inputs → a uint8 (N, C, H, W) tensor, checked against the model's signature."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from kaon.errors import SignatureError
from kaon.registry import Signature
from kaon.serve.decode import decode_inputs

# A deliberately non-square signature, so height and width cannot be mixed up.
GRAY = Signature(shape=(1, 4, 5), mean=[0.5], std=[0.5], class_names=["a", "b"])
RGB = Signature(shape=(3, 4, 5), mean=[0.5] * 3, std=[0.5] * 3, class_names=["a", "b"])


# ---- payload helpers (also used by test_app.py) -------------------------------------------------
def b64_image(array: np.ndarray, fmt: str = "PNG") -> str:
    """Encode a uint8 (H, W) or (H, W, C) array as a base64 image string."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def b64_png_header(width: int, height: int) -> str:
    """A tiny grayscale PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
           + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


def gradient(height: int, width: int) -> np.ndarray:
    """A deterministic uint8 (H, W) image whose pixels differ along every row and column."""
    return ((np.arange(height)[:, None] * 7 + np.arange(width)[None, :] * 3) % 256).astype(
        np.uint8)


def mismatch(inputs: list[Any], sig: Signature = GRAY) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        decode_inputs(inputs, sig)
    return info.value


# ---- nested numbers -----------------------------------------------------------------------------
def test_nested_lists_shaped_height_by_width_get_a_channel_axis() -> None:
    image = gradient(4, 5)
    batch = decode_inputs([image.tolist()], GRAY)
    assert batch.dtype == torch.uint8 and batch.shape == (1, 1, 4, 5)
    assert np.array_equal(batch[0, 0].numpy(), image)


def test_nested_lists_shaped_channels_height_width_are_taken_as_is() -> None:
    image = np.stack([gradient(4, 5), 255 - gradient(4, 5), np.zeros((4, 5), np.uint8)])
    batch = decode_inputs([image.tolist()], RGB)
    assert np.array_equal(batch[0].numpy(), image)


def test_fractional_pixel_values_are_rounded() -> None:
    values = np.full((4, 5), 10.6).tolist()
    assert decode_inputs([values], GRAY).unique().tolist() == [11]


def test_several_inputs_form_one_batch_in_order() -> None:
    batch = decode_inputs([np.zeros((4, 5)).tolist(), b64_image(gradient(4, 5)),
                           np.full((4, 5), 255).tolist()], GRAY)
    assert batch.shape == (3, 1, 4, 5)
    assert [int(b.max()) for b in batch] == [0, int(gradient(4, 5).max()), 255]


# ---- images -------------------------------------------------------------------------------------
def test_base64_png_decodes_to_its_exact_pixels() -> None:
    batch = decode_inputs([b64_image(gradient(4, 5))], GRAY)
    assert np.array_equal(batch[0, 0].numpy(), gradient(4, 5))


def test_a_data_uri_prefix_is_accepted() -> None:
    uri = "data:image/png;base64," + b64_image(gradient(4, 5))
    assert np.array_equal(decode_inputs([uri], GRAY)[0, 0].numpy(), gradient(4, 5))


def test_rgb_png_becomes_channels_first_in_rgb_order() -> None:
    hwc = np.stack([gradient(4, 5), 255 - gradient(4, 5), np.full((4, 5), 9, np.uint8)], axis=-1)
    batch = decode_inputs([b64_image(hwc)], RGB)
    assert batch.shape == (1, 3, 4, 5)
    assert np.array_equal(batch[0].numpy(), hwc.transpose(2, 0, 1))


def test_grayscale_jpeg_is_accepted() -> None:
    flat = np.full((4, 5), 128, np.uint8)
    batch = decode_inputs([b64_image(flat, "JPEG")], GRAY)
    assert batch.shape == (1, 1, 4, 5)
    assert abs(int(batch.float().mean()) - 128) <= 2


# ---- mismatches name the input and the expected signature ---------------------------------------
@pytest.mark.parametrize(("payload", "problem"), [
    pytest.param(np.zeros((5, 4)).tolist(), "got shape [5, 4]", id="transposed list"),
    pytest.param(np.zeros((2, 4, 5)).tolist(), "got shape [2, 4, 5]", id="two channels"),
    pytest.param([[0] * 5] * 3 + [[0] * 4], "ragged", id="ragged list"),
    pytest.param([["a"] * 5] * 4, "non-numbers", id="letters"),
    pytest.param(np.full((4, 5), 256).tolist(), "0..255", id="above 255"),
    pytest.param(np.full((4, 5), -1).tolist(), "0..255", id="negative"),
    pytest.param(np.full((4, 5), np.nan).tolist(), "finite", id="nan"),
    pytest.param(b64_image(gradient(5, 4)), "got a 4x5 (width x height) image", id="wrong size"),
    pytest.param(b64_image(np.zeros((4, 5, 3), np.uint8)), "got a RGB image with 3 channel(s)",
                 id="rgb to gray"),
    pytest.param(b64_image(gradient(4, 5), "GIF"), "got a GIF image", id="gif"),
    pytest.param("not base64!", "not valid base64", id="not base64"),
    pytest.param(base64.b64encode(b"hello world").decode(), "not a PNG or JPEG",
                 id="base64 of text"),
    pytest.param(42, "got a int", id="a number"),
])
def test_inputs_that_do_not_fit_the_signature_are_refused(payload: Any, problem: str) -> None:
    error = mismatch([payload])
    assert problem in error.message
    assert "1x4x5 uint8 images" in error.message
    assert error.hint and "[4, 5] or [1, 4, 5]" in error.hint


def test_a_gray_png_sent_to_an_rgb_model_is_refused() -> None:
    error = mismatch([b64_image(gradient(4, 5))], RGB)
    assert "got a L image with 1 channel(s)" in error.message
    assert "3x4x5" in error.message
    assert error.hint and "RGB PNG/JPEG of 5x4 pixels" in error.hint


def test_the_error_names_the_index_of_the_bad_input() -> None:
    good = np.zeros((4, 5)).tolist()
    assert mismatch([good, good, "%%%"]).message.startswith("inputs[2]:")


def test_numbers_sent_as_strings_are_refused() -> None:
    mismatch([[["12"] * 5] * 4])


def test_a_png_claiming_a_gigantic_size_is_refused_as_a_mismatch() -> None:
    mismatch([b64_png_header(30000, 30000)])
