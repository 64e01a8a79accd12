"""A model's input signature: what a caller must send, and how it is normalised."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Signature(BaseModel):
    """Images as uint8 (C, H, W) in 0–255; normalised inside Kaon as ``(x/255 - mean) / std``."""

    model_config = ConfigDict(extra="forbid")

    shape: tuple[int, int, int] = Field(description="(channels, height, width)")
    dtype: Literal["uint8"] = "uint8"
    mean: list[float]
    std: list[float]
    class_names: list[str]
    output: Literal["softmax", "sigmoid"] = "softmax"

    def describe(self) -> str:
        c, h, w = self.shape
        return (f"{c}x{h}x{w} {self.dtype} images (channels x height x width, values 0-255), "
                f"{len(self.class_names)} classes")
