"""Platform work verbs: ``kaon jobs …``, ``kaon deploy`` and ``kaon deployments …`` (against
``kaon up``'s control API; workers and the deployment runtime act on what they record)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kaon.cli.choices import JobKind, JobState
from kaon.cli.output import confirm, console, console_err, print_json
from kaon.cli.remote import Json, Key, Url, connect, when

jobs_app = typer.Typer(help="Training and tuning jobs on the platform's workers.\n\n"
                            "Example: kaon jobs submit examples/mnist_mlp.yaml",
                       no_args_is_help=True)
deployments_app = typer.Typer(help="Deployments: registered models served behind the "
                                   "gateway.\n\nExample: kaon deployments list",
                              no_args_is_help=True)
FINAL = ("succeeded", "failed", "cancelled")


def _job_table(rows: list[dict[str, Any]], title: str) -> Table:
    errors = any(j["error"] for j in rows)
    table = Table(title=title)
    for col in ("id", "kind", "state", "tries", "model", "seconds", "created", "error"):
        if col != "error" or errors:
            table.add_column(col, justify="right" if col == "seconds" else "left",
                             no_wrap=col in ("id", "state", "model", "created"))
    for j in rows:
        result = j["result"] or {}
        cells = [j["id"], j["kind"], j["state"] + (" (cancel requested)" if
                                                   j["cancel_requested"] and
                                                   j["state"] not in FINAL else ""),
                 f"{j['attempts']}/{j['max_attempts']}",
                 f"{result['model']}:{result.get('version')}" if result.get("model") else "",
                 f"{j['compute_seconds']:.1f}", when(j["created_at"])]
        table.add_row(*cells, *([(j["error"] or "")[:60]] if errors else []))
    return table


def _job_detail(job: dict[str, Any]) -> Table:
    import json

    table = Table(title=f"job {job['id']}", show_header=False)
    result = job["result"] or {}
    rows: dict[str, Any] = {
        "kind": job["kind"], "state": job["state"] + (" (cancel requested)" if
                                                      job["cancel_requested"] and
                                                      job["state"] not in FINAL else ""),
        "attempts": f"{job['attempts']} of {job['max_attempts']}", "worker": job["worker_id"],
        "run": job["run_id"], "compute seconds": f"{job['compute_seconds']:.1f}",
        "created": when(job["created_at"]), "started": when(job["started_at"]),
        "finished": when(job["finished_at"]), "error": job["error"],
        "model": result.get("model") and f"{result['model']}:{result.get('version')}",
    }
    for name, value in (result.get("metrics") or {}).items():
        if name != "model":
            rows[name] = f"{value:.4f}" if isinstance(value, float) else value
    rows["spec"] = json.dumps(job["spec"])
    for name, value in rows.items():
        if value not in (None, ""):
            table.add_row(name, str(value))
    return table


# ---- jobs ------------------------------------------------------------------------------------
@jobs_app.command("submit")
def jobs_submit(
    spec: Annotated[Path, typer.Argument(help="A training spec (YAML), or a tuning request "
                                              "with --kind tune.")],
    kind: Annotated[JobKind, typer.Option("--kind", help="A training or a tuning job.")
                    ] = JobKind.train,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, max=10,
                                              help="Tries before the job fails.")] = 3,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Queue a training (or tuning) job; the server checks the spec first (exit 2 naming each
    bad field). Needs the train scope.

    Examples:

        kaon jobs submit examples/mnist_mlp.yaml

        kaon jobs submit examples/mnist_mlp.yaml --max-attempts 1 --json
    """
    with connect(url, key) as client:
        job = client.submit_job(spec, kind=kind.value, max_attempts=max_attempts)
    if json_:
        print_json(job)
    else:
        console.print(f"Queued {job['kind']} job [bold]{job['id']}[/] ({job['state']}). "
                      f"Follow it with: kaon jobs show {job['id']} --wait", soft_wrap=True)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[JobState | None, typer.Option(
        "--state", help="Only the jobs in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Jobs, newest first.

    Examples:

        kaon jobs list

        kaon jobs list --state running --json
    """
    with connect(url, key) as client:
        rows = client.jobs(state.value if state else None, limit)
    if json_:
        print_json(rows)
        return
    console.print(_job_table(rows, "jobs") if rows else
                  "No jobs. Submit one: kaon jobs submit SPEC.yaml")


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id (job-…).")],
    wait: Annotated[bool, typer.Option("--wait", help="Poll until the job ends; print each "
                                                      "state change.")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds --wait waits "
                                                  "(default: no limit).")] = None,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """One job: state, attempts, run, result or error. With --wait, poll until it ends
    (exit 1 if it failed or was cancelled).

    Examples:

        kaon jobs show job-0123456789ab

        kaon jobs show job-0123456789ab --wait
    """
    import time

    from kaon.errors import KaonError, UnavailableError

    with connect(url, key) as client:
        job = client.job(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while wait and job["state"] not in FINAL:
            if job["state"] != last and not json_:
                console_err.print(f"{job['id']}: {job['state']} (attempt {job['attempts']} "
                                  f"of {job['max_attempts']})")
            last = job["state"]
            if deadline is not None and time.monotonic() > deadline:
                raise UnavailableError(f"Job {job_id} is still {job['state']} after "
                                       f"{timeout:g}s.", hint="Is a job worker running?")
            time.sleep(2.0)
            job = client.job(job_id)
    if json_:
        print_json(job)
    else:
        console.print(_job_detail(job))
    if wait and job["state"] != "succeeded":
        raise KaonError(f"Job {job['id']} {job['state']}.", hint=job["error"])


@jobs_app.command("logs")
def jobs_logs(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id (job-…).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job "
                                                                "ends.")] = False,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Start at this byte.")] = 0,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """The job's log: worker lines and one line per epoch. With --follow, print it as it
    grows until the job ends (exit 1 if it failed or was cancelled).

    Examples:

        kaon jobs logs job-0123456789ab

        kaon jobs logs job-0123456789ab --follow
    """
    from kaon.errors import KaonError

    with connect(url, key) as client:
        if json_:
            print_json(client.job_logs(job_id, offset))
            return
        if not follow:
            chunk = client.job_logs(job_id, offset)
            print(chunk["text"], end="", flush=True)
            return
        for text in client.follow_job_logs(job_id, offset):
            print(text, end="", flush=True)
        job = client.job(job_id)
    if job["state"] != "succeeded":
        raise KaonError(f"Job {job['id']} {job['state']}.", hint=job["error"])


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id (job-…).")],
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Cancel a queued job now, or ask a running one to stop (it is checkpointed).

    Example: kaon jobs cancel job-0123456789ab
    """
    with connect(url, key) as client:
        job = client.cancel_job(job_id)
    if json_:
        print_json(job)
    elif job["state"] == "cancelled":
        console.print(f"Cancelled {job['id']}.")
    else:
        console.print(f"Asked {job['id']} ({job['state']}) to stop; it ends shortly.")


# ---- deployments -----------------------------------------------------------------------------
def _deployment_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("name", "model", "replicas", "max batch", "max wait ms", "state", "updated"):
        table.add_column(col, no_wrap=col in ("name", "model", "state"))
    for d in rows:
        table.add_row(d["name"], f"{d['model']}:{d['version']}", str(d["replicas"]),
                      str(d["max_batch_size"]), f"{d['max_wait_ms']:g}", d["state"],
                      when(d["updated_at"]))
    return table


def deploy(
    model: Annotated[str, typer.Argument(metavar="MODEL[:VERSION]",
                                         help="A registered model (latest version by default).")],
    name: Annotated[str | None, typer.Option("--name", help="Deployment name (default: the "
                                                            "model's name).")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="Server processes.")] = 1,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1,
                                                help="Images per model call.")] = 32,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0,
                                               help="How long a batch waits to fill.")] = 5.0,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is ready.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 120.0,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Deploy a registered model behind the gateway, within the plan's limits (needs the
    deploy scope). Inference: POST /d/NAME/v1/models/MODEL/predict with an inference key.

    Examples:

        kaon deploy mnist-mlp:2 --name digits --wait

        kaon deploy mnist-mlp --replicas 2 --max-batch-size 64 --json
    """
    with connect(url, key) as client:
        dep = client.deploy(model, name=name, replicas=replicas, max_batch_size=max_batch_size,
                            max_wait_ms=max_wait_ms)
        if wait:
            if not json_:
                console_err.print(f"Deployment {dep['name']} is {dep['state']}; waiting "
                                  "until it is ready…")
            dep = client.wait_deployment_ready(dep["name"], timeout=timeout)
        base = client.url
    if json_:
        print_json(dep)
        return
    console.print(_deployment_table([dep], "deployment"))
    console.print(f"Inference: POST {base}/d/{dep['name']}/v1/models/{dep['model']}/predict"
                  + ("" if dep["state"] == "ready" else
                     f"  (once ready: kaon deployments show {dep['name']})"), soft_wrap=True)


@deployments_app.command("list")
def deployments_list(url: Url = None, key: Key = None, json_: Json = False) -> None:
    """The workspace's deployments and their state (pending, starting, ready, failed).

    Example: kaon deployments list
    """
    with connect(url, key) as client:
        rows = client.deployments()
    if json_:
        print_json(rows)
        return
    console.print(_deployment_table(rows, "deployments") if rows else
                  "No deployments. Deploy a model: kaon deploy MODEL[:VERSION] --wait")


@deployments_app.command("show")
def deployments_show(
    name: Annotated[str, typer.Argument(help="The deployment's name.")],
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """One deployment.

    Example: kaon deployments show digits --json
    """
    with connect(url, key) as client:
        dep = client.deployment(name)
    print_json(dep) if json_ else console.print(_deployment_table([dep], "deployment"))


@deployments_app.command("scale")
def deployments_scale(
    name: Annotated[str, typer.Argument(help="The deployment's name.")],
    replicas: Annotated[int | None, typer.Argument(help="New replica count.")] = None,
    max_batch_size: Annotated[int | None, typer.Option("--max-batch-size", min=1)] = None,
    max_wait_ms: Annotated[float | None, typer.Option("--max-wait-ms", min=0)] = None,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Change a deployment's replicas and/or batching; the runtime follows within a second.

    Examples:

        kaon deployments scale digits 3

        kaon deployments scale digits --max-batch-size 64 --max-wait-ms 2
    """
    from kaon.errors import ConfigError

    if replicas is None and max_batch_size is None and max_wait_ms is None:
        raise ConfigError("Nothing to change.",
                          hint="Give REPLICAS, --max-batch-size or --max-wait-ms.")
    with connect(url, key) as client:
        dep = client.scale(name, replicas, max_batch_size, max_wait_ms)
    print_json(dep) if json_ else console.print(_deployment_table([dep], "deployment"))


@deployments_app.command("delete")
def deployments_delete(
    name: Annotated[str, typer.Argument(help="The deployment's name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    url: Url = None, key: Key = None, json_: Json = False,
) -> None:
    """Delete a deployment; its servers stop (the registered model stays).

    Example: kaon deployments delete digits --yes
    """
    if not yes:
        confirm(f"Delete deployment {name}?")
    with connect(url, key) as client:
        client.delete_deployment(name)
    print_json({"deleted": name}) if json_ else console.print(f"Deleted deployment {name}.")
