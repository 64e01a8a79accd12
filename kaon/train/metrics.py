"""Classification metrics over plain tensors: accuracy, per-class P/R/F1, ROC AUC, confusion."""

from __future__ import annotations

from typing import Any

import torch


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows are true classes, columns predicted classes."""
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


def per_class(cm: torch.Tensor) -> dict[str, list[float]]:
    tp = cm.diag().double()
    predicted = cm.sum(0).double()
    actual = cm.sum(1).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp_min(1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12),
                     torch.zeros_like(tp))
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": actual.long().tolist()}


def roc_auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Binary ROC AUC (Mann–Whitney U with average ranks for ties)."""
    labels = labels.long()
    pos = int(labels.sum())
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = torch.argsort(scores.double())
    sorted_scores = scores.double()[order]
    ranks = torch.empty(len(scores), dtype=torch.float64)
    # average ranks over tied groups
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True,
                                                  return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def roc_curve(labels: torch.Tensor, scores: torch.Tensor) -> tuple[list[float], list[float]]:
    order = torch.argsort(scores.double(), descending=True)
    s = scores.double()[order]
    y = labels.long()[order].double()
    # one point per distinct threshold: the last index of each run of tied scores
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).view(-1),
                      torch.tensor([len(s) - 1])]) if len(s) else torch.empty(0, dtype=torch.long)
    tps = torch.cumsum(y, 0)[last]
    fps = torch.cumsum(1 - y, 0)[last]
    tpr = (tps / max(float(y.sum()), 1.0)).tolist()
    fpr = (fps / max(float((1 - y).sum()), 1.0)).tolist()
    return [0.0, *fpr], [0.0, *tpr]


def classification_report(labels: torch.Tensor, proba: torch.Tensor,
                          class_names: list[str]) -> dict[str, Any]:
    """Everything ``kaon evaluate`` reports, as JSON-ready plain data."""
    k = len(class_names)
    preds = proba.argmax(1)
    cm = confusion_matrix(labels, preds, k)
    pcs = per_class(cm)
    report: dict[str, Any] = {
        "accuracy": float((preds == labels).double().mean()) if len(labels) else float("nan"),
        "count": len(labels),
        "per_class": {name: {m: pcs[m][i] for m in pcs} for i, name in enumerate(class_names)},
        "macro_f1": sum(pcs["f1"]) / k,
        "confusion_matrix": cm.tolist(),
        "class_names": class_names,
    }
    if k == 2:
        report["roc_auc"] = roc_auc(labels, proba[:, 1])
    return report
