"""Classification metrics, checked against small examples worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from kaon.train.metrics import (
    classification_report,
    confusion_matrix,
    per_class,
    roc_auc,
    roc_curve,
)

# Six samples, three classes. Rows are true classes, columns predictions:
#   true 0: predicted 0, 1      → row [1, 1, 0]
#   true 1: predicted 1         → row [0, 1, 0]
#   true 2: predicted 2, 2, 0   → row [1, 0, 2]
LABELS = torch.tensor([0, 0, 1, 2, 2, 2])
PREDS = torch.tensor([0, 1, 1, 2, 2, 0])
CM = [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values)


def test_confusion_matrix_counts_true_classes_by_row_and_predictions_by_column() -> None:
    assert confusion_matrix(LABELS, PREDS, 3).tolist() == CM


def test_confusion_matrix_has_a_row_and_column_for_absent_classes() -> None:
    assert confusion_matrix(t([0, 1]).long(), t([0, 1]).long(), 4).tolist() == [
        [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_per_class_precision_recall_f1_and_support() -> None:
    # precision = diagonal / column sums [2, 2, 2]; recall = diagonal / row sums [2, 1, 3]
    # f1 = 2pr / (p + r): class 0 → 0.5, class 1 → 2·0.5·1/1.5 = 2/3,
    #                     class 2 → 2·1·(2/3)/(5/3) = 0.8
    scores = per_class(torch.tensor(CM))
    assert scores["precision"] == pytest.approx([0.5, 0.5, 1.0])
    assert scores["recall"] == pytest.approx([0.5, 1.0, 2 / 3])
    assert scores["f1"] == pytest.approx([0.5, 2 / 3, 0.8])
    assert scores["support"] == [2, 1, 3]


def test_a_class_never_present_nor_predicted_scores_zero_not_nan() -> None:
    scores = per_class(torch.tensor([[2, 0], [0, 0]]))
    assert scores["precision"] == [1.0, 0.0]
    assert scores["recall"] == [1.0, 0.0]
    assert scores["f1"] == [1.0, 0.0]
    assert scores["support"] == [2, 0]


def test_classification_report_for_three_classes() -> None:
    proba = torch.nn.functional.one_hot(PREDS, 3).float() * 0.8 + 0.2 / 3
    report = classification_report(LABELS, proba, ["cat", "dog", "fox"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["count"] == 6
    assert report["confusion_matrix"] == CM
    assert report["per_class"]["fox"] == {"precision": pytest.approx(1.0),
                                          "recall": pytest.approx(2 / 3),
                                          "f1": pytest.approx(0.8), "support": 3}
    assert report["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert "roc_auc" not in report


def test_classification_report_for_two_classes_includes_roc_auc() -> None:
    p1 = t([0.1, 0.4, 0.35, 0.8])
    report = classification_report(torch.tensor([0, 0, 1, 1]), torch.stack([1 - p1, p1], 1),
                                   ["normal", "pneumonia"])
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"] == [[2, 0], [1, 1]]
    assert report["roc_auc"] == pytest.approx(0.75)


# ---- ROC AUC: the share of (positive, negative) pairs ranked correctly, ties counting half -----
def test_roc_auc_counts_correctly_ordered_pairs() -> None:
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 → 3/4
    assert roc_auc(torch.tensor([0, 0, 1, 1]), t([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


def test_roc_auc_counts_a_tied_pair_as_half() -> None:
    # positives 0.5, 0.9 vs negatives 0.5, 0.2: tie (½) + 1 + 1 + 1 → 3.5/4
    assert roc_auc(torch.tensor([0, 1, 0, 1]), t([0.5, 0.5, 0.2, 0.9])) == pytest.approx(0.875)


def test_roc_auc_of_all_tied_scores_is_one_half() -> None:
    assert roc_auc(torch.tensor([1, 0, 1, 0, 0]), t([0.3] * 5)) == pytest.approx(0.5)


def test_roc_auc_with_several_tie_groups() -> None:
    # scores 0.2 (neg, pos), 0.6 (neg, pos, pos), 0.9 (neg). Positives: 0.2, 0.6, 0.6.
    # pos 0.2: vs 0.2 tie ½, vs 0.6 0, vs 0.9 0        → 0.5
    # pos 0.6: vs 0.2 1, vs 0.6 tie ½, vs 0.9 0 (×2)   → 3.0
    # total 3.5 of 3·3 = 9 pairs
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    scores = t([0.2, 0.2, 0.6, 0.6, 0.6, 0.9])
    assert roc_auc(labels, scores) == pytest.approx(3.5 / 9)


def test_roc_auc_does_not_depend_on_sample_order() -> None:
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    scores = t([0.2, 0.2, 0.6, 0.6, 0.6, 0.9])
    perm = torch.tensor([5, 3, 0, 4, 1, 2])
    assert roc_auc(labels[perm], scores[perm]) == pytest.approx(roc_auc(labels, scores))


def test_roc_auc_is_one_for_a_perfect_ranking_and_zero_for_a_reversed_one() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    assert roc_auc(labels, t([0.1, 0.2, 0.7, 0.9])) == 1.0
    assert roc_auc(labels, t([0.9, 0.7, 0.2, 0.1])) == 0.0


def test_roc_auc_is_nan_when_only_one_class_is_present() -> None:
    assert math.isnan(roc_auc(torch.tensor([1, 1, 1]), t([0.1, 0.5, 0.9])))
    assert math.isnan(roc_auc(torch.tensor([0, 0]), t([0.1, 0.5])))


# ---- ROC curve ----------------------------------------------------------------------------------
def test_roc_curve_runs_from_origin_through_each_threshold() -> None:
    # scores descending: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg)
    fpr, tpr = roc_curve(torch.tensor([1, 0, 1, 0]), t([0.9, 0.8, 0.7, 0.1]))
    assert fpr == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr == [0.0, 0.5, 0.5, 1.0, 1.0]


def trapezoid_area(fpr: list[float], tpr: list[float]) -> float:
    return sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(fpr) - 1))


def test_area_under_the_roc_curve_equals_roc_auc_without_ties() -> None:
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    scores = t([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    assert trapezoid_area(*roc_curve(labels, scores)) == pytest.approx(roc_auc(labels, scores))


def test_tied_scores_give_a_diagonal_roc_segment_whatever_the_order() -> None:
    for labels in (torch.tensor([0, 1]), torch.tensor([1, 0])):
        fpr, tpr = roc_curve(labels, t([0.5, 0.5]))
        assert trapezoid_area(fpr, tpr) == pytest.approx(0.5)
