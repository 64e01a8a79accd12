"""``evaluate(MODEL)``: metrics on a dataset split, written as JSON and PNG plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaon import jsonsafe
from kaon.data import load_dataset
from kaon.db.models import DEFAULT_WORKSPACE
from kaon.errors import NotFoundError, SignatureError
from kaon.jsonsafe import finite
from kaon.registry import load_model, update_metrics
from kaon.registry.store import version_dir
from kaon.train import plots, runs
from kaon.train.metrics import classification_report, roc_curve


@dataclass
class Evaluation:
    model: str
    dataset: str
    split: str
    report: dict[str, Any]
    files: dict[str, Path]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "split": self.split,
                **self.report, "files": {k: str(v) for k, v in self.files.items()}}


def evaluate(ref: str, data: str | None = None, split: str = "test",
             workspace: str = DEFAULT_WORKSPACE) -> Evaluation:
    """Evaluate a registered model on ``data`` (default: the dataset it was trained on)."""
    loaded = load_model(ref, workspace)
    info = loaded.info
    dataset = load_dataset(data or info.dataset, workspace)
    holdout = (info.spec.get("data") or {}).get("test_fraction")
    if split == "test" and "test" not in dataset.splits and holdout and data in (None,
                                                                                info.dataset):
        dataset = dataset.with_test_holdout(holdout)  # the images held out at training time
    if split not in dataset.splits:
        raise NotFoundError(f"Dataset {dataset.name!r} has no split {split!r} "
                            f"(it has: {', '.join(dataset.splits)}).")
    if dataset.shape != info.signature.shape:
        raise SignatureError(f"Dataset {dataset.name!r} has {dataset.shape} images but model "
                             f"{info.ref} expects {info.signature.shape}.")
    if dataset.num_classes != len(info.signature.class_names):
        raise SignatureError(f"Dataset {dataset.name!r} has {dataset.num_classes} classes but "
                             f"model {info.ref} predicts {len(info.signature.class_names)}.")
    part = dataset.splits[split]
    proba = loaded.predict_proba(part.images)
    report = classification_report(part.labels, proba, info.signature.class_names)

    out_dir = _output_dir(info.run_id, info.name, info.version, workspace) / \
        f"{dataset.name}-{split}"
    title = f"{info.ref} on {dataset.name}/{split}: accuracy {report['accuracy']:.4f}"
    files = {"metrics": out_dir / "metrics.json",
             "confusion_matrix": plots.confusion_matrix_png(
                 report["confusion_matrix"], info.signature.class_names,
                 out_dir / "confusion_matrix.png", title)}
    if "roc_auc" in report:
        fpr, tpr = roc_curve(part.labels, proba[:, 1])
        files["roc"] = plots.roc_png(fpr, tpr, report["roc_auc"], out_dir / "roc.png", title)
    if info.run_id:
        history = runs.get_run(info.run_id, workspace).history
        if history:
            files["training_curves"] = plots.training_curves_png(
                history, out_dir.parent / "training_curves.png", f"{info.ref} training")
    files["metrics"].write_text(jsonsafe.dumps(  # an AUC of one class is NaN: null here
        {"model": info.ref, "dataset": dataset.name, "split": split, **report}, indent=2))
    summary = finite({f"{dataset.name}/{split}": {
        k: report[k] for k in ("accuracy", "macro_f1", "roc_auc") if k in report}})
    update_metrics(info.ref, {"evaluations": {**info.metrics.get("evaluations", {}), **summary}},
                   workspace)
    return Evaluation(info.ref, dataset.name, split, report, files)


def _output_dir(run_id: str | None, name: str, version: int,
                workspace: str = DEFAULT_WORKSPACE) -> Path:
    if run_id:
        try:
            return runs.get_run(run_id, workspace).directory / "eval"
        except NotFoundError:
            pass
    return version_dir(workspace, name, version) / "eval"
