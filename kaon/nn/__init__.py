"""Specs and models: the declarative training spec and spec → ``torch.nn.Module``."""

from kaon.nn.build import build_model, count_parameters
from kaon.nn.spec import TrainSpec, load_spec, parse_spec

__all__ = ["TrainSpec", "build_model", "count_parameters", "load_spec", "parse_spec"]
