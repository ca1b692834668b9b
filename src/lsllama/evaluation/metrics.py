"""Sequence-classification metrics, from scikit-learn so that they mean what everyone expects."""

from __future__ import annotations

from typing import Any

from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(gold: list[int], pred: list[int], names: list[str]) -> dict[str, Any]:
    ids = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=ids, average=None, zero_division=0
    )
    _, _, macro_f1, _ = precision_recall_fscore_support(gold, pred, labels=ids, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(macro_f1),
        "n": len(gold),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": confusion_matrix(gold, pred, labels=ids).tolist(),
    }
