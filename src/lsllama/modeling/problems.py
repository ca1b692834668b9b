"""The sequence task's losses, per problem type (decisions, thresholds and metrics: evaluation/scoring.py).

- `single_label`: softmax over the labels and cross-entropy.
- `multi_label`: one sigmoid per label and binary cross-entropy, summed over the labels of an example
  (an example then weighs about what it weighs under cross-entropy, so the default learning rate
  carries over).
- `regression`: the head predicts the target standardised with the training split's mean and std,
  and the model maps it back to the target's units (the mean and std are saved with the weights).
  Standardising keeps the loss near 1 at the start whatever the target's scale, and the head's
  near-zero initial output then predicts the training mean. The loss is the squared error in
  standard deviations.

Every loss here is a sum over examples; the training loop divides by the global number of examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lsllama.data.dataset import Example
from lsllama.data.encoding import Item
from lsllama.evaluation.scoring import multi_hot


@dataclass(frozen=True)
class TargetScaling:
    mean: float
    std: float


def target_scaling(examples: list[Example]) -> TargetScaling:
    """Mean and std of the training targets; a constant target keeps std 1 (nothing to scale)."""
    values = np.array([float(e.label) for e in examples if e.label is not None], dtype=np.float64)
    if values.size == 0:
        return TargetScaling(0.0, 1.0)
    std = float(values.std())
    return TargetScaling(float(values.mean()), std if std > 0 else 1.0)


def sequence_loss(
    outputs: torch.Tensor, items: list[Item], problem: str, scaling: TargetScaling | None = None
) -> torch.Tensor:
    """Summed loss of a batch. outputs: (examples, labels) logits, or (examples, 1) values in target units."""
    if problem == "multi_label":
        target = torch.from_numpy(multi_hot([it.label for it in items], outputs.shape[-1])).to(outputs)
        return F.binary_cross_entropy_with_logits(outputs, target, reduction="sum")
    if problem == "regression":
        target = torch.tensor([float(it.label) for it in items], device=outputs.device, dtype=outputs.dtype)
        std = scaling.std if scaling is not None else 1.0
        return (((outputs.squeeze(-1) - target) / std) ** 2).sum()
    target = torch.tensor([it.label for it in items], device=outputs.device)
    return F.cross_entropy(outputs, target, reduction="sum")
