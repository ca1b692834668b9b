"""Baselines that `benchmarks/paper.py` compares label-supervised finetuning with, on the same rows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LabelledTexts:
    """Texts with their label ids (in the data set's label order)."""

    texts: list[str]
    labels: list[int]
