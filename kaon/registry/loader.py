"""Registered model → ready-to-run ``torch.nn.Module`` (weights from safetensors only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kaon.db.models import DEFAULT_WORKSPACE
from kaon.nn.build import build_model
from kaon.nn.fold import fold_batchnorm
from kaon.nn.preprocess import Normalizer, prefers_channels_last
from kaon.nn.spec import parse_spec
from kaon.registry.artifacts import load_weights
from kaon.registry.store import ModelInfo, get


@dataclass
class LoadedModel:
    """A model in eval mode with the preprocessing its signature prescribes."""

    info: ModelInfo
    module: nn.Module
    normalizer: Normalizer

    @torch.inference_mode()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """uint8 (N, C, H, W) → class probabilities (N, num_classes)."""
        outs = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size].to(self.device, non_blocking=True)
            logits = self.module(self.normalizer(chunk))
            outs.append(logits_to_proba(logits, self.info.signature.output))
        if not outs:
            return torch.empty(0, len(self.info.signature.class_names))
        return torch.cat(outs).cpu()  # one copy back from an accelerator

    @property
    def device(self) -> torch.device:
        return self.normalizer.scale.device


def logits_to_proba(logits: torch.Tensor, output: str) -> torch.Tensor:
    if output == "sigmoid":
        p = torch.sigmoid(logits.float().view(-1))
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)


def load_model(ref: str, workspace: str = DEFAULT_WORKSPACE,
               device: torch.device | str = "cpu", fold: bool = True) -> LoadedModel:
    """The registered version ``ref`` of ``workspace``, in eval mode on ``device``; with
    ``fold``, its BatchNorm layers folded into the layers before them (the same outputs,
    fewer operations: :func:`kaon.nn.fold.fold_batchnorm`)."""
    info = get(ref, workspace)
    spec = parse_spec(info.spec, source=f"registry {info.ref}")
    sig = info.signature
    module = build_model(spec, sig.shape, len(sig.class_names))
    module.load_state_dict(load_weights(info.artifact, info.sha256), strict=True)
    module.eval().to(device)
    if fold:  # checked on a fixed batch, so loading leaves the global random state alone
        example = torch.randn(2, *sig.shape, generator=torch.Generator().manual_seed(0))
        module = fold_batchnorm(module, example.to(device))
    channels_last = prefers_channels_last(module)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return LoadedModel(info, module, Normalizer(sig.mean, sig.std, device=device,
                                                channels_last=channels_last))
