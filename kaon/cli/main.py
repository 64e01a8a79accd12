"""The ``kaon`` command. Each verb group lives in its own module; this one wires them."""

from __future__ import annotations

import sys

import typer
from rich.text import Text

from kaon.cli import (
    account,
    bench,
    data,
    datasets,
    evaluate,
    models,
    serve,
    train,
    tune,
    up,
    workloads,
)
from kaon.cli.output import console_err
from kaon.errors import KaonError

app = typer.Typer(
    name="kaon",
    help="Kaon: train, register and serve deep-learning models.\n\n"
    "Example: kaon train examples/mnist_mlp.yaml",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from kaon import __version__

        print(f"kaon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print Kaon's version and exit.")) -> None:
    """Kaon: train, register and serve deep-learning models.

    Example: kaon train examples/mnist_mlp.yaml
    """


app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(bench.app, name="bench")
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("serve")(serve.serve)
app.command("tune")(tune.tune)
app.command("up")(up.up)
app.command("worker")(up.worker)
# the platform (`kaon up`) from a shell: account, billing, jobs and deployments
app.command("login")(account.login)
app.command("logout")(account.logout)
app.command("whoami")(account.whoami)
app.add_typer(account.keys_app, name="keys")
app.add_typer(account.members_app, name="members")
app.command("plans")(account.plans)
app.command("subscribe")(account.subscribe)
app.command("usage")(account.usage)
app.command("invoices")(account.invoices)
app.add_typer(datasets.app, name="datasets")
app.add_typer(workloads.jobs_app, name="jobs")
app.command("deploy")(workloads.deploy)
app.add_typer(workloads.deployments_app, name="deployments")


def main() -> None:
    """Console-script entry point: run the app and turn KaonErrors into clean exits."""
    try:
        app(standalone_mode=False)
    except KaonError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console_err.print("[yellow]Interrupted.[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        # click's usage errors (typer vendors its own click, so match by behaviour)
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None),
                                                               int):
            exc.show()
            sys.exit(exc.exit_code)
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):  # the database is down or unreachable
            from kaon.db.engine import unreachable

            _fail(unreachable(exc))
        raise


def _fail(exc: KaonError) -> None:
    console_err.print(Text.assemble(("Error: ", "bold red"), exc.message), soft_wrap=True)
    if exc.hint:
        console_err.print(Text.assemble(("Hint: ", "yellow"), exc.hint), soft_wrap=True)
    sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
