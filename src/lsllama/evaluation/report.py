"""Plots a person would rather look at than read: the confusion matrix and the learning curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_confusion(matrix: list[list[int]], names: list[str], path: Path, title: str) -> None:
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_learning_curves(log_path: Path, path: Path, metric: str) -> bool:
    """Training loss per step and the validation metric per evaluation, from the run's metrics.jsonl."""
    if not log_path.is_file():
        return False
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [e for e in events if e.get("event") == "train"]
    evals = [e for e in events if e.get("event") == "eval" and metric in e]
    if not train:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([e["step"] for e in train], [e["loss"] for e in train], color="tab:blue", label="train loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss")
    if evals:
        twin = ax.twinx()
        twin.plot([e["step"] for e in evals], [e[metric] for e in evals], "o-", color="tab:orange", label=metric)
        twin.set_ylabel(f"validation {metric}")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(folder: Path, split: str, metrics: dict[str, Any], names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_metrics.json").write_text(json.dumps(metrics, indent=2))
    if "confusion_matrix" in metrics:
        plot_confusion(
            metrics["confusion_matrix"], names, folder / f"{split}_confusion.png", f"{split} confusion matrix"
        )
