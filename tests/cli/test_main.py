"""The ``kaon`` command itself: its version, and errors from the environment as clean
messages with exit codes (the console script, run as a user runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import kaon
from kaon.errors import ConfigError, UnavailableError


def _kaon(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kaon.cli.main", *args], text=True,
                          capture_output=True, env={**os.environ, **env}, timeout=120)


def test_version() -> None:
    done = _kaon("--version")
    assert done.returncode == 0 and done.stdout == f"kaon {kaon.__version__}\n"


def test_the_command_its_help_and_the_model_and_data_lists_load_without_torch(
        kaon_home: Path, tmp_path: Path) -> None:
    # torch takes seconds to import: the verbs that need it (to train, serve, read images or
    # load a model) load it when they run
    from kaon.data import import_dataset

    pixels = np.random.default_rng(0).integers(0, 255, (12, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "scans.npz", train_images=pixels, train_labels=np.arange(12) % 2)
    import_dataset(tmp_path / "scans.npz", "scans")  # a row read from the import's metadata
    code = ("import json, sys; from typer.testing import CliRunner; "
            "from kaon.cli.main import app; "
            "assert CliRunner().invoke(app, ['jobs', '--help']).exit_code == 0; "
            "done = CliRunner().invoke(app, ['models', 'list', '--json']); "
            "assert done.exit_code == 0, done.output; "
            "done = CliRunner().invoke(app, ['data', 'list', '--json']); "
            "assert done.exit_code == 0, done.output; "
            "assert 'scans' in [row['name'] for row in json.loads(done.stdout)]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])")
    done = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.endswith("[]\n"), (done.stdout, done.stderr)


def test_an_unreachable_database_is_a_message_not_a_traceback(kaon_home: Path) -> None:
    done = _kaon("models", "list",
                 KAON_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/x")
    assert done.returncode == UnavailableError.exit_code, done.stderr
    assert done.stderr.startswith("Error: Cannot reach the database")
    assert "Traceback" not in done.stderr and "KAON_DATABASE_URL" in done.stderr


def test_a_bad_database_url_is_a_config_error(kaon_home: Path) -> None:
    done = _kaon("models", "list", KAON_DATABASE_URL="bogus")
    assert done.returncode == ConfigError.exit_code, done.stderr
    assert "The database URL 'bogus' is not valid" in done.stderr
    assert "Traceback" not in done.stderr


def test_train_with_a_spec_and_resume_says_not_both(tmp_path: Path, kaon_home: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\n")
    done = _kaon("train", str(spec), "--resume", "run-0123")
    assert done.returncode == ConfigError.exit_code, done.stderr
    assert "not both" in done.stderr
