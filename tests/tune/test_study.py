"""`kaon tune` end to end on real BreastMNIST with a small space and short budgets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from sqlalchemy import select

from kaon import registry
from kaon.data import Dataset, Split, import_dataset, store
from kaon.db.engine import session_scope
from kaon.db.models import Run
from kaon.errors import ConfigError, DataError
from kaon.nn.spec import load_spec
from kaon.train.checkpoint import CHECKPOINT
from kaon.tune import SearchSpace, TuneConfig, tune
from kaon.tune.study import (
    _check_inputs,
    _fit_sizes,
    _speedups,
    _time_portfolio,
    _warm_start,
    adapt,
    storage,
    trial_threads,
)

pytestmark = pytest.mark.serial  # real searches on the wall clock: run alone (Makefile)

TINY = {"families": ["mlp", "cnn"], "mlp_width": [64, 128], "cnn_width": [8],
        "cnn_stages": {"low": 2, "high": 2}, "epochs": {"low": 2, "high": 4},
        "batch_sizes": [32, 64]}


def tiny_config(**changes: object) -> TuneConfig:
    fields: dict[str, object] = {"dataset": "breastmnist", "time_seconds": 75, "workers": 2,
                                 "space": SearchSpace.model_validate(TINY)}
    fields.update(changes)
    return TuneConfig.model_validate(fields)


def study_names() -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage())]


def test_a_budget_too_small_is_refused_before_any_study_starts(shared_datasets: Path) -> None:
    with pytest.raises(ConfigError, match="too small"):
        tune(tiny_config(time_seconds=15))
    assert study_names() == []


def test_a_dataset_with_one_class_is_refused(tmp_path: Path) -> None:
    # `kaon data import` refuses one class now; a dataset saved before it did is still refused
    images = torch.zeros((20, 1, 8, 8), dtype=torch.uint8)
    labels = torch.zeros(20, dtype=torch.int64)
    split = Split(images, labels)
    store._save(Dataset("one-class", {"train": split, "test": split}, ["0", "1"]),
                store.datasets_root() / "one-class")
    with pytest.raises(DataError, match="only 1 class"):
        tune(tiny_config(dataset="one-class"))


def test_auc_objective_needs_a_binary_dataset(shared_datasets: Path) -> None:
    with pytest.raises(ConfigError, match="binary"):
        tune(tiny_config(dataset="mnist", objective="auc"))


def test_warm_start_queues_the_portfolio_that_the_space_allows(shared_datasets: Path) -> None:
    cfg = tiny_config()
    sizes = _check_inputs(cfg)
    cfg = adapt(cfg, sizes["n_train"], sizes["n_val"])
    study = optuna.create_study()
    sizes = _fit_sizes(cfg, sizes)
    timed = _time_portfolio(cfg, sizes)
    _warm_start(study, cfg, sizes, timed)
    queued = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    params = [t.system_attrs["fixed_params"] for t in queued]
    assert [p["family"] for p in params] == ["cnn", "mlp"]  # TINY has no resnet-small
    assert params[0]["cnn_width"] == 8 and params[0]["batch_size"] == 64  # moved into TINY
    assert all(2 <= p["epochs"] <= 4 for p in params)  # TINY's range; these fit the cap
    assert all(t.user_attrs["warm_start"] for t in queued)
    # each model also timed on all cores: the retrain's speed-up, between 1 and cores/threads
    speedups = _speedups(cfg, timed)
    if (os.cpu_count() or 1) > trial_threads(cfg):
        assert set(speedups) == {"cnn", "mlp"}
        assert all(1.0 <= v <= (os.cpu_count() or 1) / trial_threads(cfg)
                   for v in speedups.values())
    else:
        assert speedups == {}


def test_warm_start_leaves_out_what_cannot_be_built_for_tiny_images(tmp_path: Path) -> None:
    npz = tmp_path / "tiny.npz"
    images = np.random.default_rng(0).integers(0, 255, (60, 6, 6), dtype=np.uint8)
    labels = (np.arange(60) % 2).reshape(-1, 1)
    np.savez(npz, train_images=images, train_labels=labels, test_images=images[:10],
             test_labels=labels[:10])
    import_dataset(npz, "tiny6")
    cfg = TuneConfig(dataset="tiny6", time_seconds=300, workers=2)
    sizes = _check_inputs(cfg)
    cfg = adapt(cfg, sizes["n_train"], sizes["n_val"])
    study = optuna.create_study()
    sizes = _fit_sizes(cfg, sizes)
    _warm_start(study, cfg, sizes, _time_portfolio(cfg, sizes))  # 3 poolings of 6x6: no CNN
    assert [t.system_attrs["fixed_params"]["family"] for t in study.trials] == [
        "resnet-small", "mlp"]


@pytest.mark.slow
def test_search_registers_the_best_model_with_its_study_within_the_budget(
        shared_datasets: Path) -> None:
    started = time.monotonic()
    result = tune(tiny_config(time_seconds=55))
    assert time.monotonic() - started <= 55 * 1.05  # the budget holds, retrain included
    assert result.model == "breastmnist-tuned:1"
    assert result.trials["complete"] >= 1
    info = registry.get(result.model)
    assert info.lineage["study"] == result.study
    assert 0.5 < result.test_metrics["accuracy"] <= 1.0
    assert "roc_auc" in result.test_metrics
    for key in ("trials_csv", "best", "optimization_history"):
        assert result.report[key].is_file()
    summary = json.loads(result.report["best"].read_text())
    # the retrain ran by the budget's clock: the epochs it trained (at most those planned),
    # its seconds, and the registered spec says what was trained
    assert 1 <= summary["retrain_epochs"] <= summary["retrain_planned_epochs"]
    assert 0 < summary["retrain_seconds"] < 55
    assert info.spec["epochs"] == summary["retrain_epochs"]
    study = optuna.load_study(study_name=result.study, storage=storage())
    # the speed-up its plan used is the study's for that family: measured once the family's
    # portfolio trial completed, kept for --resume with the all-core timings
    family = summary["best_params"]["family"]
    assert summary["retrain_speedup"] == study.user_attrs["speedup"].get(family, 1.0) >= 1.0
    assert set(study.user_attrs["all_cores"]) <= {"cnn", "mlp"}  # TINY's portfolio: no ResNet
    # 78 validation images: every finished trial was scored by 3-fold cross-validation
    assert study.trials[0].user_attrs["warm_start"]  # the portfolio went first
    best = study.best_trial
    folds = best.user_attrs["folds"]
    assert len(folds) == 3 and best.value == pytest.approx(sum(folds) / 3)
    assert 0 < 3 * best.user_attrs["fit_seconds"] < best.user_attrs["seconds"]
    # trials leave no checkpoints behind, and none of their runs stays "running"
    with session_scope() as db:
        trial_runs = db.scalars(select(Run).where(Run.name == "breastmnist-tuned-trial")).all()
    assert len(trial_runs) >= 3
    assert all(r.status in ("succeeded", "interrupted") for r in trial_runs), \
        [(r.id, r.status) for r in trial_runs if r.status == "running"]
    assert not [r.id for r in trial_runs if (Path(r.directory) / CHECKPOINT).exists()]


@pytest.mark.slow
def test_multi_objective_search_reports_a_pareto_front(shared_datasets: Path) -> None:
    result = tune(tiny_config(multi_objective="params", time_seconds=50))
    assert result.pareto
    params = [p["params"] for p in result.pareto]
    accuracy = [p["accuracy"] for p in result.pareto]
    # along the front, more accuracy never comes with fewer parameters
    order = sorted(range(len(params)), key=lambda i: params[i])
    assert [accuracy[i] for i in order] == sorted(accuracy)
    assert result.report["pareto_front"].is_file()
    # each point is a training spec next to the report, named after its trial
    for point in result.pareto:
        spec = load_spec(point["spec"])
        assert spec.name == f"breastmnist-tuned-t{point['trial']}" and spec.data.train_on_val


@pytest.mark.slow
def test_a_killed_search_resumes_and_keeps_its_finished_trials(
        shared_datasets: Path, kaon_home: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(TINY))
    kaon = [sys.executable, "-m", "kaon.cli.main", "tune"]
    env = {**os.environ, "KAON_HOME": str(kaon_home)}
    proc = subprocess.Popen([*kaon, "--data", "breastmnist", "--time", "70s", "--space",
                             str(space), "--json"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, finished, name = time.monotonic() + 60, 0, None
    while time.monotonic() < deadline and finished == 0:
        time.sleep(1)
        names = study_names()
        if names:
            name = names[0]
            study = optuna.load_study(study_name=name, storage=storage())
            finished = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    os.killpg(proc.pid, signal.SIGKILL)  # the search and its trial processes
    proc.wait()
    assert name is not None and finished >= 1
    # it left a fresh sign of life, but its process is dead: --resume goes ahead at once
    sign = optuna.load_study(study_name=name, storage=storage()).user_attrs["alive"]
    assert sign["pid"] == proc.pid and time.time() - sign["at"] < 30

    resumed_at = time.monotonic()
    out = subprocess.run([*kaon, "--resume", name, "--json"], env=env, capture_output=True,
                         text=True, check=True)
    resumed_for = time.monotonic() - resumed_at
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["study"] == name and summary["model"] == "breastmnist-tuned:1"
    study = optuna.load_study(study_name=name, storage=storage())
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) >= finished
    assert study.user_attrs["alive"] is None  # the resumed search ended: nobody runs it
    with session_scope() as db:  # the runs of the trials killed with the search are closed
        trial_runs = db.scalars(select(Run).where(Run.name == "breastmnist-tuned-trial")).all()
    assert trial_runs and not [r.id for r in trial_runs if r.status == "running"]
    assert summary["seconds"] <= 70 * 1.05 + 5
    assert resumed_for < 70  # only the budget that was left, plus process start-up


def _children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (trials are started from worker threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
def test_sigterm_stops_the_search_and_its_trial_processes(
        shared_datasets: Path, kaon_home: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(TINY))
    env = {**os.environ, "KAON_HOME": str(kaon_home)}
    proc = subprocess.Popen([sys.executable, "-m", "kaon.cli.main", "tune", "--data",
                             "breastmnist", "--time", "120s", "--space", str(space), "--json"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    trials = _children(proc.pid)
    assert trials, "no trial process started"
    proc.send_signal(signal.SIGTERM)  # to the search only, as `timeout` or a scheduler does
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err  # interrupted, the study kept for --resume
    assert b"--resume" in err
    time.sleep(0.5)
    assert not [t for t in trials if Path(f"/proc/{t}").exists()
                and b"zombie" not in Path(f"/proc/{t}/status").read_bytes().lower()]
    # the trials it killed are not told failed (a worker thread told them so, or not, as it
    # raced the exit): they are left running, for --resume to fail as killed (and to queue
    # a portfolio one again), and their training runs are closed
    study = optuna.load_study(study_name=study_names()[0], storage=storage())
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING in states, states
    assert optuna.trial.TrialState.FAIL not in states, states
    assert study.user_attrs["alive"] is None
    with session_scope() as db:
        trial_runs = db.scalars(select(Run).where(Run.name == "breastmnist-tuned-trial")).all()
    assert not [r.id for r in trial_runs if r.status == "running"]
