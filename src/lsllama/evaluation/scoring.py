"""How the sequence task's problem types turn outputs into decisions, metrics and model selection.

- `single_label`: the prediction is the most probable label.
- `multi_label`: a label is predicted when its probability reaches that label's threshold. Thresholds
  are tuned on the validation split at every evaluation (each label's F1-maximising cut) and saved
  with the kept weights, so `predict` and `evaluate` use the thresholds of the model they run. A score
  on the rows the thresholds were tuned on is optimistic: it is reported as `micro_f1_tuned` (and
  `macro_f1_tuned`, `subset_accuracy_tuned`), while `micro_f1` & co., which select the kept model, are
  cross-fitted: each half of the rows is decided with thresholds tuned on the other half.
- `regression`: the model's outputs are in the target's units; scored by regression metrics.

The losses are in modeling/problems.py; this module needs no model, so evaluation does not import modeling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lsllama.config import LOWER_IS_BETTER
from lsllama.data.dataset import Example
from lsllama.evaluation.metrics import classification_metrics, multi_label_metrics, regression_metrics

DEFAULT_THRESHOLD = 0.5
"""Kept for a label the validation split cannot tune (no positive example of it)."""
CROSS_FIT_SEED = 0
"""Which rows form the two halves of cross-fitting: fixed, so every evaluation of a run splits alike."""
TUNED_METRICS = ("micro_f1", "macro_f1", "subset_accuracy")


def multi_hot(label_sets: list[list[int]], n_labels: int) -> np.ndarray:
    out = np.zeros((len(label_sets), n_labels), dtype=np.int64)
    for row, ids in enumerate(label_sets):
        out[row, ids] = 1
    return out


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def tune_thresholds(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per label, the probability cut that maximises its F1 on these examples (ties: the cut nearest 0.5).

    probs, gold: (examples, labels). Predicting the k most probable examples positive gives
    F1 = 2 TP_k / (k + positives); a cut halfway between two distinct probabilities realises each k.
    Cuts are float32, as the model stores them, and always separate the two probabilities.
    """
    probs = probs.astype(np.float32)
    thresholds = np.full(probs.shape[1], DEFAULT_THRESHOLD, dtype=np.float32)
    for label in range(probs.shape[1]):
        positives = int(gold[:, label].sum())
        if positives == 0:
            continue
        order = np.argsort(-probs[:, label], kind="stable")
        ranked = probs[order, label]
        true_positives = np.cumsum(gold[order, label])
        f1 = 2 * true_positives / (np.arange(1, len(ranked) + 1) + positives)
        below = np.append(ranked[1:], -np.inf)  # nothing below the last: that cut takes every example
        valid = ranked > below  # a cut after the k-th example must fall between two different probabilities
        halfway = np.where(np.isfinite(below), (ranked.astype(np.float64) + below) / 2, ranked / 2)
        cuts = halfway.astype(np.float32)
        cuts = np.where(cuts > below, cuts, ranked)  # halfway rounded onto the lower one: cut at the upper
        best = f1[valid].max()
        candidates = cuts[valid][f1[valid] == best]
        thresholds[label] = candidates[np.argmin(np.abs(candidates - DEFAULT_THRESHOLD))]
    return thresholds


def cross_fitted_decisions(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """0/1 decisions, each half of the rows (a seeded split) cut with thresholds tuned on the other half:
    an honest estimate of how tuned thresholds do on rows they were not tuned on."""
    halves = np.array_split(np.random.default_rng(CROSS_FIT_SEED).permutation(len(probs)), 2)
    decisions = np.zeros(gold.shape, dtype=np.int64)
    for scored, tuned_on in ((halves[0], halves[1]), (halves[1], halves[0])):
        decisions[scored] = probs[scored] >= tune_thresholds(probs[tuned_on], gold[tuned_on])
    return decisions


def sequence_metrics(
    problem: str,
    examples: list[Example],
    outputs: np.ndarray,
    names: list[str],
    thresholds: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of one split. Multi-label: with `thresholds`, or (None, what training does on validation)
    tuned on these very examples, scored cross-fitted (`micro_f1`...) and as tuned (`micro_f1_tuned`...);
    the thresholds tuned on all the examples are part of the result."""
    if problem == "regression":
        gold = np.array([float(e.label) for e in examples], dtype=np.float64)
        return regression_metrics(gold, outputs[:, 0].astype(np.float64))
    if problem == "multi_label":
        gold_sets = multi_hot([e.label for e in examples], len(names))
        probs = sigmoid(outputs)
        if thresholds is not None:
            metrics = multi_label_metrics(gold_sets, (probs >= thresholds).astype(np.int64), names)
        else:
            thresholds = tune_thresholds(probs, gold_sets)
            tuned = multi_label_metrics(gold_sets, (probs >= thresholds).astype(np.int64), names)
            metrics = multi_label_metrics(gold_sets, cross_fitted_decisions(probs, gold_sets), names)
            metrics.update({f"{name}_tuned": tuned[name] for name in TUNED_METRICS})
        metrics["thresholds"] = dict(zip(names, map(float, thresholds), strict=True))
        return metrics
    return classification_metrics([e.label for e in examples], outputs.argmax(axis=-1).tolist(), names)


def improves(metric: str, value: float, best: float | None) -> bool:
    """Whether a validation result beats the best so far (`mse`: lower is better); the first always does."""
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best
