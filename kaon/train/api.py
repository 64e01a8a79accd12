"""``train(spec)`` and ``resume(run_id)``: dataset → model → loop → test metrics → registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from kaon.config import get_settings
from kaon.data import Dataset, Split, load_dataset
from kaon.db.models import DEFAULT_WORKSPACE
from kaon.errors import ConfigError, DataError, KaonError
from kaon.nn.build import build_model, count_parameters, output_units
from kaon.nn.devices import resolve_device
from kaon.nn.preprocess import Normalizer, channel_stats, prefers_channels_last
from kaon.nn.spec import TrainSpec, load_spec, parse_spec
from kaon.registry import Signature, register
from kaon.train import runs
from kaon.train.callbacks import Checkpoint, EarlyStop, RecordMetrics, TensorBoard
from kaon.train.checkpoint import CHECKPOINT, TrainState, load_checkpoint
from kaon.train.loop import Callback, TensorData, Trainer


class TrainingInterrupted(KaonError):
    exit_code = 130


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    model: str | None  # "name:version" once registered
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        name, _, version = (self.model or "").partition(":")
        return {"run_id": self.run_id, "run_dir": str(self.run_dir),
                "model": name or None, "version": int(version) if version else None,
                "metrics": self.metrics}


def train(spec: TrainSpec | str | Path, overrides: list[str] | None = None, *,
          progress: bool = False, device: torch.device | None = None,
          callbacks: list[Callback] | None = None, test: bool = True,
          lineage: dict[str, Any] | None = None, workspace: str = DEFAULT_WORKSPACE,
          on_run_created: Callable[[str], None] | None = None,
          run_id: str | None = None) -> TrainResult:
    """Train a spec (object or YAML path) from scratch, evaluate on test, register.

    ``test=False`` leaves the test split untouched (tuning trials must not see it).
    ``lineage`` is recorded with the registered version (e.g. the tuning study it came from).

    ``callbacks`` run after Kaon's own at the end of every epoch
    (``on_epoch_end(trainer, epoch, logs)``); one whose ``before_checkpoint`` is true runs
    before the epoch's checkpoint is saved. The run and the model belong to ``workspace``;
    ``on_run_created(run_id)`` is called once the run exists (a job records it to resume);
    ``run_id`` (from ``runs.new_run_id()``) names the run in advance.
    """
    if not isinstance(spec, TrainSpec):
        spec = load_spec(spec, overrides)
    dataset = load_dataset(spec.data.dataset, workspace)
    setup = _Setup(spec, dataset, device or resolve_device(), keep_test=test)
    _check_before_run(setup, workspace)
    run = runs.create_run(spec.name, spec.model_dump(mode="json"), dataset.name,
                          setup.dataset_hash, get_settings().runs_dir, workspace, run_id)
    (run.directory / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"),
                                                            sort_keys=False))
    if on_run_created is not None:
        on_run_created(run.id)
    return _run(setup, run.id, run.directory, progress, None, callbacks or [], lineage,
                workspace)


def resume(run_id: str, *, progress: bool = False, device: torch.device | None = None,
           callbacks: list[Callback] | None = None,
           workspace: str = DEFAULT_WORKSPACE) -> TrainResult:
    """Continue an interrupted run from its last checkpoint; ends as an uninterrupted run."""
    run = runs.get_run(run_id, workspace)
    if run.status == "succeeded":
        raise ConfigError(f"Run {run_id} already finished; nothing to resume.",
                          hint="Start a new run with `kaon train SPEC`.")
    checkpoint = run.directory / CHECKPOINT
    if not checkpoint.is_file():
        raise ConfigError(f"Run {run_id} has no checkpoint yet (it stopped in epoch 1).",
                          hint="Start it again with `kaon train SPEC`.")
    spec = parse_spec(run.spec, source=f"run {run_id}")
    setup = _Setup(spec, load_dataset(run.dataset, workspace), device or resolve_device())
    if setup.dataset_hash != run.dataset_hash:
        raise DataError(f"Dataset {run.dataset!r} changed since run {run_id} started "
                        f"(content hash {setup.dataset_hash[:12]} ≠ {run.dataset_hash[:12]}).",
                        hint="Resume needs the same data; start a new run instead.")
    _check_before_run(setup, workspace)
    state = load_checkpoint(checkpoint)
    runs.set_status(run_id, "running")
    return _run(setup, run_id, run.directory, progress, state, callbacks or [], None, workspace)


def _check_before_run(setup: _Setup, workspace: str = DEFAULT_WORKSPACE) -> None:
    """Mistakes that would otherwise surface only after the whole run."""
    spec = setup.spec
    if spec.early_stopping and setup.data.x_val is None:
        raise ConfigError("early_stopping needs validation data, but this run has none.",
                          hint="Set data.val_fraction > 0 or remove early_stopping.")
    if spec.parent:
        from kaon.registry import get

        get(spec.parent, workspace)  # NotFoundError, listing the known models, before any training


def data_device(device: torch.device, tensors: list[torch.Tensor | None]) -> torch.device:
    """Keep the data on the GPU when it takes under half its free memory, else on the host."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    size = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    return device if size < free // 2 else torch.device("cpu")


class _Setup:
    """Tensors, normaliser and a freshly initialised model for a spec."""

    def __init__(self, spec: TrainSpec, dataset: Dataset, device: torch.device,
                 keep_test: bool = True) -> None:
        self.spec, self.dataset, self.device = spec, dataset, device
        self.dataset_hash = dataset.content_hash()
        if "train" not in dataset.splits:
            raise DataError(f"Dataset {dataset.name!r} has no 'train' split "
                            f"(it has: {', '.join(dataset.splits)}).")
        if dataset.num_classes < 2:
            raise DataError(f"Dataset {dataset.name!r} has {dataset.num_classes} class; "
                            "classification needs at least 2.")
        if spec.data.test_fraction and "test" not in dataset.splits:
            dataset = dataset.with_test_holdout(spec.data.test_fraction)
            self.dataset = dataset
        train = dataset.splits["train"]
        test = dataset.splits.get("test") if keep_test else None  # trials never see test
        if spec.data.limit:
            train = train.subset(slice(0, spec.data.limit))
        val = dataset.splits.get("val")
        fraction = spec.data.val_fraction
        if fraction is None:
            fraction = 0.0 if val is not None else 0.1
        if fraction > 0 and spec.data.cv_folds is None:  # folds hold out their own
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(spec.seed))
            n_val = max(1, round(len(train) * fraction))
            val, train = train.subset(order[-n_val:]), train.subset(order[:-n_val].sort().values)
        if spec.data.cv_folds is not None:  # tuning trials: one fold of train + val held out
            pool = train if val is None else Split(torch.cat([train.images, val.images]),
                                                   torch.cat([train.labels, val.labels]))
            train, val = pool.fold(spec.data.cv_folds, spec.data.cv_fold, spec.seed)
        if spec.data.train_on_val and val is not None:
            train = Split(torch.cat([train.images, val.images]),
                          torch.cat([train.labels, val.labels]))
            val = None
        norm = spec.data.normalize
        mean, std = norm.mean, norm.std
        if mean is None or std is None:
            auto_mean, auto_std = channel_stats(train.images)
            mean, std = mean or auto_mean, std or auto_std
        c = dataset.shape[0]
        if len(mean) != c or len(std) != c:
            raise ConfigError(f"data.normalize needs {c} value(s) per channel, got mean={mean} "
                              f"std={std}.")
        self.mean, self.std = mean, std
        on = data_device(device, [train.images, val.images if val is not None else None,
                                  test.images if test is not None else None])
        self.data = TensorData(
            train.images.to(on), train.labels.to(on),
            val.images.to(on) if val is not None else None,
            val.labels.to(on) if val is not None else None,
        )
        self.test = (test.images.to(on), test.labels.to(on)) if test is not None else None
        torch.manual_seed(spec.seed)
        self.model = build_model(spec, dataset.shape, dataset.num_classes).to(device)
        self.out_units = output_units(spec, dataset.num_classes)

    def signature(self) -> Signature:
        return Signature(shape=self.dataset.shape, mean=self.mean, std=self.std,
                         class_names=self.dataset.class_names,
                         output="sigmoid" if self.out_units == 1 else "softmax")


def _run(setup: _Setup, run_id: str, run_dir: Path, progress: bool,
         state: TrainState | None, user_callbacks: list[Callback],
         lineage: dict[str, Any] | None, workspace: str = DEFAULT_WORKSPACE) -> TrainResult:
    spec = setup.spec
    early = EarlyStop(spec.early_stopping, run_dir) if spec.early_stopping else None
    board = TensorBoard(run_dir)
    callbacks: list[Any] = [RecordMetrics(run_id)]
    if early:
        callbacks.append(early)
    checkpoint = Checkpoint(run_dir)
    # a callback that changes the run (Deadline shortens it) goes before the checkpoint, so a
    # run interrupted right after keeps the change when it is resumed
    first = [c for c in user_callbacks if getattr(c, "before_checkpoint", False)]
    callbacks += [board, *first, checkpoint, *(c for c in user_callbacks if c not in first)]
    channels_last = prefers_channels_last(setup.model)
    if channels_last:
        setup.model.to(memory_format=torch.channels_last)
    normalizer = Normalizer(setup.mean, setup.std, setup.device, channels_last)
    trainer = Trainer(spec, setup.model, setup.data, normalizer, setup.dataset.num_classes,
                      setup.device, callbacks, progress)
    if state is not None:
        trainer.load_state(state)
        checkpoint.saved_epoch = trainer.epoch
    try:
        history = trainer.fit()
        if early:
            early.restore_best(trainer)
        metrics = _final_metrics(trainer, setup, history)
        model_ref = None
        if spec.register_ is not None:
            # a run shortened to end in time (callbacks.Deadline) registers the epochs it
            # trained, not the plan (in metrics); the schedule re-planned at the cut is not
            # in the spec
            trained = spec.model_copy(update={"epochs": trainer.epochs})
            info = register(
                spec.register_.name or spec.name, trainer.model.state_dict(),
                spec=trained.model_dump(mode="json"), signature=setup.signature(),
                dataset=setup.dataset.name, dataset_hash=setup.dataset_hash, metrics=metrics,
                run_id=run_id, parent=spec.parent, alias=spec.register_.alias, lineage=lineage,
                workspace=workspace,
            )
            model_ref = info.ref
            metrics["model"] = info.ref
    except KeyboardInterrupt:
        runs.set_status(run_id, "interrupted")
        if checkpoint.saved_epoch == 0:
            raise TrainingInterrupted(
                f"Training interrupted in epoch 1 of run {run_id}; no checkpoint was written yet.",
                hint="Start it again with `kaon train SPEC`.") from None
        raise TrainingInterrupted(
            f"Training interrupted; the checkpoint of epoch {checkpoint.saved_epoch} is kept in "
            f"{run_dir}.", hint=f"Continue with `kaon train --resume {run_id}`.") from None
    except BaseException as exc:
        runs.set_status(run_id, "failed", error=str(exc))
        raise
    finally:
        board.close()
    runs.set_status(run_id, "succeeded", metrics=metrics)
    return TrainResult(run_id, run_dir, model_ref, metrics, history)


def _final_metrics(trainer: Trainer, setup: _Setup,
                   history: list[dict[str, float]]) -> dict[str, Any]:
    last = history[-1] if history else {}
    metrics: dict[str, Any] = {f"train_{k}" if not k.startswith("val_") else k: v
                               for k, v in last.items() if k not in ("lr", "seconds")}
    metrics["epochs"] = trainer.epoch
    if trainer.epochs != setup.spec.epochs:  # shortened to end in time
        metrics["planned_epochs"] = setup.spec.epochs
    metrics["train_seconds"] = round(sum(h.get("seconds", 0.0) for h in history), 3)
    metrics["parameters"] = count_parameters(trainer.model)
    if setup.test is not None:
        loss, acc = trainer.evaluate(*setup.test)
        metrics.update(test_loss=loss, test_accuracy=acc)
    return metrics
