"""``kaon serve``: an HTTP server for a registered model or a ``kaon.Service`` class."""

from __future__ import annotations

import typer

from kaon.cli.output import console_err


def serve(
    model: str = typer.Argument(
        ..., help="NAME, NAME:VERSION or NAME@ALIAS of a registered model, or FILE.py:Class."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="Largest request body."),
    max_bodies_mb: float = typer.Option(
        512.0, "--max-bodies-mb",
        help="Request bodies one server process holds at once (being read, or waiting for "
             "their answer); past it, 503 with Retry-After. One body alone always fits."),
    max_batch_size: int = typer.Option(
        32, "--max-batch-size",
        help="Images per model call (a service: items per batched-handler call, unless its "
             "kaon.Batch sets its own)."),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", help="How long the first image of a batch waits for company."),
    max_queue: int = typer.Option(
        1024, "--max-queue",
        help="Queued images before 503s (a service: queued items per batched handler, or "
             "running and waiting calls per other handler)."),
    timeout: float = typer.Option(
        30.0, "--timeout", help="Seconds before a request gets 504 (a service's streams: none)."),
    threads: int = typer.Option(
        0, "--threads", help="Torch threads per replica (0: the cores shared out among the "
                             "replicas)."),
    device: str = typer.Option(
        "auto", "--device", help="auto (the GPU when PyTorch sees one), cpu, cuda or cuda:N. "
                                 "A registered model's; a service picks its own in setup()."),
    replicas: int = typer.Option(
        1, "--replicas",
        help="Replica processes behind one front on the port; a dead one is restarted."),
) -> None:
    """Serve a registered model over HTTP with dynamic batching: Kaon JSON predict, the Open
    Inference Protocol (V2), health, readiness, Prometheus metrics, OpenAPI docs.

    Examples:

        kaon serve mnist-mlp@production --port 8000 --max-batch-size 64 --max-wait-ms 2

        kaon serve examples/services/echo.py:Echo --port 8000 --timeout 10

        kaon serve mnist-mlp@production --replicas 2

        kaon serve mnist-mlp@production --max-body-mb 64 --max-bodies-mb 2048

        kaon serve mnist-mlp@production --device cuda:0

        curl -s localhost:8000/readyz
    """
    import uvicorn

    from kaon.errors import ConfigError
    from kaon.net import check_port
    from kaon.serve import front, logs
    from kaon.serve.batching import BatchPolicy
    from kaon.serve.factory import build, default_threads
    from kaon.serve.front import SERVER_OPTIONS

    logs.configure()  # one JSON line per request on stderr
    if replicas < 1:
        raise ConfigError(f"--replicas {replicas} must be at least 1.")
    if threads < 0:
        raise ConfigError(f"--threads {threads} must be 0 (the cores shared out) or more.")
    check_port(host, port)  # before the model loads
    try:
        if timeout <= 0:
            raise ValueError(f"--timeout {timeout} must be more than 0")
        policy = BatchPolicy(max_batch_size, max_wait_ms, max_queue, timeout)
    except ValueError as exc:
        raise ConfigError(str(exc), hint="Batch size and queue must be ≥ 1, waits ≥ 0, "
                                         "the timeout > 0.") from None
    if max_body_mb <= 0 or max_bodies_mb <= 0:
        raise ConfigError(f"--max-body-mb {max_body_mb:g} and --max-bodies-mb "
                          f"{max_bodies_mb:g} must both be more than 0.",
                          hint="Example: --max-body-mb 16 --max-bodies-mb 512")
    max_body = int(max_body_mb * 1024 * 1024)
    config: dict[str, object] = {"target": model, "max_body": max_body,
                                 "bodies": max(1, int(max_bodies_mb * 1024 * 1024)),
                                 "policy": policy.__dict__}
    if model.endswith(".py"):
        raise ConfigError(f"{model!r} names a file but not its class.",
                          hint=f"Add the class: kaon serve {model}:ClassName")
    if model.rpartition(":")[0].endswith(".py"):
        name, routes = _service(config)
    else:
        name, routes = _model(config, device)
    config["threads"] = threads or default_threads(replicas)
    console_err.print(f"Serving {name} on http://{host}:{port} with {replicas} "
                      f"replica(s)  ({routes})", soft_wrap=True)
    if replicas == 1:
        # bounded, as the front's: an open event stream has no deadline of its own
        uvicorn.run(build(config), host=host, port=port,
                    timeout_graceful_shutdown=int(timeout) + 10, **SERVER_OPTIONS)
        return
    front.run(config, replicas, host, port, max_body, timeout)


def _service(config: dict[str, object]) -> tuple[str, str]:
    """A ``FILE.py:Class`` target: its class name and routes; fails fast on a bad one."""
    from kaon.serve.service import endpoints, load_service

    service = load_service(str(config["target"]))
    config["kind"] = "service"
    paths = ", ".join(f"POST /{ep.path}" for ep in endpoints(service))
    return type(service).__name__, f"{paths}, /metrics, docs at /docs"


def _model(config: dict[str, object], device: str) -> tuple[str, str]:
    """A registered model: its reference and routes; fails fast, before binding the port."""
    from kaon.nn.devices import resolve_device
    from kaon.registry import get
    from kaon.registry.artifacts import check_safetensors

    info = get(str(config["target"]))
    check_safetensors(info.artifact)  # a missing or broken file: refused here, not at /readyz
    config.update(kind="model", target=info.ref, device=str(resolve_device(device)))
    return info.ref, (f"POST /v1/models/{info.name}/predict or /v2/models/{info.name}/infer, "
                      f"WS /v1/models/{info.name}/stream, /metrics, docs at /docs")
