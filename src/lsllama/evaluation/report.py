"""Plots a person would rather look at than read (the confusion matrix, the learning curves), and the
reader of a run's event log (metrics.jsonl), which training uses too.

Figures are drawn on matplotlib `Figure` objects, never through pyplot: no backend is chosen and no
global state is touched in the caller's process, and matplotlib loads only when a plot is drawn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsllama.config import LOWER_IS_BETTER

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def read_events(log_path: Path) -> list[dict[str, Any]]:
    """The events of a run's metrics.jsonl, in order ([] before the first step)."""
    if not log_path.is_file():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def plot_confusion(matrix: list[list[int]], names: list[str], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    size = max(4.0, 0.6 * len(names) + 2)
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"{title} (n = {sum(map(sum, matrix)):,})")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.savefig(path, dpi=120)


def smoothed(values: list[float], weight: float) -> list[float]:
    """Exponential moving average, debiased at the start (as TensorBoard's smoothing): a per-step training
    loss is mostly the noise of which batch came up."""
    average, out = 0.0, []
    for step, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**step))
    return out


def smoothing_weight(steps: int) -> float:
    """About a twentieth of the run in each average: 0.6 for a few dozen steps, up to 0.98."""
    return min(0.98, max(0.6, 1 - 20 / max(1, steps)))


def learning_curve_figure(events: list[dict[str, Any]], metric: str) -> Figure | None:
    """Training loss per step (raw, faint, and smoothed) and the validation metric at each evaluation, the
    best marked; the legend sits below the axes, clear of both of them. None before the first step."""
    from matplotlib.figure import Figure

    train = [e for e in events if e.get("event") == "train"]
    evals = [e for e in events if e.get("event") == "eval" and metric in e]
    if not train:
        return None
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    steps, losses = [e["step"] for e in train], [e["loss"] for e in train]
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train loss (per step)")
    weight = smoothing_weight(len(losses))
    ax.plot(steps, smoothed(losses, weight), color="tab:blue", label=f"train loss (EMA {weight:.2f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss")
    if evals:
        twin = ax.twinx()
        points = [e["step"] for e in evals], [e[metric] for e in evals]
        twin.plot(*points, "o-", color="tab:orange", label=f"validation {metric} (n = {len(evals)})")
        pick = min if metric in LOWER_IS_BETTER else max
        best = pick(evals, key=lambda e: e[metric])
        twin.plot([best["step"]], [best[metric]], "*", color="tab:red", markersize=12, label="best (kept)")
        twin.set_ylabel(f"validation {metric}")
    handles = [h for axis in fig.axes for h in axis.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    return fig


def plot_learning_curves(log_path: Path, path: Path, metric: str) -> bool:
    """The learning curves of a run's metrics.jsonl as a PNG; False (nothing written) before the first step."""
    fig = learning_curve_figure(read_events(log_path), metric)
    if fig is None:
        return False
    fig.savefig(path, dpi=120)
    return True


def write_report(folder: Path, split: str, metrics: dict[str, Any], names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_metrics.json").write_text(json.dumps(metrics, indent=2))
    if "confusion_matrix" in metrics:
        plot_confusion(
            metrics["confusion_matrix"], names, folder / f"{split}_confusion.png", f"{split} confusion matrix"
        )
