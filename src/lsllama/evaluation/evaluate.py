"""Metrics of a model on labelled examples of either task."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lsllama.data.dataset import Example, LabelSet
from lsllama.data.encoding import Item
from lsllama.evaluation.predict import item_logits, sequence_logits, word_logits
from lsllama.evaluation.scoring import sequence_metrics
from lsllama.evaluation.spans import span_metrics


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def predict_logits(
    model: torch.nn.Module,
    task: str,
    examples: list[Example],
    items: list[Item],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """Sequence task: (examples, labels). Token task: per sentence (words, labels)."""
    logits = item_logits(model, items, pad_id, batch_size, device, rank=rank, world_size=world_size, progress=progress)
    if task == "sequence":
        return sequence_logits(items, logits, len(examples))
    return word_logits(items, logits, [len(e.words or []) for e in examples])


def split_metrics(
    task: str,
    examples: list[Example],
    logits: np.ndarray | list[np.ndarray],
    labels: LabelSet,
    thresholds: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics for the task and the label set's problem type. Multi-label: `thresholds` None tunes them
    on these examples (validation during training); evaluating a trained run passes its own."""
    if task == "sequence":
        return sequence_metrics(labels.problem, examples, np.asarray(logits), labels.names, thresholds)
    gold_tags = [[labels.names[t] for t in e.tags or []] for e in examples]
    pred_tags = [[labels.names[t] for t in sentence.argmax(axis=-1)] for sentence in logits]
    return span_metrics(gold_tags, pred_tags)
