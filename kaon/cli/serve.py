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
    max_batch_size: int = typer.Option(32, "--max-batch-size", help="Images per model call."),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", help="How long the first image of a batch waits for company."),
    max_queue: int = typer.Option(1024, "--max-queue", help="Queued images before 503s."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds before a request gets 504."),
) -> None:
    """Serve a registered model over HTTP with dynamic batching: Kaon JSON predict, the Open
    Inference Protocol (V2), health, readiness, Prometheus metrics, OpenAPI docs.

    Examples:

        kaon serve mnist-mlp@production --port 8000 --max-batch-size 64 --max-wait-ms 2

        kaon serve examples/services/echo.py:Echo --port 8000

        curl -s localhost:8000/readyz
    """
    import uvicorn

    from kaon.errors import ConfigError
    from kaon.registry import get
    from kaon.serve import RegistryPredictor, create_app, create_service_app
    from kaon.serve.batching import BatchPolicy
    from kaon.serve.service import load_service

    if model.rpartition(":")[0].endswith(".py"):
        service = load_service(model)
        app = create_service_app(service, max_body=int(max_body_mb * 1024 * 1024))
        console_err.print(f"Serving {type(service).__name__} on http://{host}:{port}  "
                          "(docs at /docs)", soft_wrap=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return
    info = get(model)  # fail fast, before binding the port, on an unknown model
    try:
        policy = BatchPolicy(max_batch_size, max_wait_ms, max_queue, timeout)
    except ValueError as exc:
        raise ConfigError(str(exc), hint="Batch size and queue must be ≥ 1, waits ≥ 0.") from None
    app = create_app(lambda: RegistryPredictor.from_ref(info.ref),
                     max_body=int(max_body_mb * 1024 * 1024), policy=policy)
    console_err.print(f"Serving {info.ref} on http://{host}:{port}  "
                      f"(POST /v1/models/{info.name}/predict or /v2/models/{info.name}/infer; "
                      "/metrics; docs at /docs)", soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
