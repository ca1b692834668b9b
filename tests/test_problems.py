"""Multi-label and regression sequence tasks: losses, thresholds, metrics, and runs that learn, save and predict."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from lsllama import Classifier, build_config
from lsllama.cli import app as cli
from lsllama.config import DataConfig
from lsllama.data.dataset import load_split, resolve_labels
from lsllama.data.encoding import Item
from lsllama.errors import DataError, UsageError
from lsllama.evaluation.metrics import multi_label_metrics, regression_metrics
from lsllama.evaluation.scoring import improves, tune_thresholds
from lsllama.modeling.problems import TargetScaling, sequence_loss, target_scaling
from lsllama.serving.export import export_run
from lsllama.serving.server import create_app

from .conftest import write_jsonl

runner = CliRunner()
FILLERS = ["the", "movie", "was", "really", "quite", "a", "story", "of", "people", "and", "time"]
CUES = {"happy": "wonderful", "sad": "terrible", "music": "song"}


def multi_label_rows(n: int, seed: int) -> list[dict]:
    """Each label applies when its cue word is in the text; any number of them may."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [label for label in CUES if rng.random() < 0.4]
        words = rng.sample(FILLERS, rng.randint(2, 6))
        for label in labels:
            words.insert(rng.randint(0, len(words)), CUES[label])
        rows.append({"text": " ".join(words), "label": labels})
    return rows


def regression_rows(n: int, seed: int) -> list[dict]:
    """The target is 100 + 20 per occurrence of "great": far from 0 and 1, so scaling must be undone."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        count = rng.randint(0, 3)
        words = rng.sample(FILLERS, rng.randint(2, 6))
        for _ in range(count):
            words.insert(rng.randint(0, len(words)), "great")
        rows.append({"text": " ".join(words), "label": 100 + 20 * count})
    return rows


def train(folder: Path, problem: str, rows: list[dict], validation: list[dict]) -> Classifier:
    write_jsonl(folder / "data" / "train.jsonl", rows)
    write_jsonl(folder / "data" / "validation.jsonl", validation)
    cfg = build_config(
        task="sequence",
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            # The text alone: a random model reads no question (the default template: test_head.py).
            "data": {"data": str(folder / "data"), "problem": problem, "template": "none"},
            "train": {"epochs": 4, "min_steps": 0, "learning_rate": 3e-3, "batch_size": 8, "tensorboard": False},
        },
    )
    return Classifier.train(cfg, folder / "run", progress=False)


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory) -> tuple[Classifier, Path]:
    folder = tmp_path_factory.mktemp("multi")
    return train(folder, "multi_label", multi_label_rows(96, 1), multi_label_rows(40, 2)), folder / "run"


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory) -> tuple[Classifier, Path]:
    folder = tmp_path_factory.mktemp("regression")
    return train(folder, "regression", regression_rows(96, 1), regression_rows(40, 2)), folder / "run"


# ---- thresholds ----


def test_thresholds_maximise_each_labels_f1_and_prefer_cuts_near_one_half():
    probs = np.array([[0.9, 0.2], [0.7, 0.6], [0.4, 0.3], [0.1, 0.8]], dtype=np.float32)
    gold = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    cuts = tune_thresholds(probs, gold)
    # label 0: the two top examples are its positives: any cut in (0.4, 0.7) is perfect; 0.55 is halfway
    assert cuts[0] == pytest.approx(0.55)
    # label 1: the only positive has the top probability: the cut halfway between 0.8 and 0.6
    assert cuts[1] == pytest.approx(0.7)


def test_a_label_without_validation_positives_keeps_the_default_threshold():
    probs = np.array([[0.9, 0.2], [0.7, 0.6]], dtype=np.float32)
    assert tune_thresholds(probs, np.array([[1, 0], [0, 0]]))[1] == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=30))
def test_tuned_threshold_reaches_the_best_f1_any_cut_can(pairs):
    probs = np.array([[p / 20] for p, _ in pairs], dtype=np.float32)
    gold = np.array([[int(g)] for _, g in pairs])
    cut = tune_thresholds(probs, gold)[0]
    if gold.sum() == 0:
        assert cut == pytest.approx(0.5)
        return
    achieved = f1_score(gold[:, 0], probs[:, 0] >= cut, zero_division=0)
    best = max(f1_score(gold[:, 0], probs[:, 0] >= t, zero_division=0) for t in [*np.unique(probs), 1.1])
    assert achieved == pytest.approx(best)


# ---- metrics and losses ----


def test_multi_label_metrics_pool_micro_average_macro_and_count_exact_sets():
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    pred = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]])
    metrics = multi_label_metrics(gold, pred, ["a", "b", "c"])
    # 4 true positives, 1 false positive, 1 false negative
    assert metrics["micro_f1"] == pytest.approx(8 / 10)
    assert metrics["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 2 / 3) / 3)
    assert metrics["subset_accuracy"] == pytest.approx(1 / 3)
    assert metrics["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}


def test_regression_metrics_are_in_target_units_and_rank_based_spearman():
    gold = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.0, 4.0, 9.0, 16.0])  # monotone, not linear
    metrics = regression_metrics(gold, pred)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert 0.9 < metrics["pearson"] < 1.0
    assert metrics["mse"] == pytest.approx(np.mean((pred - gold) ** 2))
    assert regression_metrics(gold, np.full(4, 2.5))["pearson"] == 0.0  # undefined: counts as no correlation


def test_regression_loss_is_squared_error_in_standard_deviations():
    items = [Item([1], 0, label=100.0), Item([1], 1, label=140.0)]
    scaling = target_scaling([type("E", (), {"label": it.label})() for it in items])
    assert scaling == TargetScaling(120.0, 20.0)
    outputs = torch.tensor([[110.0], [150.0]])
    assert sequence_loss(outputs, items, "regression", scaling).item() == pytest.approx(0.25 + 0.25)


def test_multi_label_loss_is_binary_cross_entropy_summed_over_labels():
    items = [Item([1], 0, label=[0, 2])]
    logits = torch.zeros(1, 3)
    assert sequence_loss(logits, items, "multi_label").item() == pytest.approx(3 * np.log(2))


def test_mse_selects_the_lowest_and_the_others_the_highest():
    assert improves("mse", 1.0, 2.0) and not improves("mse", 3.0, 2.0)
    assert improves("pearson", 0.9, 0.8) and not improves("micro_f1", 0.7, 0.8)
    assert improves("mse", 5.0, None)


# ---- data ----


def test_multi_label_values_come_as_lists_or_joined_names(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "x", "label": ["b", "a"]}, {"text": "y", "label": "c|a"}])
    write_jsonl(tmp_path / "train2.jsonl", [{"text": "z", "label": []}])
    cfg = DataConfig(data=str(tmp_path), problem="multi_label", validation_fraction=0.0)  # every row
    labels = resolve_labels(cfg, "sequence")
    assert labels.names == ["a", "b", "c"]
    assert [e.label for e in load_split(cfg, "train", "sequence", labels, None)] == [[0, 1], [0, 2]]


def test_a_non_numeric_regression_target_names_file_and_line(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "x", "label": 1.5}, {"text": "y", "label": "high"}])
    cfg = DataConfig(data=str(tmp_path), problem="regression")
    with pytest.raises(DataError, match=r"train.jsonl:2: regression target must be a finite number, got 'high'"):
        load_split(cfg, "train", "sequence", resolve_labels(cfg, "sequence"), None)


def test_list_labels_without_multi_label_say_which_flag_is_missing(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "x", "label": ["a", "b"]}])
    with pytest.raises(DataError, match="--problem multi_label"):
        resolve_labels(DataConfig(data=str(tmp_path)), "sequence")


def test_problem_settings_are_checked(tmp_path):
    with pytest.raises(UsageError, match="--problem regression is for the sequence task"):
        build_config(task="token", overrides={"data": {"problem": "regression"}}).resolved()
    with pytest.raises(UsageError, match="--metric-for-best must be one of pearson, spearman, mse"):
        build_config(overrides={"data": {"problem": "regression"}, "train": {"metric_for_best": "accuracy"}}).resolved()
    assert build_config(overrides={"data": {"problem": "multi_label"}}).resolved().train.metric_for_best == "micro_f1"


# ---- runs ----


def test_multi_label_run_learns_and_keeps_the_thresholds_it_was_selected_with(multi_label_run):
    clf, run = multi_label_run
    results = json.loads((run / "results.json").read_text())
    assert results["metric_for_best"] == "micro_f1" and results["validation"]["micro_f1"] >= 0.8
    saved = load_file(str(run / "model.safetensors"))["thresholds"].numpy()
    metrics = clf.evaluate()  # the run's validation split, with the saved thresholds
    assert list(metrics["thresholds"].values()) == pytest.approx(saved.tolist())
    # evaluate scores with the kept thresholds, tuned on all validation rows: the tuned score
    assert metrics["micro_f1"] == pytest.approx(results["validation"]["micro_f1_tuned"])
    assert not np.allclose(saved, 0.5)  # tuned, so that the next test shows predict uses them


def test_multi_label_predictions_are_the_labels_reaching_their_thresholds(multi_label_run):
    clf, _ = multi_label_run
    texts = [" ".join(row["text"].split()) for row in multi_label_rows(30, 3)]
    probs = clf.predict_proba(texts)
    assert ((probs > 0) & (probs < 1)).all() and not np.allclose(probs.sum(axis=1), 1.0)  # sigmoids, not a softmax
    expected = [
        [name for name, p, t in zip(clf.labels.names, row, clf.thresholds, strict=True) if p >= t] for row in probs
    ]
    assert clf.predict(texts) == expected
    assert [record["labels"] for record in clf.records(texts)] == expected
    assert clf.predict(["a wonderful song"])[0] == ["happy", "music"]


def test_multi_label_cli_predict_and_server_answer_label_sets(multi_label_run, tmp_path):
    clf, run = multi_label_run
    (tmp_path / "in.txt").write_text("a wonderful song\nterrible\n")
    result = runner.invoke(
        cli, ["predict", str(run), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "p.jsonl")]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert records == clf.records(["a wonderful song", "terrible"])
    assert set(records[0]) == {"text", "labels", "probabilities"}
    with TestClient(create_app(clf)) as client:
        answer = client.post("/predict", json={"inputs": ["a wonderful song", "terrible"]}).json()
    assert [p["labels"] for p in answer["predictions"]] == [r["labels"] for r in records]


def test_regression_run_learns_in_the_targets_units_and_reloads_identically(regression_run):
    clf, run = regression_run
    results = json.loads((run / "results.json").read_text())
    assert results["metric_for_best"] == "pearson" and results["validation"]["pearson"] >= 0.8
    saved = load_file(str(run / "model.safetensors"))
    train_targets = [row["label"] for row in regression_rows(96, 1)]
    assert saved["target_mean"].item() == pytest.approx(np.mean(train_targets))
    assert saved["target_std"].item() == pytest.approx(np.std(train_targets))
    values = clf.predict(["the movie", "great great great movie"])
    assert 90 < values[0] < values[1] < 170
    assert Classifier.load(run).predict(["the movie", "great great great movie"]) == values
    assert clf.records(["the movie"]) == [{"text": "the movie", "value": values[0]}]
    with pytest.raises(UsageError, match="regression"):
        clf.predict_proba(["the movie"])


def test_regression_export_says_it_needs_lsllama(regression_run, tmp_path):
    _, run = regression_run
    export = export_run(run, tmp_path / "export")
    assert export.transformers_class is None and "regression" in (export.needs_lsllama or "")
    assert not (tmp_path / "export" / "config.json").exists()
