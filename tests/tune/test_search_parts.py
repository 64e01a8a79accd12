"""The search's parts, fast: per-epoch reports and pruning, GPUs per trial, the latency objective,
the Pareto front's training specs and ``--pick``.

Most trials here run ``tests/tune/fake_worker.py`` in place of ``kaon.tune.worker``: a real
subprocess speaking the real protocol, without the training, so the search, the runner and
Optuna's pruner are the code under test. One test runs the real worker on a tiny dataset.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from kaon import registry
from kaon.cli.main import app
from kaon.data import import_dataset
from kaon.errors import ConfigError
from kaon.names import is_valid_name
from kaon.nn.spec import load_spec
from kaon.train import train
from kaon.train.runs import get_run
from kaon.tune import budget as b
from kaon.tune import pick, runner, study
from kaon.tune.runner import GpuSlots, run_trial
from kaon.tune.space import SearchSpace, suggest, to_spec
from kaon.tune.study import (
    TuneConfig,
    _pruner,
    _Search,
    pareto_front,
    retrain_spec,
    storage,
)

pytestmark = pytest.mark.serial  # real trial processes on the wall clock: run alone (Makefile)

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")
MLP = {"families": ["mlp"], "mlp_width": [16], "mlp_depth": {"low": 1, "high": 1},
       "batch_sizes": [16], "epochs": {"low": 4, "high": 4}}
SIZES = {"n_train": 100, "n_val": 20, "min_trial": 1.0, "speedup": {}}
MLP_PARAMS = {"family": "mlp", "mlp_depth": 1, "mlp_width": 16, "dropout": 0.0,
              "optimizer": "adam", "adam_lr": 1e-3, "weight_decay": 1e-5, "schedule": "cosine",
              "batch_size": 16, "random_shift": 0, "hflip": False, "class_weight": "none"}


def mlp_space(epochs: int) -> SearchSpace:
    return SearchSpace.model_validate({**MLP, "epochs": {"low": epochs, "high": epochs}})


@pytest.fixture
def fake_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "WORKER", (str(FAKE_WORKER),))


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    """An imported two-class dataset of 6x6 images (train 60, test 20)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (80, 6, 6), dtype=np.uint8)
    labels = (np.arange(80) % 2).reshape(-1, 1)
    images[labels[:, 0] == 1] //= 4  # a learnable difference: darker images are class 1
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_images=images[:60], train_labels=labels[:60],
             test_images=images[60:], test_labels=labels[60:])
    import_dataset(npz, "tiny")
    return "tiny"


def config(**changes: object) -> TuneConfig:
    fields: dict[str, object] = {"dataset": "tiny", "time_seconds": 600, "workers": 1,
                                 "space": SearchSpace.model_validate(MLP)}
    fields.update(changes)
    return TuneConfig.model_validate(fields)


def search_for(cfg: TuneConfig, name: str) -> _Search:
    directions = ["maximize"] + (["minimize"] if cfg.multi_objective else [])
    created = optuna.create_study(storage=storage(), pruner=_pruner(cfg), study_name=name,
                                  directions=directions)
    created.set_user_attr("kaon", cfg.model_dump(mode="json"))
    return _Search(created, cfg, dict(SIZES), b.Budget(time.monotonic(), 600), 0.0)


def run_one(search: _Search, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    search._run(search.study.ask(), time.monotonic())


# ---- per-epoch reports and pruning ----------------------------------------------------------
def test_the_pruner_gets_every_epoch_and_a_pruned_trial_is_killed(
        fake_worker: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    search = search_for(config(), "prune-test")
    assert isinstance(search.study.pruner, optuna.pruners.HyperbandPruner)
    for _ in range(3):
        run_one(search, monkeypatch, FAKE_VALUE="0.9")
    marker = tmp_path / "finished"
    run_one(search, monkeypatch, FAKE_VALUE="0.1", FAKE_PAUSE="30", FAKE_MARKER=str(marker))
    good, bad = search.study.trials[0], search.study.trials[-1]
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert good.intermediate_values == {1: 0.9, 2: 0.9, 3: 0.9, 4: 0.9}  # one per epoch
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert bad.user_attrs["outcome"] == "pruned"
    assert set(bad.intermediate_values.values()) == {0.1}
    assert len(bad.intermediate_values) < 4  # stopped at a rung, before its last epoch
    assert not marker.exists()  # killed, not left to run its 30 s to the end


def test_a_worker_that_may_not_launch_waits_while_a_trial_may_still_move_the_cutoff(
        fake_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until a trial completes, the retrain is estimated from the trial cap, cautiously; the
    first completion can move the cutoff later. A worker turned away before that waits for
    it: before, it left for good and the rest of the search ran on fewer workers."""
    search = search_for(config(workers=2), "waits")
    monkeypatch.setenv("FAKE_PAUSE", "1")

    class Scripted(b.Budget):
        def may_launch(self, now: float, retrain_estimate: float, min_trial: float) -> bool:
            trials = search.study.get_trials(deepcopy=False)
            if not trials:
                return True  # the first trial
            if not any(t.state.is_finished() for t in trials):
                return False  # the cautious estimate, while the first trial runs
            return len(trials) < 3  # its result moved the cutoff: two more trials fit

    search.budget = Scripted(time.monotonic(), 600)
    workers = [threading.Thread(target=search.loop) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    trials = search.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    second, third = trials[1], trials[2]
    assert second.datetime_complete is not None and third.datetime_start is not None
    assert third.datetime_start < second.datetime_complete  # both workers ran them


def test_a_trial_whose_objective_is_not_a_number_fails_and_says_why(
        fake_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN (ROC AUC of a fold without one class): Optuna failed the trial silently while
    the search recorded it complete, and each epoch's NaN pruned it."""
    search = search_for(config(), "nan")
    run_one(search, monkeypatch, FAKE_VALUE="nan")
    (trial,) = search.study.get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL and trial.intermediate_values == {}
    assert trial.user_attrs["outcome"] == "failed"
    assert "not a number" in trial.user_attrs["error"]


def test_without_the_live_table_each_ended_trial_is_a_line_on_stderr(
        fake_worker: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A platform job's log (and --json) has no live table: `kaon jobs logs` showed nothing
    between the search's start and its end."""
    search = search_for(config(), "lines")
    search.log_trials = True
    run_one(search, monkeypatch, FAKE_VALUE="0.75")
    err = capsys.readouterr().err
    assert "trial 0: complete, accuracy 0.7500, mlp, 4 epochs" in err


def test_a_tune_job_s_result_names_report_files_under_kaon_home(kaon_home: Path) -> None:
    from kaon.platform.jobrun import _under

    assert _under(str(kaon_home / "studies" / "s" / "report.html"), kaon_home) == \
        "studies/s/report.html"
    assert _under("/elsewhere/trial-3.yaml", kaon_home) == "trial-3.yaml"


def test_the_portfolio_s_trials_are_reported_but_never_pruned(
        fake_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    search = search_for(config(), "warm-no-prune-test")
    for _ in range(3):
        run_one(search, monkeypatch, FAKE_VALUE="0.9")
    search.study.enqueue_trial({**MLP_PARAMS, "epochs": 4}, user_attrs={"warm_start": True})
    run_one(search, monkeypatch, FAKE_VALUE="0.1")  # would be pruned at the first rung
    warm = search.study.trials[-1]
    assert warm.user_attrs["warm_start"] is True
    assert warm.state == optuna.trial.TrialState.COMPLETE and warm.value == 0.1
    assert warm.intermediate_values == {1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1}
    # ... and Hyperband holds it at its rungs, which later trials are judged against
    assert any(key.startswith("completed_rung_") for key in warm.system_attrs)


def test_a_trial_is_given_its_time_and_a_shortened_one_is_retrained_as_scored(
        fake_worker: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    search = search_for(config(space=mlp_space(4)), "shortened")
    job = tmp_path / "job.json"
    launched = time.monotonic()
    search._run(search.study.ask(), launched)
    monkeypatch.setenv("FAKE_JOB", str(job))
    monkeypatch.setenv("FAKE_TRAINED", "3")
    search._run(search.study.ask(), launched)
    ends_by = json.loads(job.read_text())["ends_by"]
    kill_at = min(launched + search.trial_cap, search.cutoff())
    assert kill_at - 0.05 * (kill_at - launched) <= ends_by < kill_at
    whole, shortened = search.study.trials
    assert "epochs_trained" not in whole.user_attrs
    assert shortened.user_attrs["epochs_trained"] == 3 and shortened.params["epochs"] == 4
    assert retrain_spec(search.cfg, whole, None)["epochs"] == 4
    assert retrain_spec(search.cfg, shortened, None)["epochs"] == 3


def test_multi_objective_trials_are_neither_reported_nor_pruned(
        fake_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    search = search_for(config(multi_objective="latency"), "no-prune-test")
    assert isinstance(search.study.pruner, optuna.pruners.NopPruner)
    run_one(search, monkeypatch, FAKE_VALUE="0.1", FAKE_LATENCY="3.5")
    trial = search.study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.intermediate_values == {}


# ---- --multi-objective latency and the Pareto front -----------------------------------------
def test_latency_is_the_second_objective_and_each_pareto_point_is_a_training_spec(
        fake_worker: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: str) -> None:
    cfg = config(multi_objective="latency", space=mlp_space(2))
    search = search_for(cfg, "latency-test")
    for value, latency, params in (("0.9", "5.0", "9000"), ("0.8", "1.0", "900"),
                                   ("0.7", "2.0", "2000")):  # the last is dominated
        run_one(search, monkeypatch, FAKE_VALUE=value, FAKE_LATENCY=latency, FAKE_PARAMS=params)
    assert [t.values for t in search.study.trials] == [[0.9, 5.0], [0.8, 1.0], [0.7, 2.0]]
    assert search.study.trials[1].user_attrs["latency_ms"] == 1.0

    points = pareto_front(search.study, cfg, None, tmp_path / "pareto")
    assert [(p["trial"], p["accuracy"], p["latency_ms"], p["params"]) for p in points] == [
        (0, 0.9, 5.0, 9000), (1, 0.8, 1.0, 900)]
    assert sorted(f.name for f in (tmp_path / "pareto").iterdir()) == ["trial-0.yaml",
                                                                       "trial-1.yaml"]
    spec = load_spec(points[1]["spec"])
    assert spec.name == "tiny-tuned-t1" and spec.data.train_on_val and spec.epochs == 2
    assert spec.model.family == "mlp"  # type: ignore[union-attr]
    result = train(points[1]["spec"])  # what `kaon train trial-1.yaml` does
    assert result.model == "tiny-tuned-t1:1"


def test_the_cli_prints_the_front_as_a_table_with_the_spec_paths() -> None:
    from rich.console import Console

    from kaon.cli.tune import pareto_table

    points = [{"trial": 3, "accuracy": 0.91, "latency_ms": 0.42, "params": 52000,
               "family": "cnn", "epochs": 9, "spec": "/r/pareto/trial-3.yaml"},
              {"trial": 8, "accuracy": 0.88, "latency_ms": 0.05, "params": 12000,
               "family": "mlp", "epochs": 6, "spec": "/r/pareto/trial-8.yaml"}]
    console = Console(record=True, width=200)
    console.print(pareto_table(points, registered=3))
    text = console.export_text()
    assert "latency ms" in text and "params" in text
    rows = [line for line in text.splitlines() if "trial-" in line]
    assert "3*" in rows[0] and "0.9100" in rows[0] and "52,000" in rows[0] and "cnn" in rows[0]
    assert "0.05" in rows[1] and "/r/pareto/trial-8.yaml" in rows[1]


def test_the_real_worker_reports_each_epoch_and_its_latency(tiny: str, tmp_path: Path) -> None:
    trial = optuna.create_study(direction="maximize").ask()
    choice = suggest(optuna.trial.FixedTrial({**MLP_PARAMS, "epochs": 3}), mlp_space(3))
    job = {"spec": to_spec("tiny-trial", tiny, choice), "objective": "accuracy", "threads": 1,
           "folds": 0, "latency": True}
    outcome = run_trial(trial, job, lambda: time.monotonic() + 300, tmp_path / "trial.log",
                        prune=False, report=True, max_epochs=3)
    assert outcome.state == "complete", outcome.error
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [1, 2, 3]
    assert outcome.info["latency_ms"] > 0 and outcome.info["params"] == 6 * 6 * 16 + 16 + 34


@pytest.fixture
def wide(tmp_path: Path) -> str:
    """A dataset on which 1,000 epochs of 150 steps take about a minute here."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2400, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "wide.npz", train_images=images, train_labels=np.arange(2400) % 2)
    import_dataset(tmp_path / "wide.npz", "wide12")
    return "wide12"


def test_the_real_worker_shortens_its_fits_to_end_by_its_time(wide: str,
                                                               tmp_path: Path) -> None:
    """A trial planned longer than its time (the portfolio's ResNet ran past its cap at 2 of 3
    BreastMNIST seeds, its 180 s lost) ends its fits by ``ends_by`` and is scored, instead of
    being killed with nothing; the second fold is planned with the epochs the first trained."""
    trial = optuna.create_study(direction="maximize").ask()
    choice = suggest(optuna.trial.FixedTrial({**MLP_PARAMS, "epochs": 1000}), mlp_space(1000))
    ends_by = time.monotonic() + 20
    job = {"spec": to_spec("wide-trial", wide, choice), "objective": "accuracy",
           "threads": 1, "folds": 2, "ends_by": ends_by}
    outcome = run_trial(trial, job, lambda: time.monotonic() + 300, tmp_path / "trial.log",
                        prune=False, report=True, max_epochs=1000)
    assert outcome.state == "complete", outcome.error
    trained = outcome.info["epochs_trained"]
    assert 1 <= trained < 1000 and outcome.epochs == trained
    assert time.monotonic() < ends_by + 10  # (the margin before a kill is the parent's)
    first, second = (get_run(r).epochs_done for r in
                     trial.storage.get_trial(trial._trial_id).user_attrs["runs"])
    assert first == trained and 1 <= second <= trained
    # its last, annealed epoch is reported at the end of the scale, not mid-way
    assert max(trial.storage.get_trial(trial._trial_id).intermediate_values) == 1000


def test_a_trial_whose_cutoff_moves_earlier_ends_by_the_new_time(wide: str,
                                                                  tmp_path: Path) -> None:
    """The search's cut-off moves earlier when a longer trial finishes (its retrain will take
    longer). A trial launched before then was killed at the new cut-off with nothing (a
    PneumoniaMNIST CNN, after 11 epochs); now it is told, and ends by then."""
    trial = optuna.create_study(direction="maximize").ask()
    choice = suggest(optuna.trial.FixedTrial({**MLP_PARAMS, "epochs": 1000}), mlp_space(1000))
    moved: list[float] = []

    def kill_at() -> float:  # far off until the fit has trained an epoch, then 12 s after
        if not moved and trial.storage.get_trial(trial._trial_id).intermediate_values:
            moved.append(time.monotonic())
        return moved[0] + 12 if moved else time.monotonic() + 300

    # (a wide margin before the kill: the test is of the move, not of the margin)
    job = {"spec": to_spec("wide-trial", wide, choice), "objective": "accuracy",
           "threads": 1, "folds": 0, "ends_by": kill_at() - 5}
    outcome = run_trial(trial, job, kill_at, tmp_path / "trial.log", prune=False,
                        report=True, max_epochs=1000, ends_by=lambda: kill_at() - 5)
    assert outcome.state == "complete", (outcome.state, outcome.error)  # not killed
    trained = outcome.info["epochs_trained"]
    assert len(moved) == 1 and 2 <= trained < 1000  # it trained on after the move
    assert get_run(outcome.info["run_id"]).epochs_done == trained


def test_each_fit_s_share_of_a_trial_s_time_follows_the_moves_it_is_sent() -> None:
    import io

    from kaon.tune.worker import TrialTime

    clock = TrialTime(ends_by=time.monotonic() + 30, fits=3)
    assert clock.share(0) == pytest.approx(clock.first + 10)
    moved = clock.first + 15
    clock.follow(io.StringIO(f'not json\n{{"ends_by": {moved}}}\n{{"other": 1}}\n'))
    deadline = time.monotonic() + 5
    while clock.ends_by != moved:
        assert time.monotonic() < deadline, "the move was not followed"
        time.sleep(0.01)
    assert [clock.share(j) - clock.first for j in range(3)] == pytest.approx([5, 10, 15])


def test_a_trial_whose_search_is_killed_outright_exits_at_once(tiny: str,
                                                                tmp_path: Path) -> None:
    """kill -9 or the OOM killer leaves the search no time to kill its trials: the real
    worker sees its parent gone and exits, instead of training on to the end of its schedule
    (its output going to a file, no broken pipe would stop it)."""
    choice = suggest(optuna.trial.FixedTrial({**MLP_PARAMS, "epochs": 1000}), mlp_space(1000))
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"spec": to_spec("tiny-trial", tiny, choice),
                               "objective": "accuracy", "threads": 1, "folds": 0}))
    out, pid_file = tmp_path / "out.txt", tmp_path / "pid"
    search = subprocess.Popen(["sh", "-c", f'"$0" -m kaon.tune.worker < {job} > {out} '
                               f"2> {tmp_path / 'err.txt'} & echo $! > {pid_file}; wait",
                               sys.executable])
    deadline = time.monotonic() + 60
    while '"epoch"' not in (out.read_text() if out.exists() else ""):
        assert time.monotonic() < deadline and search.poll() is None, "no epoch was reported"
        time.sleep(0.1)
    trial = int(pid_file.read_text())
    search.kill()  # SIGKILL: no handler, no atexit
    search.wait()
    try:
        deadline = time.monotonic() + 5
        while _alive(trial):
            assert time.monotonic() < deadline, "the orphaned trial kept training"
            time.sleep(0.1)
        assert out.read_text().count('"epoch"') < 1000
    finally:
        if _alive(trial):
            os.kill(trial, signal.SIGKILL)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return b"zombie" not in status.read_bytes().lower()
    except FileNotFoundError:
        return False


def test_the_real_worker_scores_each_fold_on_perturbed_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (120, 12, 12), dtype=np.uint8)
    labels = (np.arange(120) % 2).reshape(-1, 1)
    images[labels[:, 0] == 1] //= 4
    npz = tmp_path / "small.npz"
    np.savez(npz, train_images=images[:100], train_labels=labels[:100],
             test_images=images[100:], test_labels=labels[100:])
    import_dataset(npz, "small12")
    trial = optuna.create_study(direction="maximize").ask()
    choice = suggest(optuna.trial.FixedTrial({**MLP_PARAMS, "epochs": 2}), mlp_space(2))
    job = {"spec": to_spec("small-trial", "small12", choice), "objective": "accuracy",
           "threads": 1, "folds": 2, "robust": True}
    outcome = run_trial(trial, job, lambda: time.monotonic() + 300, tmp_path / "trial.log",
                        prune=False, report=True, max_epochs=2)
    assert outcome.state == "complete", outcome.error
    folds, plain = outcome.info["folds"], outcome.info["plain"]
    assert len(folds) == 2 and outcome.value == pytest.approx(sum(folds) / 2)
    assert 0 <= plain <= 1 and plain != outcome.value  # the perturbed images score otherwise


# ---- a GPU per trial -------------------------------------------------------------------------
def test_gpu_slots_give_running_trials_distinct_gpus_round_robin() -> None:
    slots = GpuSlots(4)
    taken = [slots.acquire() for _ in range(4)]
    assert taken == [0, 1, 2, 3]
    slots.release(1)
    assert slots.acquire() == 1  # the only free one
    slots.release(2)
    slots.release(0)
    assert slots.acquire() == 2  # round-robin among the free ones, after the last given
    assert slots.acquire() == 0
    assert slots.busy == [1, 1, 1, 1]
    assert [slots.acquire() for _ in range(3)] == [1, 2, 3]  # all busy: round-robin on
    assert slots.env(3) == {"CUDA_VISIBLE_DEVICES": "3"}


def test_gpu_slots_follow_the_visible_devices_and_skip_a_single_gpu() -> None:
    slots = GpuSlots(2, visible="GPU-aa, GPU-bb,GPU-cc")
    assert [slots.env(slots.acquire()) for _ in range(2)] == [
        {"CUDA_VISIBLE_DEVICES": "GPU-aa"}, {"CUDA_VISIBLE_DEVICES": "GPU-bb"}]
    for count in (0, 1):
        one = GpuSlots(count)
        assert one.acquire() is None and one.env(None) is None
        with one.slot() as env:
            assert env is None


def test_each_trial_process_is_given_its_gpu(
        fake_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(study, "gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    search = search_for(config(pruning=False), "gpu-test")
    for _ in range(3):
        run_one(search, monkeypatch, FAKE_VALUE="gpu")
    assert [t.value for t in search.study.trials] == [5.0, 7.0, 5.0]
    assert search.gpus.busy == [0, 0]  # given back after each trial


# ---- --pick -----------------------------------------------------------------------------------
def picked_study(cfg: TuneConfig) -> optuna.Study:
    """A stored search with trial 0 finished (epochs 2) and trial 1 pruned."""
    made = optuna.create_study(storage=storage(), study_name="pick-test",
                               directions=["maximize", "minimize"])
    made.set_user_attr("kaon", cfg.model_dump(mode="json"))
    made.enqueue_trial({"family": "mlp", "mlp_depth": 1, "mlp_width": 16, "epochs": 2})
    first = made.ask()
    suggest(first, cfg.space)
    made.tell(first, [0.8, 0.2])
    second = made.ask()
    suggest(second, cfg.space)
    second.set_user_attr("outcome", "pruned")
    made.tell(second, state=optuna.trial.TrialState.PRUNED)
    return made


def test_pick_retrains_a_finished_trial_and_registers_it_with_lineage(tiny: str) -> None:
    cfg = config(multi_objective="latency", space=mlp_space(2))
    picked_study(cfg)
    out = CliRunner().invoke(app, ["tune", "--resume", "pick-test", "--pick", "0", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["model"] == "tiny-tuned-t0:1" and result["trial"] == 0 and result["picked"]
    info = registry.get(result["model"])
    assert info.lineage["study"] == "pick-test" and info.lineage["trial"] == 0
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    summary = json.loads(Path(result["report"]["best"]).read_text())
    assert summary["picked_trial"] == 0 and summary["retrain_epochs"] == 2


def test_pick_refuses_a_trial_that_did_not_finish(tiny: str) -> None:
    cfg = config(multi_objective="latency", space=mlp_space(2))
    picked_study(cfg)
    with pytest.raises(ConfigError, match="trial 1 did not finish") as pruned:
        pick("pick-test", 1)
    assert "Pareto front: 0" in (pruned.value.hint or "")
    with pytest.raises(ConfigError, match="has no trial 9"):
        pick("pick-test", 9)
    assert registry.list_models() == []


def test_a_picked_points_name_is_shortened_never_the_best_models() -> None:
    long = TuneConfig(dataset="tiny", time_seconds=60, model_name="m" * 58)
    names = [study.point_name(long, n) for n in (3, 12345)]
    assert names == ["m" * 58 + "-t3", "m" * 57 + "-t12345"]
    assert all(is_valid_name(n) for n in names)


def test_pick_needs_a_study() -> None:
    result = CliRunner().invoke(app, ["tune", "--pick", "3"])
    assert isinstance(result.exception, ConfigError)
    assert "--resume STUDY --pick TRIAL" in result.exception.message


def test_a_stored_study_s_settings_are_read_back_or_refused_with_a_message() -> None:
    """--resume and --pick re-read the settings a study started with: a study started with
    --workers 16 on a larger machine continues here (it was a raw ValidationError), and a
    study that kaon tune did not make is a ConfigError (it was a KeyError)."""
    cfg = config()
    made = optuna.create_study(storage=storage(), study_name="elsewhere")
    made.set_user_attr("kaon", {**cfg.model_dump(mode="json"), "workers": 16})
    assert study._stored_config(made).workers == 16
    with pytest.raises(ValidationError, match="workers"):  # a new search is still refused
        TuneConfig.model_validate({**cfg.model_dump(mode="json"), "workers": 16})
    foreign = optuna.create_study(storage=storage(), study_name="foreign")
    with pytest.raises(ConfigError, match="not made by `kaon tune`"):
        study._stored_config(foreign)
    foreign.set_user_attr("kaon", {**cfg.model_dump(mode="json"), "time_seconds": -1})
    with pytest.raises(ConfigError, match="settings are not valid here"):
        study._stored_config(foreign)
    result = CliRunner().invoke(app, ["tune", "--resume", "foreign"])
    assert isinstance(result.exception, ConfigError)


def test_when_every_trial_failed_the_error_is_the_trials_not_the_budget() -> None:
    import optuna

    from kaon.errors import KaonError
    from kaon.tune import SearchSpace, TuneConfig
    from kaon.tune.study import _finish

    study = optuna.create_study()
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr("outcome", "failed")
        trial.set_user_attr("error", "ValueError: Expected positive integer total_steps")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    cfg = TuneConfig(dataset="breastmnist", time_seconds=60, workers=1, space=SearchSpace())
    with pytest.raises(KaonError, match=r"Every trial .* failed .*total_steps") as info:
        _finish(study, cfg, None, {}, None, False)  # type: ignore[arg-type]
    assert "--time" not in (info.value.hint or "")


# ---- --resume ---------------------------------------------------------------------------------
def killed_study(cfg: TuneConfig) -> optuna.Study:
    """A search killed midway, as the database keeps it: trial 0 finished, trial 1 was
    running (it had reported one epoch) when the process died."""
    made = optuna.create_study(storage=storage(), study_name="killed-test",
                               direction="maximize", pruner=_pruner(cfg))
    made.set_user_attr("kaon", cfg.model_dump(mode="json"))
    made.enqueue_trial({**MLP_PARAMS, "epochs": 2})
    first = made.ask()
    suggest(first, cfg.space)
    first.set_user_attr("outcome", "complete")
    made.tell(first, 0.8)
    second = made.ask()
    suggest(second, cfg.space)
    second.report(0.6, 1)
    # all but 15 s of the budget spent: the resumed search has no room for another trial
    made.set_user_attr("spent", cfg.time_seconds - 15)
    return made


def test_trials_killed_with_the_search_count_as_failed_after_resume(tiny: str) -> None:
    killed_study(config(space=mlp_space(2), time_seconds=600))
    result = study.resume("killed-test")
    assert result.model == "tiny-tuned:1" and result.trial == 0
    assert result.trials == {"complete": 1, "pruned": 0, "timeout": 0, "failed": 1}
    assert json.loads(result.report["best"].read_text())["trials"]["failed"] == 1
    rows = json.loads(result.report["trials_json"].read_text())
    assert (rows[1]["state"], rows[1]["value"], rows[1]["last_epoch_value"]) == (
        "failed", None, 0.6)  # no value: it never finished
    killed = optuna.load_study(study_name="killed-test", storage=storage()).trials[1]
    assert "stopped while this trial ran" in killed.user_attrs["note"]


def test_a_trial_killed_with_the_search_is_tidied_and_a_portfolio_one_queued_again(
        tiny: str, tmp_path: Path) -> None:
    """A warm-start trial is a configuration known to be good; killed mid-run, it was only
    marked failed, and the resumed search never tried it (the sampler would not propose it).
    Its training run stayed "running" for good: the search that would have closed it died."""
    from kaon.train import runs

    made = killed_study(config(space=mlp_space(2), time_seconds=600))
    run = runs.create_run("tiny-tuned-trial", {}, "tiny", "-", tmp_path)
    running = optuna.trial.Trial(made, made.trials[1]._trial_id)
    running.set_user_attr("warm_start", True)
    running.set_user_attr("runs", [run.id])
    study._fail_orphans(made, "default")
    killed, again = made.get_trials()[1:]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert again.state == optuna.trial.TrialState.WAITING and again.user_attrs["warm_start"]
    assert again.system_attrs["fixed_params"] == killed.params
    assert runs.get_run(run.id).status == "interrupted"


def test_a_portfolio_trial_killed_before_its_params_were_suggested_is_queued_whole(
        tiny: str) -> None:
    """The portfolio queues whole configurations; one killed before its objective had
    suggested them all is queued again from what was queued, not from its few params."""
    made = killed_study(config(space=mlp_space(2), time_seconds=600))
    whole = dict(made.trials[0].params)
    made.enqueue_trial(whole, user_attrs={"warm_start": True})
    assert made.ask().params == {}  # killed at once: nothing suggested yet
    study._fail_orphans(made, "default")
    again = made.get_trials()[-1]
    assert again.state == optuna.trial.TrialState.WAITING and again.user_attrs["warm_start"]
    assert again.system_attrs["fixed_params"] == whole


def test_a_search_interrupted_after_its_model_is_registered_does_not_register_another(
        tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the test evaluation, after the retrain registered the model: the study
    records the model at once, so --resume says so instead of retraining a second version."""
    from kaon.train import TrainingInterrupted
    from kaon.tune.study import TuneInterrupted

    killed_study(config(space=mlp_space(2), time_seconds=600))

    def interrupted(*_: object, **__: object) -> None:
        raise TrainingInterrupted("interrupted")

    monkeypatch.setattr("kaon.train.evaluate.evaluate", interrupted)
    with pytest.raises(TuneInterrupted):
        study.resume("killed-test")
    with pytest.raises(ConfigError, match="already finished and registered tiny-tuned:1"):
        study.resume("killed-test")
    assert [(m.name, m.version) for m in registry.list_models()] == [("tiny-tuned", 1)]


def test_a_one_class_test_split_gives_null_auc_and_strict_metrics_files(
        tmp_path: Path, kaon_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (80, 6, 6), dtype=np.uint8)
    labels = (np.arange(80) % 2).reshape(-1, 1)
    np.savez(tmp_path / "tiny.npz", train_images=images[:60], train_labels=labels[:60],
             test_images=images[60:70], test_labels=np.zeros((10, 1), dtype=np.int64))
    import_dataset(tmp_path / "tiny.npz", "tiny")
    picked_study(config(multi_objective="latency", space=mlp_space(2)))
    result = pick("pick-test", 0)
    assert result.test_metrics["roc_auc"] is None  # one class: no AUC, and never NaN
    written = [*kaon_home.rglob("metrics.json"), result.report["best"]]
    assert any(p.parent.name == "tiny-test" for p in written)  # the evaluation's
    for path in written:
        assert "NaN" not in path.read_text(), path
        json.loads(path.read_text())
    # ... and the user was told before the retrain that the test split is too small
    assert "Warning: The test split of 'tiny'" in capsys.readouterr().err
    assert result.warnings and "fewer than 2" in result.warnings[0]["message"]
