"""The platform verbs (login, keys, plans, subscribe, usage, invoices, jobs, deploy,
deployments, members) against one real ``kaon up`` process.

Most run in-process through typer's CliRunner; where the exit code and stderr matter they
run as ``python -m kaon.cli.main`` subprocesses, whose ``main()`` maps KaonError to codes.
Each test has its own KAON_HOME, so its own credentials file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from kaon import Client
from kaon.cli.main import app
from kaon.errors import ConfigError, NotFoundError
from kaon.platform.errors import AuthError, PlanLimitError
from tests.platform.platform_server import Platform, backdate_plan_changes, running_platform

runner = CliRunner()
PLATFORM_VERBS = [
    ["login"], ["logout"], ["whoami"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"],
    ["members", "list"], ["members", "add"], ["members", "remove"], ["plans"], ["subscribe"],
    ["usage"], ["invoices"], ["datasets", "upload"], ["datasets", "list"],
    ["datasets", "delete"], ["jobs", "submit"], ["jobs", "list"], ["jobs", "show"],
    ["jobs", "logs"], ["jobs", "cancel"], ["deploy"], ["deployments", "list"],
    ["deployments", "show"], ["deployments", "scale"], ["deployments", "delete"]]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("cli-platform")) as p:
        yield p


@pytest.fixture(autouse=True)
def no_platform_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAON_URL", raising=False)
    monkeypatch.delenv("KAON_API_KEY", raising=False)


@pytest.fixture
def logged_in(platform: Platform) -> Platform:
    result = kaon("login", "--url", platform.url, "--key", platform.key)
    assert result.exit_code == 0, result.output
    return platform


def kaon(*args: str) -> Any:
    return runner.invoke(app, list(args))


def kaon_json(*args: str) -> Any:
    result = kaon(*args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def kaon_process(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``kaon ARGS`` as its own process (KAON_HOME: this test's), for exit codes and stderr."""
    environ = {k: v for k, v in os.environ.items() if k not in ("KAON_URL", "KAON_API_KEY")}
    return subprocess.run([sys.executable, "-m", "kaon.cli.main", *args], capture_output=True,
                          text=True, timeout=120, env={**environ, **env})


# ---- no server needed ------------------------------------------------------------------------
@pytest.mark.parametrize("verb", PLATFORM_VERBS, ids=" ".join)
def test_every_platform_verb_has_help_with_an_example(verb: list[str]) -> None:
    result = kaon(*verb, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "--json" in result.output


def test_without_credentials_the_error_says_to_run_kaon_login(tmp_path: Path) -> None:
    done = kaon_process("deployments", "list")
    assert done.returncode == AuthError.exit_code, done.stderr
    assert "Not logged in" in done.stderr and "kaon login" in done.stderr
    assert done.stdout == ""


def test_money_is_printed_exactly_at_any_size() -> None:
    from kaon.cli.remote import money

    assert money(2**53 + 1) == "$90,071,992,547,409.93"  # a float would print .94
    assert money(-3267) == "-$32.67" and money(5) == "$0.05" and money(0) == "$0.00"
    assert money(123456, "eur") == "EUR 1,234.56" and money(None) == ""


def test_subscribe_needs_a_plan_or_cancel() -> None:
    result = kaon("subscribe", "--key", "kaon_x")
    assert isinstance(result.exception, ConfigError)


# ---- a real platform -------------------------------------------------------------------------
@pytest.mark.slow
def test_login_saves_0600_credentials_and_whoami_works(platform: Platform,
                                                       kaon_home: Path) -> None:
    result = kaon("login", "--url", platform.url + "/", "--key", platform.key)
    assert result.exit_code == 0, result.output
    assert "owner@localhost" in result.output
    saved = kaon_home / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"url": platform.url, "key": platform.key}
    me = kaon_json("whoami")
    assert me["email"] == "owner@localhost" and me["url"] == platform.url
    assert me["workspace"]["name"] == "default"
    table = kaon("whoami")
    assert "owner@localhost" in table.output and "admin" in table.output
    done = kaon_process("whoami", "--json")  # a new process reads the saved credentials
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["role"] == "owner"
    assert kaon("logout").exit_code == 0
    assert not saved.exists()
    assert isinstance(kaon("whoami").exception, AuthError)


def test_login_to_a_server_that_is_not_kaon_saves_nothing(kaon_home: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from kaon.errors import UnavailableError

    class Welcome(BaseHTTPRequestHandler):  # 200 and a web page, whatever is asked
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>Welcome to nginx!</html>")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Welcome)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = kaon_process("login", "--url", f"http://127.0.0.1:{server.server_port}",
                            "--key", "kaon_0123456789ab_" + "x" * 43)
    finally:
        server.shutdown()
    assert done.returncode == UnavailableError.exit_code, done.stderr
    assert "not a Kaon server" in done.stderr and "Traceback" not in done.stderr
    assert not (kaon_home / "credentials.json").exists()


@pytest.mark.slow
def test_login_with_a_wrong_key_saves_nothing(platform: Platform, kaon_home: Path) -> None:
    done = kaon_process("login", "--url", platform.url, "--key",
                        "kaon_0123456789ab_" + "x" * 43)
    assert done.returncode == AuthError.exit_code, done.stderr
    assert "refused this key" in done.stderr and "kaon keys create" in done.stderr
    assert "Authorization: Bearer" not in done.stderr  # the API's hint is for HTTP callers
    assert not (kaon_home / "credentials.json").exists()


@pytest.mark.slow
def test_login_to_a_url_without_the_platform_api_says_so(platform: Platform,
                                                         kaon_home: Path) -> None:
    done = kaon_process("login", "--url", platform.url + "/elsewhere", "--key", platform.key)
    assert done.returncode == NotFoundError.exit_code, done.stderr
    assert "is not a Kaon platform" in done.stderr and "kaon up" in done.stderr
    assert not (kaon_home / "credentials.json").exists()


@pytest.mark.slow
def test_options_and_environment_come_before_saved_credentials(logged_in: Platform) -> None:
    made = kaon_json("keys", "create", "reader", "--scope", "read")
    assert kaon_json("whoami", "--key", made["secret"])["scopes"] == ["read"]
    done = kaon_process("whoami", "--json", KAON_URL=logged_in.url, KAON_API_KEY=made["secret"])
    assert json.loads(done.stdout.splitlines()[-1])["scopes"] == ["read"]
    # a saved key is never sent to another URL
    other = kaon_process("whoami", "--url", "http://127.0.0.1:9")
    assert other.returncode == AuthError.exit_code and "kaon login" in other.stderr


@pytest.mark.slow
def test_keys_create_list_revoke(logged_in: Platform) -> None:
    result = kaon("keys", "create", "ci", "--scope", "inference", "--scope", "train")
    assert result.exit_code == 0, result.output
    assert "not shown again" in result.stderr
    made = kaon_json("keys", "create", "ci-json", "--scope", "inference", "--scope", "train")
    assert made["scopes"] == ["inference", "train"] and made["secret"].startswith("kaon_")
    listed = kaon_json("keys", "list")
    assert made["id"] in [k["id"] for k in listed]
    assert all("secret" not in k for k in listed)
    assert made["id"] in kaon("keys", "list").output
    revoked = kaon_json("keys", "revoke", made["id"], "--yes")
    assert revoked["revoked_at"] is not None
    done = kaon_process("whoami", "--url", logged_in.url, "--key", made["secret"])
    assert done.returncode == AuthError.exit_code, done.stderr
    assert "revoked" in done.stderr.lower()


@pytest.mark.slow
def test_plans_table_and_json(logged_in: Platform) -> None:
    catalog = kaon_json("plans")
    free = next(p for p in catalog["plans"] if p["name"] == "free")
    assert free["hard_cap"] is True and free["max_deployments"] == 1
    table = kaon("plans")
    assert table.exit_code == 0, table.output
    for text in ("free", "pro", "enterprise", "$49.00", "1,000,000", "hard cap", "automl"):
        assert text in table.output


@pytest.mark.slow
def test_subscribe_pro_then_usage_shows_the_plan(logged_in: Platform) -> None:
    result = kaon("subscribe", "pro")
    assert result.exit_code == 0, result.output
    assert "pro" in result.output
    usage = kaon_json("usage")
    assert usage["plan"] == "pro" and usage["hard_cap"] is False
    assert "inference_requests" in usage["metrics"]
    table = kaon("usage")
    assert "pro plan" in table.output and "overage billed" in table.output
    assert "inference_requests" in table.output
    assert kaon_json("subscribe", "--cancel")["cancel_at_period_end"] is True
    assert "ends on" in kaon("subscribe", "--cancel").output
    assert kaon_json("subscribe", "pro")["cancel_at_period_end"] is False
    assert kaon_json("usage", "--period", "2020-01")["period"] == "2020-01"
    assert isinstance(kaon("usage", "--period", "2020-13").exception, ConfigError)


@pytest.mark.slow
def test_invoices_generate_and_write_html(logged_in: Platform, tmp_path: Path) -> None:
    assert kaon_json("subscribe", "pro")["plan"] == "pro"
    period = backdate_plan_changes(logged_in)
    page = tmp_path / "invoice.html"
    result = kaon("invoices", period, "--html", str(page))
    assert result.exit_code == 0, (result.output, result.exception)
    assert "$49.00" in result.output and "total" in result.output
    html = page.read_text()
    assert "$49.00" in html and period in html and "Total" in html
    listed = kaon_json("invoices")
    assert [i["period"] for i in listed] == [period]
    again = kaon_json("invoices", period)  # the same invoice, not a second one
    assert again["id"] == listed[0]["id"] and again["total_cents"] == 4900
    assert kaon_json("invoices", again["id"])["period"] == period
    assert isinstance(kaon("invoices", "--html", str(page)).exception, ConfigError)


@pytest.mark.slow
def test_deploy_wait_infer_scale_delete(logged_in: Platform) -> None:
    assert kaon_json("subscribe", "pro")["plan"] == "pro"  # more than one replica
    dep = kaon_json("deploy", "digits:1", "--name", "cli-digits", "--max-batch-size", "16",
                    "--wait")
    assert (dep["name"], dep["model"], dep["version"], dep["state"]) == (
        "cli-digits", "digits", 1, "ready")
    with Client(logged_in.url, api_key=logged_in.key) as client:
        predictions = client.infer("cli-digits", np.zeros((2, 28, 28), dtype=np.uint8))
    assert len(predictions) == 2
    listed = kaon("deployments", "list")
    assert "cli-digits" in listed.output and "ready" in listed.output
    scaled = kaon_json("deployments", "scale", "cli-digits", "2")
    assert scaled["replicas"] == 2
    assert kaon_json("deployments", "show", "cli-digits")["replicas"] == 2
    too_many = kaon("deployments", "scale", "cli-digits", "99")
    assert isinstance(too_many.exception, PlanLimitError)
    deleted = kaon_json("deployments", "delete", "cli-digits", "--yes")
    assert deleted == {"deleted": "cli-digits"}
    assert kaon_json("deployments", "list") == []
    missing = kaon_process("deployments", "delete", "cli-digits", "--yes")
    assert missing.returncode == NotFoundError.exit_code, missing.stderr


@pytest.mark.slow
def test_deploy_an_unknown_model_or_an_alias_is_a_clear_error(logged_in: Platform) -> None:
    done = kaon_process("deploy", "no-such-model")
    assert done.returncode == NotFoundError.exit_code
    assert "no-such-model" in done.stderr
    alias = kaon_process("deploy", "digits@production")
    assert alias.returncode == ConfigError.exit_code and "alias" in alias.stderr


@pytest.mark.slow
def test_jobs_submit_of_a_bad_spec_is_a_clear_422(logged_in: Platform, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "data": {"dataset": "mnist"},
                                   "model": {"family": "mlp"}, "epochs": -1,
                                   "optimizer": {"nme": "adam"}}))
    done = kaon_process("jobs", "submit", str(bad))
    assert done.returncode == ConfigError.exit_code, done.stderr
    assert "epochs" in done.stderr and "optimizer.nme" in done.stderr
    assert "Hint:" in done.stderr
    missing = kaon_process("jobs", "submit", str(tmp_path / "nope.yaml"))
    assert missing.returncode == ConfigError.exit_code and "does not exist" in missing.stderr


def test_datasets_upload_list_delete(logged_in: Platform, tmp_path: Path) -> None:
    from tests.data.fixtures import write_image_folder

    folder = write_image_folder(tmp_path / "pets", {"cat": 4, "dog": 3})
    row = kaon_json("datasets", "upload", str(folder), "--name", "cli-pets")
    assert row["class_names"] == ["cat", "dog"] and row["splits"] == {"train": 7}
    assert "cli-pets" in kaon("datasets", "list").output
    assert kaon_json("datasets", "list")[0]["name"] == "cli-pets"  # the workspace's first
    taken = kaon_process("datasets", "upload", str(folder), "--name", "cli-pets",
                         KAON_URL=logged_in.url, KAON_API_KEY=logged_in.key)
    assert taken.returncode == 9 and "--overwrite" in taken.stderr
    bad = kaon_process("datasets", "upload", str(tmp_path / "nope"), "--name", "x",
                       KAON_URL=logged_in.url, KAON_API_KEY=logged_in.key)
    assert bad.returncode == NotFoundError.exit_code and "no such file" in bad.stderr
    with Client(logged_in.url, api_key=logged_in.key) as client:  # the SDK, with bytes
        from kaon.data import dataset_npz

        again = client.upload_dataset("cli-pets", dataset_npz(folder), overwrite=True)
        assert again["num_classes"] == 2 and client.dataset("cli-pets")["kind"] == "imported"
        npz = tmp_path / "pets.npz"  # a path: streamed from disk
        npz.write_bytes(dataset_npz(folder))
        assert client.upload_dataset("cli-pets-file", npz)["splits"] == {"train": 7}
        client.delete_dataset("cli-pets-file")
    assert kaon_json("datasets", "delete", "cli-pets", "--yes") == {"deleted": "cli-pets"}
    assert isinstance(kaon("datasets", "delete", "cli-pets", "--yes").exception, NotFoundError)
    # without --yes, an unknown dataset is refused before the question
    assert isinstance(kaon("datasets", "delete", "cli-pets").exception, NotFoundError)


@pytest.mark.slow
def test_jobs_submit_list_show_cancel(logged_in: Platform, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "cli-job", "data": {"dataset": "mnist"},
                                    "model": {"family": "mlp", "hidden": [8]}, "epochs": 1}))
    job = kaon_json("jobs", "submit", str(spec), "--max-attempts", "2")
    assert job["state"] == "queued" and job["max_attempts"] == 2
    assert job["id"] in [j["id"] for j in kaon_json("jobs", "list", "--state", "queued")]
    assert job["id"] in kaon("jobs", "list").output
    shown = kaon("jobs", "show", job["id"])
    assert "queued" in shown.output and "cli-job" in shown.output
    cancelled = kaon_json("jobs", "cancel", job["id"])
    assert cancelled["state"] == "cancelled"
    started = time.monotonic()
    waited = kaon_process("jobs", "show", job["id"], "--wait")
    assert waited.returncode == 1 and "cancelled" in waited.stderr  # ended, not succeeded
    assert time.monotonic() - started < 60
    assert isinstance(kaon("jobs", "show", "job-000000000000").exception, NotFoundError)


@pytest.mark.slow
def test_jobs_logs_and_follow(logged_in: Platform, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "cli-logs", "data": {"dataset": "mnist"},
                                    "model": {"family": "mlp", "hidden": [8]}, "epochs": 1}))
    job = kaon_json("jobs", "submit", str(spec))
    log = logged_in.home / "jobs" / job["id"] / "log.txt"  # where the platform's workers write
    log.parent.mkdir(parents=True)
    log.write_text("[worker w1] attempt 1 starts\nepoch 1: loss 0.5  accuracy 0.8\n")
    result = kaon("jobs", "logs", job["id"])
    assert result.exit_code == 0 and result.stdout == log.read_text()
    chunk = kaon_json("jobs", "logs", job["id"], "--offset", "29")
    assert chunk["text"] == "epoch 1: loss 0.5  accuracy 0.8\n" and chunk["state"] == "queued"
    kaon_json("jobs", "cancel", job["id"])
    followed = kaon_process("jobs", "logs", job["id"], "--follow")
    assert followed.stdout == log.read_text()
    assert followed.returncode == 1 and "cancelled" in followed.stderr


@pytest.mark.slow
def test_members_list_add_remove(logged_in: Platform) -> None:
    added = kaon_json("members", "add", "grace@example.com", "--role", "viewer")
    assert added["member"]["role"] == "viewer" and added["key"]["secret"].startswith("kaon_")
    assert "grace@example.com" in kaon("members", "list").output
    removed = kaon_json("members", "remove", added["member"]["user_id"], "--yes")
    assert removed == {"removed": added["member"]["user_id"]}
    assert "grace@example.com" not in [m["email"] for m in kaon_json("members", "list")]


def test_kaon_up_declines_websocket_compression(kaon_home: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # streams through the gateway stay uncompressed, as on `kaon serve`
    # (test_streams_are_not_compressed_even_when_the_client_offers_it)
    import uvicorn

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda built, **options: served.update(options))
    result = runner.invoke(app, ["up", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert served["ws_per_message_deflate"] is False
