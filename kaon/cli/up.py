"""``kaon up`` (the platform on one port) and ``kaon worker`` (a job worker on its own)."""

from __future__ import annotations

import typer

from kaon.cli.output import console_err


def up(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8080, "--port", help="TCP port."),
    workers: int = typer.Option(1, "--workers", help="Job-worker processes (0: none)."),
) -> None:
    """Start the platform: control API (/api/v1, docs at /docs), the inference gateway
    (/d/DEPLOYMENT/...), a console page, deployments and job workers.

    On first start it creates the owner account and the `default` workspace and prints an
    admin API key (shown once).

    Examples:

        kaon up --port 8080

        KAON_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/kaon kaon up --workers 2
    """
    import uvicorn

    from kaon.config import get_settings
    from kaon.db.engine import session_scope
    from kaon.errors import ConfigError
    from kaon.net import check_port
    from kaon.platform.server import create_platform_app
    from kaon.platform.workspaces import OWNER_EMAIL, bootstrap
    from kaon.serve import logs
    from kaon.serve.front import SERVER_OPTIONS

    if workers < 0:
        raise ConfigError(f"--workers {workers} must be 0 or more.")
    check_port(host, port)  # before the first start prints its key
    logs.configure()
    with session_scope() as s:
        secret = bootstrap(s)
    url = f"http://{host}:{port}"
    if secret:
        console_err.print(
            f"[bold]First start:[/] created the owner account ({OWNER_EMAIL}) and the "
            f"'default' workspace.\nAdmin API key (shown once, keep it safe):\n\n  {secret}\n\n"
            f"Log in with:  kaon login --url {url} --key {secret}", soft_wrap=True)
    console_err.print(f"Kaon platform on {url}  (API docs {url}/docs, database "
                      f"{get_settings().db_url.split('@')[-1]}, {workers} job worker(s))",
                      soft_wrap=True)
    uvicorn.run(create_platform_app(workers=workers), host=host, port=port,
                timeout_graceful_shutdown=60, **SERVER_OPTIONS)


def worker() -> None:
    """Run one job worker in the foreground: it takes queued jobs from the database and
    runs them (`kaon up` starts its own; add more on other machines sharing the database).

    Example:

        KAON_DATABASE_URL=postgresql+psycopg://postgres@db/kaon kaon worker
    """
    from kaon.platform.worker import main

    console_err.print("Job worker started; Ctrl-C stops it (a running job is requeued).")
    main()
