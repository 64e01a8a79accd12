"""``kaon serve``: an HTTP server for a registered model."""

from __future__ import annotations

import typer

from kaon.cli.output import console_err


def serve(
    model: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="Largest request body."),
) -> None:
    """Serve a registered model over HTTP (predict, health, readiness, OpenAPI docs).

    Examples:

        kaon serve mnist-mlp@production --port 8000

        curl -s localhost:8000/readyz
    """
    import uvicorn

    from kaon.registry import get
    from kaon.serve import RegistryPredictor, create_app

    info = get(model)  # fail fast, before binding the port, on an unknown model
    app = create_app(lambda: RegistryPredictor.from_ref(info.ref),
                     max_body=int(max_body_mb * 1024 * 1024))
    console_err.print(f"Serving {info.ref} on http://{host}:{port}  "
                      f"(POST /v1/models/{info.name}/predict, docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
