"""What happens after each epoch: checkpoint, metrics to SQL and TensorBoard, early stopping,
a deadline."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kaon.nn.spec import EarlyStopping
from kaon.registry.artifacts import load_weights, save_weights
from kaon.train import runs
from kaon.train.checkpoint import CHECKPOINT, save_checkpoint

if TYPE_CHECKING:
    from kaon.train.loop import Trainer

BEST = "best.safetensors"


class Checkpoint:
    """Save the full training state after every epoch (atomically)."""

    def __init__(self, run_dir: Path, saved_epoch: int = 0) -> None:
        self.path = run_dir / CHECKPOINT
        self.saved_epoch = saved_epoch  # the epoch the file on disk holds (0: none yet)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        save_checkpoint(self.path, trainer.state())
        self.saved_epoch = epoch


class RecordMetrics:
    """Per-epoch metrics into the runs database."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        runs.record_epoch(self.run_id, epoch, logs)


class TensorBoard:
    """Scalars as TensorBoard event files under ``RUN_DIR/tensorboard``."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            group = "val" if key.startswith("val_") else ("train" if key != "lr" else "opt")
            self.writer.add_scalar(f"{group}/{key.removeprefix('val_')}", value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class EarlyStop:
    """Stop when the monitored metric stops improving; keep the best weights on disk."""

    def __init__(self, cfg: EarlyStopping, run_dir: Path) -> None:
        self.cfg = cfg
        self.best_path = run_dir / BEST

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        value = logs.get(self.cfg.monitor)
        if value is None:
            return
        sign = -1.0 if self.cfg.monitor == "val_loss" else 1.0
        best = trainer.extra.get("best")
        if best is None or sign * (value - best) > self.cfg.min_delta:
            trainer.extra.update(best=value, best_epoch=epoch, wait=0)
            save_weights(trainer.model.state_dict(), self.best_path)
        else:
            trainer.extra["wait"] = trainer.extra.get("wait", 0) + 1
            if trainer.extra["wait"] >= self.cfg.patience:
                trainer.should_stop = True
                trainer.extra["stopped_epoch"] = epoch

    def restore_best(self, trainer: Trainer) -> None:
        if self.best_path.is_file():
            trainer.model.load_state_dict(load_weights(self.best_path))


class Deadline:
    """End the run by ``at`` (on ``clock``): after each epoch, if the epochs left would not
    all end in time at the pace so far, shorten the run to those that do (the schedule is
    re-planned over them, :meth:`Trainer.shorten`). The pace is the median wall time of the
    last three epochs, callbacks included, from the second epoch on: the first carries the
    warm-up, so after it the run is only ended, when not even one more epoch fits.
    ``kaon tune`` ends its final retrain by the budget this way, as a guard behind its
    estimate of the epochs that fit. ``at`` may be a function, read after each epoch: the end
    of a tuning trial's fit moves with its search's cut-off."""

    before_checkpoint = True  # the epoch's checkpoint holds the shortened plan

    def __init__(self, at: float | Callable[[], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.at, self.clock = at, clock
        self.last: float | None = None
        self.walls: list[float] = []

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        now = self.clock()
        if self.last is not None:
            self.walls = [*self.walls[-2:], now - self.last]
        self.last = now
        pace = statistics.median(self.walls) if self.walls else logs.get("seconds", 0.0)
        at = self.at() if callable(self.at) else self.at
        fit = math.floor(max(at - now, 0.0) / max(pace, 1e-6))
        if self.walls or fit == 0:
            trainer.shorten(epoch + fit)  # no-op unless fewer epochs than planned fit
