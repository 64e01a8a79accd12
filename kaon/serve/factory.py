"""Build the server app from a JSON description, in this process or in each replica.

``kaon serve --replicas N`` runs N replica processes, each a uvicorn server on a Unix socket,
behind one front (:mod:`kaon.serve.front`) that restarts a replica that dies. Each replica
loads the model once and batches its own requests.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from kaon.config import get_settings
from kaon.db.models import DEFAULT_WORKSPACE
from kaon.errors import ConfigError
from kaon.procs import usable_cores
from kaon.serve.batching import BatchPolicy


def default_threads(replicas: int) -> int:
    """Torch threads per replica: the cores shared out among the replicas.

    (Leaving a core for HTTP was measured: 3-7% faster for a 34K-parameter CNN, 37-51%
    slower for ResNet-18 on this 2-core machine; docs/benchmarks.md.)
    """
    return max(1, usable_cores() // replicas)


def budget_bodies(config: dict[str, Any]) -> None:
    """This process's request-body budget (``kaon serve --max-bodies-mb``)."""
    from kaon.serve.asgi import BODIES

    BODIES.total = int(config.get("bodies") or BODIES.total)


def build(config: dict[str, Any]) -> FastAPI:
    import torch

    from kaon.nn.devices import resolve_device
    from kaon.serve import RegistryPredictor, create_app, create_service_app
    from kaon.serve.service import load_service

    torch.set_num_threads(int(config.get("threads") or default_threads(1)))
    budget_bodies(config)
    max_body = int(config["max_body"])
    policy = BatchPolicy(**config.get("policy", {}))
    if config["kind"] == "service":  # the flags bound every handler and fill in kaon.Batch
        return create_service_app(load_service(config["target"]), max_body=max_body,
                                  policy=policy)
    ref, workspace = config["target"], config.get("workspace", DEFAULT_WORKSPACE)
    device = resolve_device(str(config.get("device", "cpu")))
    return create_app(lambda: RegistryPredictor.from_ref(ref, workspace, device),
                      max_body=max_body, policy=policy)


def app_from_env() -> FastAPI:
    """uvicorn's factory for replica processes (``KAON_SERVE_CONFIG`` holds the JSON)."""
    from kaon.serve import logs

    logs.configure()
    raw = get_settings().serve_config
    if not raw:
        raise ConfigError("KAON_SERVE_CONFIG is not set.",
                          hint="Start replicas with `kaon serve MODEL --replicas N`.")
    return build(json.loads(raw))
