"""Training through ``kaon.train``: registration, records, resume, early stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kaon import registry
from kaon.errors import ConfigError, DataError
from kaon.nn.spec import TrainSpec, parse_spec
from kaon.registry.artifacts import load_weights
from kaon.train import TrainingInterrupted, resume, train
from kaon.train.checkpoint import CHECKPOINT, load_checkpoint
from kaon.train.evaluate import evaluate
from kaon.train.runs import get_run

REPO = Path(__file__).resolve().parents[2]


def small_spec(**changes: Any) -> TrainSpec:
    raw: dict[str, Any] = {
        "name": "tiny-mlp",
        "data": {"dataset": "mnist", "limit": 2000, "val_fraction": 0.1,
                 "augment": {"random_shift": 1}},
        "model": {"family": "mlp", "hidden": [32], "dropout": 0.2},
        "optimizer": {"name": "adam", "lr": 0.003},
        "schedule": {"name": "cosine"},
        "epochs": 4,
        "batch_size": 64,
        "seed": 7,
    }
    raw.update(changes)
    return parse_spec(raw)


class StopAfter:
    """Simulates Ctrl-C at the end of a given epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: object, epoch: int, logs: dict[str, float]) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def registered_weights(ref: str) -> dict[str, torch.Tensor]:
    return load_weights(registry.get(ref).artifact)


def test_train_registers_a_version_with_signature_metrics_and_lineage_fields(
        shared_datasets: Path) -> None:
    result = train(small_spec(epochs=1))
    info = registry.get("tiny-mlp:1")
    assert result.model == "tiny-mlp:1"
    assert info.signature.shape == (1, 28, 28)
    assert info.signature.class_names == [str(d) for d in range(10)]
    assert info.dataset == "mnist" and len(info.dataset_hash) == 64
    assert 0.5 < info.metrics["test_accuracy"] <= 1.0
    assert info.run_id == result.run_id and info.parent is None


def test_each_epoch_is_recorded_in_the_database_and_tensorboard(shared_datasets: Path) -> None:
    result = train(small_spec(epochs=2))
    run = get_run(result.run_id)
    assert run.status == "succeeded"
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(run.history[0])
    events = list((run.directory / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_a_second_training_run_becomes_version_two_and_moves_the_alias(
        shared_datasets: Path) -> None:
    spec = small_spec(epochs=1, register={"alias": "production"})
    train(spec)
    train(spec)
    assert registry.get("tiny-mlp@production").version == 2
    assert [i.version for i in registry.list_models()] == [1, 2]


def test_ctrl_c_keeps_the_checkpoint_and_resume_ends_with_identical_weights(
        shared_datasets: Path) -> None:
    spec = small_spec()
    reference = train(spec)
    with pytest.raises(TrainingInterrupted) as info:
        train(spec, callbacks=[StopAfter(2)])
    run_id = next(r for r in _run_ids() if r != reference.run_id)
    assert f"kaon train --resume {run_id}" in str(info.value)
    assert get_run(run_id).status == "interrupted"
    assert load_checkpoint(get_run(run_id).directory / CHECKPOINT).epoch == 2

    resumed = resume(run_id)
    assert resumed.metrics["epochs"] == 4
    expected, got = registered_weights(reference.model), registered_weights(resumed.model)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_resuming_a_finished_run_is_refused(shared_datasets: Path) -> None:
    result = train(small_spec(epochs=1))
    with pytest.raises(ConfigError, match="already finished"):
        resume(result.run_id)


def test_early_stopping_stops_and_keeps_the_best_weights(shared_datasets: Path) -> None:
    spec = small_spec(epochs=30, optimizer={"name": "sgd", "lr": 5.0, "momentum": 0.9},
                      schedule={"name": "constant"},
                      early_stopping={"monitor": "val_accuracy", "patience": 2})
    result = train(spec)
    run = get_run(result.run_id)
    assert result.metrics["epochs"] < 30
    best_epoch = max(run.history, key=lambda h: h["val_accuracy"])["epoch"]
    assert best_epoch < result.metrics["epochs"]  # it stopped after the best epoch...
    best = load_weights(run.directory / "best.safetensors")
    registered = registered_weights(result.model or "")
    for key in best:  # ...and registered the best epoch's weights, not the last one's
        torch.testing.assert_close(registered[key], best[key], rtol=0, atol=0)


def test_binary_task_with_one_sigmoid_unit(shared_datasets: Path) -> None:
    spec = parse_spec({
        "name": "breast", "data": {"dataset": "breastmnist"},
        "model": {"family": "cnn", "channels": [8, 16]},
        "loss": "binary_cross_entropy", "epochs": 2, "batch_size": 32,
    })
    result = train(spec)
    info = registry.get(result.model or "")
    assert info.signature.output == "sigmoid"
    assert info.signature.class_names == ["malignant", "normal/benign"]
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0


def test_balanced_class_weights_recall_more_of_the_minority_class(shared_datasets: Path) -> None:
    def minority_recall(class_weight: str) -> float:
        spec = parse_spec({
            "name": f"breast-{class_weight}", "data": {"dataset": "breastmnist"},
            "model": {"family": "mlp", "hidden": [64]}, "class_weight": class_weight,
            "optimizer": {"name": "adam", "lr": 0.003}, "epochs": 4, "batch_size": 32,
        })
        report = evaluate(train(spec).model or "").report
        return float(report["per_class"]["malignant"]["recall"])  # 147 of 546 in train

    assert minority_recall("balanced") > minority_recall("none") + 0.05


def test_normalisation_wrong_channel_count_is_a_config_error(shared_datasets: Path) -> None:
    spec = small_spec(data={"dataset": "mnist", "normalize": {"mean": [0.1, 0.2], "std": [1, 1]}})
    with pytest.raises(ConfigError, match="1 value"):
        train(spec)


def test_resume_refuses_changed_data(shared_datasets: Path, monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
    spec = small_spec()
    with pytest.raises(TrainingInterrupted):
        train(spec, callbacks=[StopAfter(1)])
    run_id = _run_ids()[0]
    import kaon.train.api as api

    real = api.load_dataset

    def shifted(name: str, workspace: str = "default"):  # the same data, one pixel changed
        ds = real(name, workspace)
        train_split = ds.splits["train"]
        images = train_split.images.clone()
        images[0, 0, 0, 0] ^= 1
        ds.splits["train"] = type(train_split)(images, train_split.labels)
        return ds

    monkeypatch.setattr(api, "load_dataset", shifted)
    with pytest.raises(DataError, match="changed since run"):
        resume(run_id)


@pytest.mark.serial  # times processes on the wall clock: run alone (Makefile)
@pytest.mark.slow
def test_kill_9_mid_training_then_resume_matches_an_uninterrupted_run(
        shared_datasets: Path, kaon_home: Path, tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        "name: killed\n"
        "data: {dataset: mnist, limit: 12000, val_fraction: 0.1}\n"
        "model: {family: mlp, hidden: [512, 256], dropout: 0.1}\n"
        "epochs: 5\nbatch_size: 64\nseed: 3\n")
    env = {**os.environ, "KAON_HOME": str(kaon_home)}
    kaon = [sys.executable, "-m", "kaon.cli.main"]
    proc = subprocess.Popen([*kaon, "train", str(spec_path), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    checkpoint = None
    while time.monotonic() < deadline and checkpoint is None:
        found = list((kaon_home / "runs").glob(f"*/{CHECKPOINT}"))
        checkpoint = found[0] if found else None
        time.sleep(0.02)
    assert checkpoint is not None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = checkpoint.parent.name
    assert load_checkpoint(checkpoint).epoch < 5

    out = subprocess.run([*kaon, "train", "--resume", run_id, "--json"], env=env,
                         capture_output=True, text=True, check=True)
    assert '"epochs": 5' in out.stdout.splitlines()[-1]
    reference = train(parse_spec({**_yaml(spec_path), "name": "reference"}))
    expected = registered_weights(reference.model or "")
    got = registered_weights("killed:1")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


def _run_ids() -> list[str]:
    from sqlalchemy import select

    from kaon.db import session_scope
    from kaon.db.models import Run

    with session_scope() as db:
        return list(db.scalars(select(Run.id).order_by(Run.created_at.desc())))


def test_a_cross_validation_fold_holds_out_its_share_of_train_and_val(
        shared_datasets: Path) -> None:
    from kaon.data import load_dataset
    from kaon.train.api import _Setup

    dataset = load_dataset("breastmnist")  # 546 train + 78 val images
    held: list[torch.Tensor] = []
    for fold in range(3):
        spec = small_spec(data={"dataset": "breastmnist", "cv_folds": 3, "cv_fold": fold})
        setup = _Setup(spec, dataset, torch.device("cpu"), keep_test=False)
        assert setup.data.x_val is not None and setup.data.y_val is not None
        assert len(setup.data.x_train) + len(setup.data.x_val) == 624
        assert len(setup.data.x_val) == 208
        held.append(setup.data.y_val)
    # the folds keep BreastMNIST's balance (about 73% malignant = label 1) in every fold
    shares = [float(y.float().mean()) for y in held]
    assert max(shares) - min(shares) < 0.02
