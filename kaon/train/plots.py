"""PNG plots a user can open: confusion matrix, training curves, ROC curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def confusion_matrix_png(cm: list[list[int]], class_names: list[str], path: Path,
                         title: str) -> Path:
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k), dpi=110)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45 if k > 4 else 0, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    peak = max(max(row) for row in cm) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i][j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i][j] > peak / 2 else "black")
    return _save(fig, path)


def training_curves_png(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=110)
    for key, ax, label in (("loss", loss_ax, "train"), ("val_loss", loss_ax, "validation"),
                           ("accuracy", acc_ax, "train"),
                           ("val_accuracy", acc_ax, "validation")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, values, marker="o", label=label)
    loss_ax.set_title("loss")
    acc_ax.set_title("accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def roc_png(fpr: list[float], tpr: list[float], auc: float, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4, 4), dpi=110)
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
