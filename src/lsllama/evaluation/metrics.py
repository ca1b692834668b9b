"""Sequence-task metrics, from scikit-learn and scipy so that they mean what everyone expects.

Both are imported when scores are computed, not with this module: the training loop imports it, and
libraries loaded at start-up stay resident through every training step, adding to the peak memory that
`benchmarks/speed.py` compares (`tests/test_heap.py` checks that training's imports leave them out)."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(gold: list[int], pred: list[int], names: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=ids, average=None, zero_division=0
    )
    _, _, macro_f1, _ = precision_recall_fscore_support(gold, pred, labels=ids, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(macro_f1),
        "n": len(gold),
        "per_class": _per_class(names, precision, recall, f1, support),
        "confusion_matrix": confusion_matrix(gold, pred, labels=ids).tolist(),
    }


def _per_class(names: list[str], precision, recall, f1, support) -> dict[str, dict[str, float]]:
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def multi_label_metrics(gold: np.ndarray, pred: np.ndarray, names: list[str]) -> dict[str, Any]:
    """gold, pred: (examples, labels) of 0/1. Micro F1 pools every (example, label) decision; macro F1
    averages the labels' F1; subset accuracy counts examples whose whole label set is right."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
    micro_p, micro_r, micro_f1, _ = precision_recall_fscore_support(gold, pred, average="micro", zero_division=0)
    return {
        "micro_f1": float(micro_f1),
        "macro_f1": float(np.mean(f1)),
        "subset_accuracy": float(accuracy_score(gold, pred)),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "n": int(gold.shape[0]),
        "per_class": _per_class(names, precision, recall, f1, support),
    }


def regression_metrics(gold: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Errors in the target's units; a correlation that is undefined (constant predictions) counts as 0."""
    from scipy.stats import pearsonr, spearmanr

    error = pred - gold
    constant = len(gold) < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0
    return {
        "pearson": 0.0 if constant else float(pearsonr(gold, pred).statistic),
        "spearman": 0.0 if constant else float(spearmanr(gold, pred).statistic),
        "mse": float(np.mean(error**2)),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "n": len(gold),
    }
