"""``kaon tune``: Optuna ask-and-tell over subprocess trials, under one wall-clock budget.

Search (parallel trials, Hyperband pruning) → retrain the best configuration on train +
validation → evaluate on test → register with lineage to the study → save the report (with,
for a multi-objective search, a training spec per Pareto point). ``pick`` retrains another
finished trial of a study (a smaller model from the front) the same way.
The study lives in Kaon's own database through Optuna's RDB storage.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import secrets
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from rich.console import Console
from rich.live import Live

from kaon import registry
from kaon.config import get_settings
from kaon.data import load_dataset
from kaon.errors import ConfigError, DataError, KaonError, NotFoundError
from kaon.jsonsafe import finite
from kaon.names import MAX_NAME, NAME_PATTERN, is_valid_name
from kaon.nn.spec import Seed, parse_spec
from kaon.procs import usable_cores
from kaon.train import TrainingInterrupted, train
from kaon.tune import alive
from kaon.tune import budget as b
from kaon.tune.checks import check_test_split, emit
from kaon.tune.report import trial_state, trials_table, write_report
from kaon.tune.runner import GpuSlots, Outcome, kill_all, run_trial, tidy_runs
from kaon.tune.space import IntRange, SearchSpace, check_cv_folds, portfolio, suggest, to_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Some regimes for parameter", module="optuna")


class TuneConfig(BaseModel):
    """Everything a search needs; stored in the study so ``--resume`` needs only its name."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    time_seconds: float = Field(gt=0)
    objective: Literal["accuracy", "auc"] = "accuracy"
    multi_objective: Literal["latency", "params"] | None = None
    workers: int = Field(default_factory=lambda: default_workers(), ge=1, le=64)
    trial_seconds: float | None = Field(default=None, gt=0)
    seed: Seed = 0
    model_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    sampler: Literal["tpe", "random"] = "tpe"
    pruning: bool = True
    warm_start: bool = True  # try the portfolio's configurations first (decision 0013)
    # K-fold cross-validation of every trial on train + val (0: off; None: on, with 3 folds,
    # when the validation split is smaller than CV_BELOW images)
    cv_folds: int | None = Field(default=None, ge=0, le=10)
    # score each trial on perturbed validation images (kaon.tune.robust; None: on exactly
    # when the trials are cross-validated, decision 0020)
    robust: bool | None = None
    space: SearchSpace = SearchSpace()
    workspace: str = Field(default="default", pattern=NAME_PATTERN)  # where runs and the model go

    _folds = field_validator("cv_folds")(check_cv_folds)  # its error names cv_folds (--cv)

    @property
    def name(self) -> str:
        return self.model_name or f"{self.dataset}-tuned"

    @property
    def folds(self) -> int:
        """Folds each trial is cross-validated on (0: a plain hold-out; before :func:`adapt`
        has settled the default, also 0)."""
        return self.cv_folds or 0

    @property
    def scores_robust(self) -> bool:
        """Trials are scored on perturbed validation images."""
        return bool(self.robust)

    @model_validator(mode="after")
    def _names_fit(self, info: ValidationInfo) -> TuneConfig:
        if not is_valid_name(self.dataset):  # a path: the CLI imports it first, this does not
            raise ValueError(f"dataset {self.dataset!r} is not a dataset name; import a folder "
                             "or file first with `kaon data import PATH --name NAME "
                             "[--size HxW]` (or give the path to `kaon tune --data`)")
        if not re.fullmatch(NAME_PATTERN, f"{self.name}-trial"):
            raise ValueError(f"model name {self.name!r} is too long or not allowed "
                             "(trials are named NAME-trial, at most 64 characters)")
        # a stored study's settings are checked again on --resume, maybe on a smaller machine
        stored = isinstance(info.context, dict) and info.context.get("stored")
        if self.workers > usable_cores() * 2 and not stored:
            raise ValueError(f"--workers {self.workers} is more than twice the "
                             f"{usable_cores()} cores")
        return self


MIN_PER_CLASS = 5  # training images of each class: a test hold-out, validation and folds
CV_BELOW = 1000  # validation images under which a plain hold-out is too noisy to select on
SMALL_DATA = 4000  # train + val images under which the default epoch range is stretched


def adapt(cfg: TuneConfig, n_train: int, n_val: int) -> TuneConfig:
    """Settle the data-dependent defaults once, before the study is stored.

    - Cross-validation: 3 folds when the validation split is small (BreastMNIST has 78
      images: one image moves accuracy by 1.3 points, and the search picks the luckiest).
    - Epochs: with few images an epoch is a handful of steps, so the default range (3-12,
      made for tens of thousands of images) is stretched until the longest schedule has
      about as many steps as on 4,000 images; a space file that sets epochs is kept as it is.
    """
    changes: dict[str, Any] = {}
    if cfg.cv_folds is None:
        changes["cv_folds"] = 3 if n_val < CV_BELOW else 0
    if cfg.robust is None:
        changes["robust"] = (changes.get("cv_folds", cfg.cv_folds) or 0) >= 2
    pooled = n_train + n_val
    if "epochs" not in cfg.space.model_fields_set and pooled < SMALL_DATA:
        stretch = min(10, SMALL_DATA // max(pooled, 1))
        low, high = cfg.space.epochs.low, cfg.space.epochs.high
        changes["space"] = cfg.space.model_copy(
            update={"epochs": IntRange(low=low * stretch, high=high * stretch)})
    return cfg.model_copy(update=changes) if changes else cfg


def cv_sizes(n_train: int, n_val: int, folds: int) -> tuple[int, int]:
    """(train, held-out) images of one fit: one fold of train + val under cross-validation."""
    if folds < 2:
        return n_train, n_val
    pooled = n_train + n_val
    return pooled - pooled // folds, pooled // folds


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_workers() -> int:
    """One trial per GPU where there are GPUs, else one per core."""
    return max(1, gpu_count() or usable_cores())


@dataclass
class TuneResult:
    study: str
    model: str | None
    best_value: float | None
    best_params: dict[str, Any]
    test_metrics: dict[str, Any]
    trials: dict[str, int]
    seconds: float
    report: dict[str, Path] = field(default_factory=dict)
    pareto: list[dict[str, Any]] = field(default_factory=list)  # each with its spec's path
    trial: int | None = None  # the trial that was retrained
    picked: bool = False  # by `--pick`, not as the search's best
    robust: bool = False  # values are the objective on perturbed validation images
    # checks that warned rather than refused (a test split too small): message and hint
    warnings: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "model": self.model, "best_value": self.best_value,
                "robust": self.robust,
                "best_params": self.best_params, "test": self.test_metrics,
                "trials": self.trials, "seconds": round(self.seconds, 1),
                "report": {k: str(v) for k, v in self.report.items()}, "pareto": self.pareto,
                "trial": self.trial, "picked": self.picked, "warnings": self.warnings}


def storage() -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on Kaon's database URL (one per URL and process)."""
    return _storage_for(get_settings().db_url)


@functools.lru_cache(maxsize=4)
def _storage_for(url: str) -> optuna.storages.RDBStorage:
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    from kaon.db import get_engine

    get_engine()  # make sure Kaon's own schema (and the SQLite folder) exist first
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _sampler(cfg: TuneConfig, done: int = 0) -> optuna.samplers.BaseSampler:
    """``done``: trials already in the study (a resumed search must not replay them)."""
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed + done)
    return optuna.samplers.TPESampler(seed=cfg.seed + done, n_startup_trials=4,
                                      multivariate=True, group=True, constant_liar=True)


def _pruner(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    if not cfg.pruning or cfg.multi_objective:
        return optuna.pruners.NopPruner()
    # The first rung after a quarter of the longest schedule, not after one epoch: early
    # epochs are noisy (small validation sets, warm-up), and judging on them pruned trials
    # that would have won (PneumoniaMNIST, docs/benchmarks.md).
    top = cfg.space.max_epochs
    return optuna.pruners.HyperbandPruner(min_resource=max(1, top // 4), max_resource=top,
                                          reduction_factor=3)


def tune(cfg: TuneConfig, *, progress: bool = False) -> TuneResult:
    """Start a new search. Bad input is refused before any trial runs."""
    started = time.monotonic()
    sizes = _check_inputs(cfg)
    emit(sizes["warnings"])
    cfg = adapt(cfg, int(sizes["n_train"]), int(sizes["n_val"]))
    sizes = _fit_sizes(cfg, sizes)
    check_trial_time(cfg, sizes["min_trial"])
    feasible = functools.partial(
        b.check_feasible, min_trial=sizes["min_trial"], n_train=int(sizes["n_train"]),
        n_val=int(sizes["n_val"]), cap=trial_cap(cfg, sizes), folds=cfg.folds,
        total=cfg.time_seconds, trial_time=cfg.trial_seconds is not None)
    feasible(cfg.time_seconds - (time.monotonic() - started))
    timed = _time_portfolio(cfg, sizes)
    # again, with what the timing took spent (seconds on a busy machine), so that a budget
    # it used up is refused here, not after the search failed to launch a single trial
    feasible(cfg.time_seconds - (time.monotonic() - started), portfolio_timed=True)
    study_name = f"tune-{secrets.token_hex(4)}"
    directions = ["maximize"] + (["minimize"] if cfg.multi_objective else [])
    study = optuna.create_study(storage=storage(), sampler=_sampler(cfg), pruner=_pruner(cfg),
                                study_name=study_name, directions=directions)
    study.set_user_attr("kaon", cfg.model_dump(mode="json"))
    with alive.kept_alive(study):  # until the search ends: --resume refuses it meanwhile
        sizes["speedup"] = _speedups(cfg, timed)
        sizes["all_cores"] = {t.params["family"]: t.all_cores for t in timed if t.all_cores}
        study.set_user_attr("speedup", sizes["speedup"])
        study.set_user_attr("all_cores", sizes["all_cores"])
        study.set_user_attr("spent", 0.0)
        if cfg.warm_start:
            _warm_start(study, cfg, sizes, timed)
        return _search(study, cfg, sizes, started, spent_before=0.0, progress=progress)


def check_trial_time(cfg: TuneConfig, min_trial: float) -> None:
    """``--trial-time`` must fit in ``--time`` and hold the cheapest trial."""
    trial, total = cfg.trial_seconds, cfg.time_seconds
    if trial is None:
        return
    if trial >= total:
        share = b.TRIAL_SHARE_CV if cfg.folds >= 2 else b.TRIAL_SHARE
        raise ConfigError(
            f"--trial-time {b.format_duration(trial)} is longer than the whole --time "
            f"{b.format_duration(total)}: one trial could use up the budget that the search "
            "and the final retrain share.",
            hint=f"Lower --trial-time below --time (or leave it out: a trial then gets "
                 f"{share:.0%} of --time), or give --time {b.minutes_for(trial / share)} or "
                 "more.")
    if trial < min_trial:
        raise ConfigError(f"--trial-time {b.format_duration(trial)} is shorter than the "
                          f"cheapest trial on this dataset (about {min_trial:.0f}s).",
                          hint=f"Give --trial-time {min_trial * 2:.0f}s or more.")


def resume(study_name: str, *, progress: bool = False) -> TuneResult:
    """Continue a killed search with the budget it had left; finished trials are kept."""
    started = time.monotonic()
    summary = _load_study(study_name)
    alive.check_not_running(summary)
    cfg = _stored_config(summary)
    if summary.user_attrs.get("model"):
        raise ConfigError(f"Study {study_name} already finished and registered "
                          f"{summary.user_attrs['model']}.", hint="Start a new search instead.")
    study = optuna.load_study(study_name=study_name, storage=storage(),
                              sampler=_sampler(cfg, len(summary.trials)), pruner=_pruner(cfg))
    with alive.kept_alive(study, claim=True):  # claimed before its orphans are failed
        _fail_orphans(study, cfg.workspace)
        sizes = _fit_sizes(cfg, _check_inputs(cfg))
        emit(sizes["warnings"])
        sizes["speedup"] = dict(study.user_attrs.get("speedup", {}))
        sizes["all_cores"] = dict(study.user_attrs.get("all_cores", {}))
        spent = float(study.user_attrs.get("spent", 0.0))
        return _search(study, cfg, sizes, started, spent_before=spent, progress=progress)


def _stored_config(study: optuna.Study) -> TuneConfig:
    """The settings a study was started with (checked as when it started, except against
    this machine's cores)."""
    stored = study.user_attrs.get("kaon")
    if not isinstance(stored, dict):
        raise ConfigError(f"Study {study.study_name} was not made by `kaon tune`: it has no "
                          "settings to continue with.",
                          hint="Give the name of a study that `kaon tune` printed.")
    try:
        return TuneConfig.model_validate(stored, context={"stored": True})
    except ValidationError as exc:
        raise ConfigError(f"Study {study.study_name}'s settings are not valid here: "
                          f"{exc.errors()[0]['msg']}.",
                          hint="Start a new search with `kaon tune --data …`.") from None


def _fail_orphans(study: optuna.Study, workspace: str) -> None:
    """Mark failed the trials that were running when the search was killed: they died with
    its process. They are counted and reported as failed, with no value, and their training
    runs are marked interrupted. A warm-start (portfolio) trial among them is queued again:
    it was one of the configurations known to be good, and the sampler would not propose it
    on its own."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        tidy_runs(list(t.user_attrs.get("runs", [])), "stopped with its search", workspace)
        trial = optuna.trial.Trial(study, t._trial_id)
        trial.set_user_attr("outcome", "failed")
        # a note, not an "error": the trial itself did nothing wrong
        trial.set_user_attr("note", "the search was stopped while this trial ran (marked "
                                    "failed on --resume)")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        # its configuration as the portfolio queued it (the params, if it was killed
        # before they were all suggested, would be short of some)
        fixed = t.system_attrs.get("fixed_params") or t.params
        if t.user_attrs.get("warm_start") and "family" in fixed:
            study.enqueue_trial(dict(fixed), user_attrs={"warm_start": True})


def _tidy_running(study: optuna.Study, workspace: str) -> None:
    """The training runs of the trials still running: interrupted, never to be resumed."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        tidy_runs(list(t.user_attrs.get("runs", [])), "stopped with its search", workspace)


def _load_study(study_name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=storage())
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage())]
        raise NotFoundError(f"No tuning study {study_name!r}. Known: "
                            f"{', '.join(names[-20:]) or '(none)'}.",
                            hint="Study names are printed by `kaon tune` (and in --json)."
                            ) from None


# ---- checks before any work -------------------------------------------------------------------
def _check_inputs(cfg: TuneConfig) -> dict[str, Any]:
    dataset = load_dataset(cfg.dataset, cfg.workspace)
    if "train" not in dataset.splits or len(dataset.splits["train"]) == 0:
        raise DataError(f"Dataset {cfg.dataset!r} has no training images.",
                        hint="Import a dataset with a train split (an image folder: a "
                             "sub-folder per class).")
    counts = torch.bincount(dataset.splits["train"].labels)
    present = int((counts > 0).sum())
    if present < 2:
        raise DataError(f"Dataset {cfg.dataset!r} has only {present} class with images; "
                        "a classifier needs at least two.",
                        hint="Give it images of at least two classes (an image folder: a "
                             "sub-folder per class).")
    fewest = int(counts[counts > 0].min())
    if fewest < MIN_PER_CLASS:  # test, validation and the folds are all cut from them
        raise DataError(f"Dataset {cfg.dataset!r} has a class with only {fewest} training "
                        f"image(s); kaon tune needs at least {MIN_PER_CLASS} per class.",
                        hint="Add images, or drop the classes that have too few.")
    if cfg.objective == "auc" and dataset.num_classes != 2:
        raise ConfigError(f"--objective auc needs a binary dataset; {cfg.dataset!r} has "
                          f"{dataset.num_classes} classes.", hint="Use --objective accuracy.")
    if cfg.objective == "auc" and (cfg.cv_folds or 0) > fewest:
        # a held-out fold without one class has no ROC AUC: every trial would score NaN
        raise ConfigError(f"--cv {cfg.cv_folds} leaves a fold without images of a class: the "
                          f"smallest class has {fewest} training images, and ROC AUC needs "
                          "both classes in every held-out fold.",
                          hint=f"Give --cv {max(2, min(fewest, 10))} or fewer, or add images.")
    # no test split (a plain image folder, a CSV): hold out 10% of train, the same in every
    # trial and in the final retrain, so the reported test metrics are on unseen images
    test_fraction = None if "test" in dataset.splits else 0.1
    n_total = len(dataset.splits["train"]) - round((test_fraction or 0) *
                                                   len(dataset.splits["train"]))
    n_val = len(dataset.splits["val"]) if "val" in dataset.splits else round(0.1 * n_total)
    n_train = n_total if "val" in dataset.splits else n_total - n_val
    per_image = _calibrate(dataset.shape, dataset.num_classes, trial_threads(cfg))
    return {"n_train": n_train, "n_val": n_val, "per_image": per_image,
            "test_fraction": test_fraction, "shape": tuple(dataset.shape),
            "classes": dataset.num_classes,
            "warnings": check_test_split(dataset, test_fraction)}


def _fit_sizes(cfg: TuneConfig, sizes: dict[str, Any]) -> dict[str, Any]:
    """Images per fit (one fold under cross-validation) and the cheapest trial's seconds."""
    folds = cfg.folds
    n_train, n_val = cv_sizes(int(sizes["n_train"]), int(sizes["n_val"]), folds)
    fixed = b.fixed_seconds(sizes["per_image"], n_val, folds, cfg.scores_robust)
    min_trial = fixed + b.epoch_seconds(sizes["per_image"], n_train, n_val) \
        * cfg.space.epochs.low * max(folds, 1)
    return {**sizes, "n_train": n_train, "n_val": n_val, "min_trial": min_trial}


def _calibrate(shape: tuple[int, int, int], classes: int, threads: int) -> float:
    """Seconds per image per epoch of the cheapest model (an MLP), on a trial's threads."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(),
                              torch.nn.Linear(shape[0] * shape[1] * shape[2], 128),
                              torch.nn.ReLU(), torch.nn.Linear(128, classes))
    return _seconds_per_image(mlp, shape, classes, threads, batch=256)


def _seconds_per_image(model: torch.nn.Module, shape: tuple[int, int, int], classes: int,
                       threads: int, batch: int, steps: int = 4, windows: int = 3,
                       device: torch.device | None = None) -> float:
    """Seconds per image of ``model``'s training steps on ``threads`` / ``device``: after one
    warm-up step, the fastest of ``windows`` windows of ``steps`` steps. (One window varied by
    ±13% from call to call on this VM, which moved Fashion-MNIST's fitted CNN epochs between 6
    and 9; the fastest is the steadiest, and the epoch estimate has its own overhead factor.)"""
    from kaon.nn.preprocess import prefers_channels_last

    device = device or torch.device("cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    fmt = torch.channels_last if prefers_channels_last(model) else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(batch, *shape, device=device).to(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    try:
        step()  # warm-up: allocations, kernel selection
        best = float("inf")
        for _ in range(windows):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        return best / (steps * batch)
    finally:
        torch.set_num_threads(before)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trial_threads(cfg: TuneConfig) -> int:
    """Torch threads of one trial process: the cores shared among the parallel trials."""
    return max(1, usable_cores() // cfg.workers)


def trial_cap(cfg: TuneConfig, sizes: dict[str, Any]) -> float:
    """Seconds one trial may run: ``--trial-time``, else a share of the budget (a larger one
    for a cross-validated trial, which is several fits)."""
    share = b.TRIAL_SHARE_CV if cfg.folds >= 2 else b.TRIAL_SHARE
    return cfg.trial_seconds or max(share * cfg.time_seconds, 2 * sizes["min_trial"])


@dataclass
class _Timed:
    """A portfolio configuration and its model's training seconds per image, on one trial's
    threads and device, and on all cores (None on a GPU, or with no cores to spare)."""

    params: dict[str, Any]
    alone: float
    all_cores: float | None


def _time_portfolio(cfg: TuneConfig, sizes: dict[str, Any]) -> list[_Timed]:
    """Time the portfolio's models; one that cannot be built for these images is left out."""
    from kaon.nn.build import build_model
    from kaon.nn.devices import resolve_device

    device, threads = resolve_device(), trial_threads(cfg)  # where trial processes train
    cores = usable_cores()
    spare = device.type == "cpu" and cores > threads
    if not (cfg.warm_start or spare):  # neither the warm start nor a speed-up needs it
        return []
    timed = []
    for params in portfolio(cfg.space):
        choice = suggest(optuna.trial.FixedTrial({**params, "epochs": cfg.space.epochs.high}),
                         cfg.space)
        torch.manual_seed(cfg.seed)
        try:
            model = build_model(parse_spec(to_spec("warm-start", cfg.dataset, choice)),
                                sizes["shape"], sizes["classes"])
            alone = _seconds_per_image(model, sizes["shape"], sizes["classes"], threads,
                                       choice["batch_size"], device=device)
            all_cores = _seconds_per_image(model, sizes["shape"], sizes["classes"], cores,
                                           choice["batch_size"]) if spare else None
        except (KaonError, RuntimeError):  # e.g. three poolings of a 6x6 image
            continue
        timed.append(_Timed(params, alone, all_cores))
    return timed


def _speedups(cfg: TuneConfig, timed: list[_Timed]) -> dict[str, float]:
    """Per model family, how much faster the final retrain (all cores) trains the portfolio's
    model of that family than a trial (its share of the cores) does: 90% of what was measured,
    at least 1. Without it the search stopped early, budgeting the retrain as if it ran on one
    trial's threads (0.76 of a 15-minute budget on Fashion-MNIST). Once the family's
    portfolio trial completes, its real pace replaces this (:meth:`_Search._measure_speedup`)."""
    most = usable_cores() / trial_threads(cfg)
    return {t.params["family"]: b.clamp_speedup(0.9 * t.alone / t.all_cores, most)
            for t in timed if t.all_cores}


def _warm_start(study: optuna.Study, cfg: TuneConfig, sizes: dict[str, Any],
                timed: list[_Timed]) -> None:
    """Queue the portfolio's configurations as the first trials, each with as many epochs
    as fit the trial cap; one that cannot fit is left out."""
    epochs = cfg.space.epochs
    for t in timed:
        fitted = b.fitted_epochs(t.alone, int(sizes["n_train"]), int(sizes["n_val"]),
                                 cfg.folds, trial_cap(cfg, sizes), epochs.low,
                                 epochs.high, robust=cfg.scores_robust)
        if fitted is not None:
            study.enqueue_trial({**t.params, "epochs": fitted}, user_attrs={"warm_start": True})


# ---- the search -------------------------------------------------------------------------------
class TuneInterrupted(KaonError):
    exit_code = 130


class _Search:
    """Shared state of the worker threads."""

    def __init__(self, study: optuna.Study, cfg: TuneConfig, sizes: dict[str, Any],
                 budget: b.Budget, spent_before: float) -> None:
        self.study, self.cfg, self.sizes, self.budget = study, cfg, sizes, budget
        self.spent_before = spent_before
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # a trial ended: the cutoff may move
        self.running = 0
        self.stop = threading.Event()
        self.log_trials = False
        self.trial_cap = trial_cap(cfg, sizes)
        self.threads = trial_threads(cfg)
        self.gpus = GpuSlots(gpu_count(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        self.folder = get_settings().home / "studies" / study.study_name
        self._estimate = self._retrain_estimate()

    def _retrain_estimate(self) -> float:
        """What the search keeps for the best trial's retrain (decision 0034: a finished trial
        behind the best is never retrained, and a running trial keeps room for its own,
        :meth:`own_cutoff`). When the best's time cut its epochs short, the retrain trains it
        longer (decision 0032): room for that too, up to ``RETRAIN_SHARE`` of ``--time``, and
        never so much that the cut-off falls sooner than the cheapest trial from now."""
        n_train, n_val = int(self.sizes["n_train"]), int(self.sizes["n_val"])
        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not done:
            return b.retrain_estimate(b.one_fit(self.trial_cap, self.cfg.folds), n_train, n_val)
        best = best_of(self.study, self.cfg)
        plain = b.retrain_estimate(_fit_seconds(best), n_train, n_val, _speedup(best, self.sizes))
        stretch = intended_epochs(best, self.cfg.space) / max(trained_epochs(best), 1)
        if stretch <= 1:
            return plain
        ahead = (self.budget.deadline - b.FINISH_SECONDS - time.monotonic()
                 - self.sizes["min_trial"])
        return max(plain, min(plain * stretch, b.RETRAIN_SHARE * self.cfg.time_seconds, ahead))

    def cutoff(self) -> float:
        """When running trials must stop for the best's retrain: earlier as a best with a
        longer retrain completes, later when a finished trial's retrain replaces the cautious
        first estimate, or a best that the retrain will train longer is overtaken."""
        return self.budget.search_cutoff(self._estimate)

    def own_cutoff(self, launched: float, family: str | None) -> float:
        """The latest a trial launched at ``launched`` may end so that its own retrain, should
        it finish as the best, still fits (:func:`kaon.tune.budget.own_cutoff`): the longer
        it runs, the longer that retrain."""
        pace = b.retrain_per_trial_second(int(self.sizes["n_train"]), int(self.sizes["n_val"]),
                                          self.cfg.folds, _family_speedup(family, self.sizes))
        return b.own_cutoff(launched, self.budget.deadline, pace)

    def may_launch(self, now: float) -> bool:
        """Whether the cheapest trial still fits before the cut-off, and before its own at a
        trial's pace (the slowest retrain), so that no trial starts only to be killed."""
        least = now + self.sizes["min_trial"]
        return (self.budget.may_launch(now, self._estimate, self.sizes["min_trial"])
                and least <= self.own_cutoff(now, None))

    def spent(self) -> float:
        return self.spent_before + time.monotonic() - self.budget.start

    def loop(self) -> None:
        """One worker: launch trials while the budget allows. When it does not, wait while
        other trials run: the first to complete can move the cutoff later (a measured retrain
        replaces the cautious estimate), and a worker that had left would not come back."""
        while True:
            with self.changed:
                if self.stop.is_set():
                    return
                now = time.monotonic()
                if not self.may_launch(now):
                    if self.running == 0:
                        self.changed.notify_all()  # the waiting workers end too
                        return
                    self.changed.wait(timeout=1.0)
                    continue
                trial = self.study.ask()
                self.running += 1
            try:
                self._run(trial, now)
            except Exception as exc:  # a broken trial must not take the search down
                if self.stop.is_set():
                    return  # killed by Ctrl-C: left running, as _run leaves it
                with self.lock:
                    trial.set_user_attr("outcome", "failed")
                    trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
                    self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            finally:
                with self.changed:
                    self.running -= 1
                    self.changed.notify_all()

    def _run(self, trial: optuna.Trial, launched: float) -> None:
        choice = suggest(trial, self.cfg.space)
        spec = to_spec(f"{self.cfg.name}-trial", self.cfg.dataset, choice, self.cfg.seed)
        spec["data"]["test_fraction"] = self.sizes.get("test_fraction")
        job = {"spec": spec, "objective": self.cfg.objective, "threads": self.threads,
               "workspace": self.cfg.workspace, "folds": self.cfg.folds,
               "robust": self.cfg.scores_robust,
               "latency": self.cfg.multi_objective == "latency"}
        # the portfolio's configurations are known to be good: their first, noisiest epochs
        # must not end them (under Hyperband most ResNets fell at the first rung, decision 0020)
        warm = bool(trial.user_attrs.get("warm_start"))
        cap = launched + self.trial_cap
        family = trial.params.get("family")
        # its fits are shortened to end in time, rather than the trial killed with nothing
        # (the portfolio's ResNet, its epochs fitted to the cap, ran past it at 2 of 3
        # BreastMNIST seeds); when the cut-off moves (a best with a longer retrain finished)
        # or its own does (its family's speed-up was measured), it is told its new end
        def kill_at() -> float:
            return min(cap, self.cutoff(), self.own_cutoff(launched, family))

        def ends_by() -> float:
            return b.trial_ends_by(kill_at(), launched)

        job["ends_by"] = ends_by()
        with self.gpus.slot() as env:  # (a trial launched as Ctrl-C came: killed at once)
            outcome = run_trial(trial, job, lambda: 0.0 if self.stop.is_set() else kill_at(),
                                self.folder / f"trial-{trial.number}.log",
                                prune=not warm and isinstance(self.study.pruner,
                                                              optuna.pruners.HyperbandPruner),
                                report=not self.cfg.multi_objective,
                                max_epochs=self.cfg.space.max_epochs, env=env,
                                lock=self.lock, ends_by=ends_by)
        if self.stop.is_set() and outcome.state != "complete":  # killed by Ctrl-C, not
            return  # failed: left running; --resume fails it as killed with its search
        with self.lock:
            self._tell(trial, outcome)
            self._measure_speedup(trial, outcome, warm)
            self._estimate = self._retrain_estimate()
            self.study.set_user_attr("spent", self.spent())
            if self.log_trials:
                print(_trial_line(trial, outcome.value, self.cfg.objective),
                      file=sys.stderr, flush=True)

    def _measure_speedup(self, trial: optuna.Trial, outcome: Outcome, warm: bool) -> None:
        """A portfolio trial that completed sets its family's retrain speed-up from its real
        fit against its model timed on all cores (decision 0033). The two timings before the
        search leave out that trials share the cores: on PneumoniaMNIST the ResNet's retrain
        ran 1.97 times as fast per image as its trial, where they gave 1.49. The cap is
        twice the timings' (cores per trial): sharing slowed an MLP's trial by more than
        the cores' ratio (2.67 measured on BreastMNIST, 2 cores)."""
        family = trial.params.get("family")
        all_cores = self.sizes.get("all_cores", {}).get(family)
        if not (warm and all_cores and outcome.state == "complete"
                and "fit_seconds" in outcome.info):
            return
        epochs = int(outcome.info.get("epochs_trained") or trial.params["epochs"])
        measured = b.measured_speedup(float(outcome.info["fit_seconds"]), epochs, all_cores,
                                      int(self.sizes["n_train"]), int(self.sizes["n_val"]))
        self.sizes["speedup"][family] = b.clamp_speedup(measured,
                                                        2 * usable_cores() / self.threads)
        self.study.set_user_attr("speedup", self.sizes["speedup"])

    def _tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        trial.set_user_attr("seconds", round(outcome.seconds, 2))
        trial.set_user_attr("outcome", outcome.state)
        trial.set_user_attr("epochs", outcome.epochs)
        for key in ("run_id", "params", "latency_ms", "folds", "plain"):
            if key in outcome.info:
                trial.set_user_attr(key, outcome.info[key])
        if "fit_seconds" in outcome.info:  # one fit (of several under cross-validation)
            trial.set_user_attr("fit_seconds", round(outcome.info["fit_seconds"], 2))
        trained = outcome.info.get("epochs_trained")
        if trained is not None and trained != trial.params.get("epochs"):
            trial.set_user_attr("epochs_trained", int(trained))  # shortened to end in time
        if outcome.error:
            trial.set_user_attr("error", outcome.error[:500])
        state = optuna.trial.TrialState
        if outcome.state == "complete" and not _finite(outcome.value):
            # Optuna fails a NaN silently; say why, rather than count it complete
            trial.set_user_attr("outcome", "failed")
            trial.set_user_attr("error", f"its {self.cfg.objective} was {outcome.value} (not "
                                         "a number): a held-out fold or the validation split "
                                         "may lack a class")
            self.study.tell(trial, state=state.FAIL)
        elif outcome.state == "complete" and outcome.value is not None:
            values: list[float] = [outcome.value]
            if self.cfg.multi_objective == "latency":
                values.append(float(outcome.info.get("latency_ms", float("inf"))))
            elif self.cfg.multi_objective == "params":
                values.append(float(outcome.info.get("params", 0)))
            self.study.tell(trial, values if len(values) > 1 else values[0])
        elif outcome.state in ("pruned", "timeout") and outcome.epochs > 0 and \
                not self.cfg.multi_objective:
            self.study.tell(trial, state=state.PRUNED)  # its last reported value stands
        else:
            self.study.tell(trial, state=state.FAIL)


def _trial_line(trial: optuna.Trial, value: float | None, objective: str) -> str:
    """One ended trial, for a log: what the live table shows of it (its last value, from
    what the search was told: no storage read)."""
    attrs = trial.user_attrs
    shown = f"{value:.4f}" if value is not None else "-"
    what = f" ({attrs['error']})" if attrs.get("error") else ""
    return (f"trial {trial.number}: {attrs.get('outcome', '?')}, {objective} {shown}, "
            f"{trial.params.get('family', '?')}, {attrs.get('epochs', 0)} epochs, "
            f"{attrs.get('seconds', 0):.0f} s{what}")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _search(study: optuna.Study, cfg: TuneConfig, sizes: dict[str, Any], started: float,
            spent_before: float, progress: bool) -> TuneResult:
    budget = b.Budget(started, max(cfg.time_seconds - spent_before, 0.0))
    search = _Search(study, cfg, sizes, budget, spent_before)
    search.log_trials = not progress  # a job's log, or --json: a line per trial on stderr
    threads = [threading.Thread(target=search.loop, name=f"kaon-tune-{i}", daemon=True)
               for i in range(cfg.workers)]
    console = Console(stderr=True)
    live = Live(trials_table(study, cfg.objective), console=console, refresh_per_second=1,
                transient=False) if progress else contextlib.nullcontext()
    try:
        for t in threads:
            t.start()
        with live:
            while any(t.is_alive() for t in threads):
                time.sleep(0.5)
                with search.lock:
                    study.set_user_attr("spent", search.spent())
                    if isinstance(live, Live):
                        live.update(trials_table(study, cfg.objective))
    except KeyboardInterrupt:
        search.stop.set()
        kill_all()
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: wait no longer
            until = time.monotonic() + 10
            for t in threads:  # each sees its trial process end, and tells nothing
                t.join(max(0.0, until - time.monotonic()))
        with search.lock:
            study.set_user_attr("spent", search.spent())
            _tidy_running(study, cfg.workspace)
        raise TuneInterrupted(
            f"Search interrupted; finished trials are kept in {study.study_name}.",
            hint=f"Continue with `kaon tune --resume {study.study_name}`.") from None
    try:
        return _finish(study, cfg, search, sizes, budget, progress)
    except TrainingInterrupted:
        raise TuneInterrupted(
            f"Interrupted during the final retrain of {study.study_name}.",
            hint=f"Run it again with `kaon tune --resume {study.study_name}`.") from None


def _speedup(trial: optuna.trial.FrozenTrial, sizes: dict[str, Any]) -> float:
    """How much faster the retrain runs this trial's model family than the trial did."""
    return _family_speedup(trial.params.get("family"), sizes)


def _family_speedup(family: str | None, sizes: dict[str, Any]) -> float:
    """How much faster the retrain runs ``family`` than a trial does (1: not known)."""
    return float(sizes.get("speedup", {}).get(family, 1.0))


def _fit_seconds(trial: optuna.trial.FrozenTrial) -> float:
    """A finished trial's seconds as if it had made one fit (a cross-validated one made
    several), start-up included: what the retrain estimate scales."""
    if "fit_seconds" in trial.user_attrs:
        return b.STARTUP_SECONDS + float(trial.user_attrs["fit_seconds"])
    return float(trial.user_attrs.get("seconds", 0.0))


# ---- the final model --------------------------------------------------------------------------
def retrain_spec(cfg: TuneConfig, trial: optuna.trial.FrozenTrial, test_fraction: float | None,
                 name: str | None = None) -> dict[str, Any]:
    """The training spec that refits ``trial``'s configuration on train + validation and
    registers it as ``name`` (default: the search's model name)."""
    choice = suggest(optuna.trial.FixedTrial(trial.params), cfg.space)
    raw = to_spec(name or cfg.name, cfg.dataset, choice, cfg.seed)
    raw["epochs"] = trained_epochs(trial)
    raw["data"].update(train_on_val=True, test_fraction=test_fraction)
    raw["register"] = {"name": name or cfg.name}
    return raw


def trained_epochs(trial: optuna.trial.FrozenTrial) -> int:
    """The epochs ``trial``'s score came from: its own, unless it was shortened to end in
    time (kaon.tune.worker)."""
    return int(trial.user_attrs.get("epochs_trained", trial.params.get("epochs", 1)))


def _front_order(t: optuna.trial.FrozenTrial) -> tuple[float, float, int]:
    """Pareto points most accurate first, then by the second objective."""
    return -t.values[0], t.values[1], t.number


def best_of(study: optuna.Study, cfg: TuneConfig) -> optuna.trial.FrozenTrial:
    """The finished trial the search retrains: the best, or for ``--multi-objective`` the
    most accurate point of the Pareto front."""
    return min(study.best_trials, key=_front_order) if cfg.multi_objective \
        else study.best_trial


def intended_epochs(trial: optuna.trial.FrozenTrial, space: SearchSpace) -> int:
    """The epochs ``trial`` was to train given time: its sampled ones, or the space's most
    for a portfolio configuration, whose epochs are as many as fit the trial cap."""
    if trial.user_attrs.get("warm_start"):
        return space.epochs.high
    return int(trial.params.get("epochs", 1))


def retrain_epochs(trial: optuna.trial.FrozenTrial, space: SearchSpace, sizes: dict[str, Any],
                   left: float) -> int:
    """The final retrain's epochs: as many as end within ``left`` seconds at ``trial``'s
    pace (:func:`kaon.tune.budget.retrain_seconds`), at least one, and at most those it was
    to train (:func:`intended_epochs`): a trial whose time cut its epochs short (the
    portfolio's, or one shortened to end in time) trains longer when the time is there
    (decision 0032)."""
    trained = max(trained_epochs(trial), 1)
    per_epoch = b.retrain_seconds(_fit_seconds(trial), int(sizes["n_train"]),
                                  int(sizes["n_val"]), _speedup(trial, sizes)) / trained
    most = max(trained, intended_epochs(trial, space))
    return max(1, min(most, int(left / per_epoch)))


def point_name(cfg: TuneConfig, number: int) -> str:
    """The model name of trial ``number`` retrained on its own: ``NAME-tN`` (NAME shortened
    when the whole would pass the 64 characters of a name; never NAME itself, whose versions
    are the search's best models)."""
    suffix = f"-t{number}"
    return f"{cfg.name[:MAX_NAME - len(suffix)]}{suffix}"


def second_key(cfg: TuneConfig) -> str:
    """The Pareto points' key of the second objective."""
    return "latency_ms" if cfg.multi_objective == "latency" else "params"


def pareto_front(study: optuna.Study, cfg: TuneConfig, test_fraction: float | None,
                 folder: Path) -> list[dict[str, Any]]:
    """The Pareto front, most accurate first; each point's training spec (train + validation,
    registered as ``NAME-tN``) is saved as ``folder/trial-N.yaml`` for ``kaon train``."""
    folder.mkdir(parents=True, exist_ok=True)
    points = []
    for t in sorted(study.best_trials, key=_front_order):
        path = folder / f"trial-{t.number}.yaml"
        point = {"trial": t.number, cfg.objective: t.values[0], second_key(cfg): t.values[1],
                 "family": t.params.get("family"), "epochs": trained_epochs(t),
                 "spec": str(path)}
        if "params" in t.user_attrs:
            point.setdefault("params", t.user_attrs["params"])
        spec = retrain_spec(cfg, t, test_fraction, point_name(cfg, t.number))
        note = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in point.items() if k not in ("trial", "spec"))
        path.write_text(f"# Pareto point: trial {t.number} of {study.study_name} ({note}).\n"
                        f"# Train it: kaon train {path}  (or: kaon tune --resume "
                        f"{study.study_name} --pick {t.number})\n"
                        + yaml.safe_dump(spec, sort_keys=False))
        points.append(point)
    return points


def _counts(study: optuna.Study) -> dict[str, int]:
    """Trials per outcome; a trial without one (marked failed on --resume) by its state."""
    states = [trial_state(t) for t in study.get_trials(deepcopy=False)]
    return {s: states.count(s) for s in ("complete", "pruned", "timeout", "failed")}


def describe_counts(counts: dict[str, int]) -> str:
    """``complete 6 · pruned 2 · timeout 0 · failed 1``"""
    return " · ".join(f"{state} {n}" for state, n in counts.items())


def target_names(cfg: TuneConfig) -> list[str]:
    """The objectives' names, for the report's plots."""
    first = "validation " + ("ROC AUC" if cfg.objective == "auc" else "accuracy")
    if cfg.scores_robust:
        first += " (perturbed images)"
    second = {"latency": "latency ms", "params": "parameters"}
    return [first] + ([second[cfg.multi_objective]] if cfg.multi_objective else [])


def _retrain(study: optuna.Study, cfg: TuneConfig, raw: dict[str, Any],
             trial: optuna.trial.FrozenTrial, progress: bool, deadline: float | None = None,
             on_registered: Callable[[str], None] | None = None,
             ) -> tuple[str, dict[str, Any], Path, int]:
    """Train ``raw`` (a :func:`retrain_spec`), evaluate it on test and register it with lineage
    to ``trial`` of ``study``: (model, test metrics, its report folder, epochs trained).
    ``deadline`` (``time.monotonic()``): the training is shortened to end by then."""
    from kaon.train.callbacks import Deadline
    from kaon.train.evaluate import evaluate

    spec = parse_spec(raw, source=f"trial {trial.number} of {study.study_name}")
    result = train(spec, progress=progress, test=False,
                   callbacks=[Deadline(deadline)] if deadline is not None else None,
                   lineage={"study": study.study_name, "trial": trial.number},
                   workspace=cfg.workspace)
    assert result.model is not None
    if on_registered is not None:  # before anything else can be interrupted
        on_registered(result.model)
    evaluation = evaluate(result.model, workspace=cfg.workspace)
    test = finite({k: evaluation.report[k] for k in ("accuracy", "macro_f1", "roc_auc")
                   if k in evaluation.report})
    report_dir = registry.get(result.model, cfg.workspace).artifact.parent / "tune-report"
    registry.update_lineage(result.model, {"report": str(report_dir)}, cfg.workspace)
    return result.model, test, report_dir, int(result.metrics["epochs"])


def _finish(study: optuna.Study, cfg: TuneConfig, search: _Search, sizes: dict[str, Any],
            budget: b.Budget, progress: bool) -> TuneResult:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    counts = _counts(study)
    if not complete:
        failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        errors = [t.user_attrs.get("error") for t in failed if t.user_attrs.get("error")]
        if errors and not counts.get("timeout") and not counts.get("pruned"):
            raise KaonError(f"Every trial of {study.study_name} failed "
                            f"({describe_counts(counts)}); the first: "
                            f"{errors[0]}", hint="Check the dataset and the --space file.")
        raise KaonError(f"No trial of {study.study_name} finished within the budget "
                        f"({describe_counts(counts)}).",
                        hint="Give a larger --time or a smaller --space.")
    best = best_of(study, cfg)
    raw = retrain_spec(cfg, best, sizes.get("test_fraction"))
    # the retrain must end inside the budget: its epochs are as many as the time left holds
    raw["epochs"] = retrain_epochs(best, cfg.space, sizes,
                                   budget.deadline - time.monotonic() - b.FINISH_SECONDS)
    # ... and if the estimate was too hopeful (on BreastMNIST a retrain ran 1.65x slower than
    # estimated and the search ended at 1.06 of its budget), the retrain is shortened to end
    # by the budget all the same
    retrain_started = time.monotonic()
    # what a --resume after an interruption needs: the time spent so far, and the model as
    # soon as it is registered (a resumed study would otherwise register a second version)
    study.set_user_attr("spent", search.spent())
    model, test, report_dir, epochs = _retrain(
        study, cfg, raw, best, progress, deadline=budget.deadline - b.FINISH_SECONDS,
        on_registered=lambda name: study.set_user_attr("model", name))
    retrain_seconds = time.monotonic() - retrain_started
    pareto = pareto_front(study, cfg, sizes.get("test_fraction"), report_dir / "pareto") \
        if cfg.multi_objective else []
    summary = {"study": study.study_name, "best_trial": best.number,
               "best_value": best.values[0], "best_params": best.params,
               "trial_epochs": trained_epochs(best), "retrain_epochs": epochs,
               "retrain_planned_epochs": raw["epochs"],
               "retrain_speedup": _speedup(best, sizes),
               "retrain_seconds": round(retrain_seconds, 1), "cv_folds": cfg.folds,
               "robust": cfg.scores_robust, "test": test,
               "pareto": pareto, "trials": counts, "warnings": sizes.get("warnings", [])}
    files = write_report(study, report_dir, summary, target_names(cfg))
    if pareto:
        files["pareto_specs"] = report_dir / "pareto"
    study.set_user_attr("model", model)
    study.set_user_attr("spent", search.spent())
    return TuneResult(study.study_name, model, best.values[0], best.params, test, counts,
                      search.spent(), files, pareto, trial=best.number,
                      robust=cfg.scores_robust, warnings=sizes.get("warnings", []))


def pick(study_name: str, number: int, *, name: str | None = None,
         progress: bool = False) -> TuneResult:
    """Retrain finished trial ``number`` of a study (e.g. a smaller model from its Pareto
    front) on train + validation with the epochs it had, evaluate it on test and register it
    as ``name`` (default ``NAME-tN``) with lineage to the study. No time budget applies."""
    started = time.monotonic()
    study = _load_study(study_name)
    cfg = _stored_config(study)
    trial = _finished_trial(study, cfg, number)
    sizes = _check_inputs(cfg)
    emit(sizes["warnings"])
    raw = retrain_spec(cfg, trial, sizes.get("test_fraction"), name or point_name(cfg, number))
    model, test, report_dir, epochs = _retrain(study, cfg, raw, trial, progress)
    counts = _counts(study)
    summary = {"study": study.study_name, "picked_trial": number, "values": trial.values,
               "params": trial.params, "retrain_epochs": epochs, "test": test,
               "trials": counts, "warnings": sizes["warnings"]}
    files = write_report(study, report_dir, summary, target_names(cfg))
    return TuneResult(study.study_name, model, trial.values[0], trial.params, test, counts,
                      time.monotonic() - started, files, trial=number, picked=True,
                      robust=cfg.scores_robust, warnings=sizes["warnings"])


def _finished_trial(study: optuna.Study, cfg: TuneConfig,
                    number: int) -> optuna.trial.FrozenTrial:
    """Trial ``number`` of ``study`` if it finished, else a ConfigError listing those that did."""
    trials = study.get_trials(deepcopy=False)
    found = next((t for t in trials if t.number == number), None)
    if found is not None and found.state == optuna.trial.TrialState.COMPLETE:
        return found
    finished = [t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = sorted(t.number for t in study.best_trials) if cfg.multi_objective and finished \
        else []
    what = (f"has no trial {number}" if found is None else
            f"trial {number} did not finish "
            f"({found.user_attrs.get('outcome', found.state.name.lower())})")
    hint = (f"Pick one of its Pareto front: {', '.join(map(str, front))}." if front else
            f"Finished trials: {', '.join(map(str, finished[:40]))}." if finished else
            "None of its trials finished; continue the search with --resume.")
    raise ConfigError(f"Study {study.study_name} {what}; only a finished trial can be picked.",
                      hint=hint)
