"""``kaon tune``'s human summary: readable counts and metrics, never ``nan`` or a dict."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kaon.cli.tune import _print_result, describe_metrics
from kaon.tune.study import TuneResult


def result(**changes: object) -> TuneResult:
    fields: dict[str, object] = {
        "study": "tune-3f9c1a2b", "model": "tiny-tuned:1", "best_value": 0.6667,
        "best_params": {}, "test_metrics": {"accuracy": 0.0, "macro_f1": 0.0,
                                            "roc_auc": math.nan},
        "trials": {"complete": 6, "pruned": 2, "timeout": 0, "failed": 1}, "seconds": 58.2,
        "report": {"best": Path("/r/best.json")}}
    return TuneResult(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_summary_prints_counts_and_metrics_in_words(
        capsys: pytest.CaptureFixture[str]) -> None:
    _print_result(result())
    out = capsys.readouterr().out
    assert "complete 6 · pruned 2 · timeout 0 · failed 1" in out
    assert "accuracy 0.0000 · macro F1 0.0000 · ROC AUC n/a" in out
    assert "{" not in out and "nan" not in out.lower()


def test_the_summary_points_at_the_test_split_warning(
        capsys: pytest.CaptureFixture[str]) -> None:
    _print_result(result(warnings=[{"message": "small", "hint": "grow"}]))
    assert "the test split is too small" in capsys.readouterr().out


def test_a_missing_metric_is_n_a() -> None:
    assert describe_metrics({"accuracy": 0.91, "roc_auc": None}) == "accuracy 0.9100 · ROC AUC n/a"
