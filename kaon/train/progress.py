"""A live progress bar with loss and accuracy, plus one summary line per epoch."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressBar:
    """Rich progress on stderr; a no-op when disabled (library use, tests, --json)."""

    def __init__(self, enabled: bool, total_epochs: int) -> None:
        self.enabled = enabled
        self.total_epochs = total_epochs
        self.console = Console(stderr=True)
        self._progress: Progress | None = None
        self._task: Any = None

    def start_epoch(self, epoch: int, steps: int) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=True, refresh_per_second=8,
            )
            self._progress.start()
        self._task = self._progress.add_task(f"epoch {epoch}/{self.total_epochs}", total=steps,
                                             stats="")

    def update(self, step: int, loss: float, accuracy: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step,
                                  stats=f"loss {loss:.4f} acc {accuracy:.4f}")

    def end_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        if not self.enabled or self._progress is None:
            return
        self._progress.remove_task(self._task)
        parts = [f"{k} {v:.4f}" for k, v in logs.items() if k not in ("lr", "seconds")]
        self.console.print(f"epoch {epoch}/{self.total_epochs}  " + "  ".join(parts)
                           + f"  ({logs.get('seconds', 0):.1f}s)", highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
