"""The plots of a run: learning curves a person can read, a confusion matrix that says how many rows it counts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lsllama.evaluation.report import learning_curve_figure, plot_confusion, smoothed


def run_events(steps: int = 120, evals: int = 4) -> list[dict]:
    rng = random.Random(0)
    events = []
    for step in range(1, steps + 1):
        events.append({"event": "train", "step": step, "loss": 1 / step**0.3 + rng.uniform(-0.3, 0.3)})
        if step % (steps // evals) == 0:
            events.append({"event": "eval", "step": step, "accuracy": 0.6 + 0.3 * step / steps})
    return events


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_the_legend_hides_neither_axis():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = learning_curve_figure(run_events(), "accuracy")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for axis in fig.axes:  # the loss axis and the validation axis (its ticks on the right)
        assert not overlaps(legend, axis.get_tightbbox(renderer))


def test_training_loss_is_smoothed_with_the_raw_steps_faint():
    fig = learning_curve_figure(run_events(), "accuracy")
    raw, smooth = fig.axes[0].get_lines()
    assert raw.get_alpha() < 0.5 and smooth.get_alpha() in (None, 1.0)
    assert np.std(np.diff(smooth.get_ydata())) < 0.5 * np.std(np.diff(raw.get_ydata()))
    validation = fig.axes[1].get_lines()[0]
    assert list(validation.get_xdata()) == [30, 60, 90, 120]  # every evaluation, joined


def test_smoothing_is_debiased_and_keeps_a_constant():
    assert smoothed([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)
    assert smoothed([1.0, 3.0], 0.5)[1] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)


def test_confusion_matrix_says_how_many_rows_it_counts(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    titles = []
    set_title = Figure.savefig

    def keep_title(fig, path, **kwargs):
        titles.append(fig.axes[0].get_title())
        return set_title(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_title)
    plot_confusion([[5, 1], [2, 1234]], ["negative", "positive"], tmp_path / "c.png", "validation confusion matrix")
    assert titles == ["validation confusion matrix (n = 1,242)"] and (tmp_path / "c.png").is_file()
