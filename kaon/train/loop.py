"""The training loop over in-memory tensors (no per-sample DataLoader).

Images stay uint8 on the training device and are normalised per batch. Callbacks see each
finished epoch; the loop itself knows nothing of databases, files or TensorBoard.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from kaon.nn.preprocess import Normalizer, random_hflip, random_shift
from kaon.nn.spec import TrainSpec
from kaon.train.checkpoint import TrainState
from kaon.train.optim import (
    Annealing,
    balanced_weights,
    cycled_momentum,
    make_loss,
    make_optimizer,
    make_scheduler,
    predictions,
)
from kaon.train.progress import ProgressBar


@dataclass
class TensorData:
    """Train and validation tensors, already on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None


class Callback(Protocol):
    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None: ...


@dataclass
class Trainer:
    spec: TrainSpec
    model: nn.Module
    data: TensorData
    normalizer: Normalizer
    num_classes: int
    device: torch.device
    callbacks: list[Callback] = field(default_factory=list)
    progress: bool = False
    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # callbacks' resumable state
    should_stop: bool = False

    def __post_init__(self) -> None:
        n = len(self.data.y_train)
        self.steps_per_epoch = math.ceil(n / self.spec.batch_size)
        self.optimizer = make_optimizer(self.spec.optimizer, self.model.parameters())
        self.scheduler, self.per_step = make_scheduler(
            self.spec.schedule, self.optimizer, self.spec.epochs, self.steps_per_epoch)
        out_units = _out_units(self.model, self.data.x_train[:1].to(self.device),
                               self.normalizer)
        weights = (balanced_weights(self.data.y_train, self.num_classes).to(self.device)
                   if self.spec.class_weight == "balanced" else None)
        self.loss_fn = make_loss(self.spec.loss, out_units, self.num_classes, weights)
        self.generator = torch.Generator().manual_seed(self.spec.seed)
        self.autocast: Callable[[], Any] = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
            if self.device.type == "cuda" else contextlib.nullcontext)

    # ---- state for checkpoints --------------------------------------------------------------
    def state(self) -> TrainState:
        return TrainState(
            epoch=self.epoch, model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler else None,
            generator=self.generator.get_state(), cpu_rng=torch.get_rng_state(),
            extra={**self.extra, "history": self.history},
        )

    def load_state(self, state: TrainState) -> None:
        self.model.load_state_dict(state.model)
        replan = state.extra.get("replan")
        if replan:  # shortened before the checkpoint: the re-planned schedule, then its state
            self.scheduler = Annealing(self.optimizer, **replan)
        self.optimizer.load_state_dict(state.optimizer)  # after: its rates are the saved ones
        if self.scheduler and state.scheduler:
            self.scheduler.load_state_dict(state.scheduler)
        self.generator.set_state(state.generator)
        torch.set_rng_state(state.cpu_rng)
        self.epoch = state.epoch
        self.history = list(state.extra.get("history", []))
        self.extra = {k: v for k, v in state.extra.items() if k != "history"}
        self.should_stop = "stopped_epoch" in self.extra

    @property
    def epochs(self) -> int:
        """The epochs this run trains: the spec's, unless :meth:`shorten` cut them (kept in
        ``extra``, so a checkpoint carries it)."""
        return int(self.extra.get("epochs", self.spec.epochs))

    def shorten(self, epochs: int) -> None:
        """Train ``epochs`` in all (never fewer than are done, never more than planned).

        A per-step schedule (one-cycle, cosine) is re-planned over the steps left: a cosine
        from the rate it is at down to its floor, so a run cut short still anneals (a plain
        stop would end it at a high rate) and its rate never jumps up, even in a warm-up.
        One-cycle's momentum follows the same cosine up to its ceiling, as in its own end.
        A per-epoch step schedule does not depend on the length and is kept.
        """
        epochs = max(self.epoch, min(epochs, self.epochs))
        if epochs == self.epochs or self.should_stop:
            return
        self.extra["epochs"] = epochs
        if epochs > self.epoch and self.per_step and self.scheduler is not None:
            groups = self.optimizer.param_groups
            self.extra["replan"] = {"start": [g["lr"] for g in groups],
                                    "end": [g.get("min_lr", 0.0) for g in groups],
                                    "steps": (epochs - self.epoch) * self.steps_per_epoch,
                                    "momentum": cycled_momentum(self.scheduler, self.optimizer)}
            self.scheduler = Annealing(self.optimizer, **self.extra["replan"])

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self) -> list[dict[str, float]]:
        bar = ProgressBar(self.progress, self.epochs)
        try:
            while self.epoch < self.epochs and not self.should_stop:
                started = time.perf_counter()
                bar.total_epochs = self.epochs  # a callback may have shortened the run
                bar.start_epoch(self.epoch + 1, self.steps_per_epoch)
                logs = self.train_epoch(bar)
                if self.data.x_val is not None and self.data.y_val is not None:
                    val_loss, val_acc = self.evaluate(self.data.x_val, self.data.y_val)
                    logs.update(val_loss=val_loss, val_accuracy=val_acc)
                logs["lr"] = self.optimizer.param_groups[0]["lr"]
                logs["seconds"] = time.perf_counter() - started
                self.epoch += 1
                self.history.append(logs)
                bar.end_epoch(self.epoch, logs)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, self.epoch, logs)
        finally:
            bar.close()
        return self.history

    def train_epoch(self, bar: ProgressBar) -> dict[str, float]:
        self.model.train()
        x_all, y_all = self.data.x_train, self.data.y_train
        n, bs = len(y_all), self.spec.batch_size
        perm = torch.randperm(n, generator=self.generator).to(x_all.device)
        aug = self.spec.data.augment
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        report_every = max(1, self.steps_per_epoch // 50)
        for step in range(self.steps_per_epoch):
            idx = perm[step * bs:(step + 1) * bs]
            xb = x_all[idx].to(self.device, non_blocking=True)
            yb = y_all[idx].to(self.device, non_blocking=True)
            if aug.random_shift:
                xb = random_shift(xb, aug.random_shift, self.generator)
            if aug.hflip:
                xb = random_hflip(xb, self.generator)
            with self.autocast():
                logits = self.model(self.normalizer(xb))
                loss = self.loss_fn(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.per_step and self.scheduler is not None:
                self.scheduler.step()
            loss_sum += loss.detach() * len(yb)
            correct += (predictions(logits.detach()) == yb).sum()
            if bar.enabled and (step + 1) % report_every == 0:
                seen = min((step + 1) * bs, n)
                bar.update(step + 1, float(loss_sum) / seen, float(correct) / seen)
        if not self.per_step and self.scheduler is not None:
            self.scheduler.step()
        return {"loss": float(loss_sum) / n, "accuracy": float(correct) / n}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(mean loss, accuracy) in eval mode."""
        self.model.eval()
        loss_sum, correct = 0.0, 0
        step = self.spec.eval_batch_size
        for start in range(0, len(y), step):
            xb = x[start:start + step].to(self.device, non_blocking=True)
            yb = y[start:start + step].to(self.device, non_blocking=True)
            with self.autocast():
                logits = self.model(self.normalizer(xb))
                loss_sum += float(self.loss_fn(logits, yb)) * len(yb)
            correct += int((predictions(logits) == yb).sum())
        self.model.train()
        return loss_sum / max(len(y), 1), correct / max(len(y), 1)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        outs = []
        for start in range(0, len(x), self.spec.eval_batch_size):
            xb = x[start:start + self.spec.eval_batch_size].to(self.device, non_blocking=True)
            with self.autocast():
                outs.append(self.model(self.normalizer(xb)).float())
        return torch.cat(outs)


def _out_units(model: nn.Module, sample: torch.Tensor, normalizer: Normalizer) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        units = int(model(normalizer(sample)).shape[1])
    model.train(was_training)
    return units
