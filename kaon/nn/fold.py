"""Inference-time rewrites of a trained model that leave its outputs unchanged.

``fold_batchnorm``: in eval mode a BatchNorm is an affine map with fixed statistics, so one
that follows a convolution (or a linear layer) folds into that layer's weights and bias, as
TensorRT, ONNX Runtime and OpenVINO do when they load a model. On this machine's CPU that
ran the ResNet-18 shape 1.06× (one image) and 1.09× (32) faster, the MNIST CNN 1.25× and
1.11× (docs/decisions/0024-fold-batchnorm-for-inference.md).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

log = logging.getLogger(__name__)


def count_batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def fold_batchnorm(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """``module`` (in eval mode) with every BatchNorm that directly follows a convolution or a
    linear layer, and is that layer's only user, folded into it (on a traced copy).

    Returns ``module`` itself when it has no BatchNorm, when it cannot be traced, or when the
    folded copy's outputs on ``example`` (a normalised input batch) are not within a relative
    1e-3 (absolute 1e-4 of the largest output) of the original's: a rewrite that could change
    a prediction is never served. Measured differences are at float32 rounding (~1e-8).
    """
    if module.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    before = count_batchnorms(module)
    if not before:
        return module
    try:
        folded = _fold(module)
        with torch.inference_mode():
            expected, got = module(example), folded(example)
    except Exception as exc:  # any failure keeps the model as trained
        log.warning("BatchNorm not folded (the model kept as trained): %s: %s",
                    type(exc).__name__, exc)
        return module
    scale = max(1.0, float(expected.abs().max()))
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3,
                                                        atol=1e-4 * scale):
        log.warning("BatchNorm not folded: the folded model's outputs differ by up to %.3g",
                    float((got - expected).abs().max()) if got.shape == expected.shape
                    else float("inf"))
        return module
    log.info("folded %d of %d BatchNorm layers into the layers before them",
             before - count_batchnorms(folded), before)
    return folded


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _fold(module: nn.Module) -> fx.GraphModule:
    """Trace a copy of ``module``; replace each (layer → BatchNorm) pair by the folded layer
    (``torch.nn.utils.fusion``) and drop the BatchNorm from the graph."""
    traced = fx.symbolic_trace(copy.deepcopy(module))
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_mean is None:
            continue  # not a BatchNorm, or one without running statistics
        prev = node.args[0] if node.args else None
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue  # its input is not a layer's output that only it reads
        layer = modules[str(prev.target)]
        if isinstance(layer, _CONVS) and isinstance(bn, _NORMS):
            merged: nn.Module = fuse_conv_bn_eval(layer, bn)
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            merged = fuse_linear_bn_eval(layer, bn)
        else:
            continue
        parent, _, name = str(prev.target).rpartition(".")
        setattr(traced.get_submodule(parent) if parent else traced, name, merged)
        node.replace_all_uses_with(prev)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced
