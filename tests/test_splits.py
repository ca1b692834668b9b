"""Where the training and validation rows come from: a single file, a folder or hub dataset without a
validation split (validation held out of train), sample counts, label names read by name, label typos,
and multi-label scores that are not tuned on the rows they score."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lsllama import Classifier, build_config
from lsllama.cli import app
from lsllama.config import DataConfig
from lsllama.data import dataset
from lsllama.data.dataset import LabelSet, load_split, resolve_labels, training_data
from lsllama.errors import DataError, UsageError
from lsllama.evaluation.scoring import sequence_metrics, sigmoid

from .conftest import toy_rows, write_jsonl

runner = CliRunner()
TINY = ["--model", "tiny-random", "--quiet", "--min-steps", "0"]


def labels_of(examples) -> Counter:
    return Counter(e.label for e in examples)


# ---- a single file, a missing validation split ----


def test_single_file_holds_out_a_stratified_tenth_of_its_rows_as_validation(tmp_path, caplog):
    rows = toy_rows(80, 1)
    path = write_jsonl(tmp_path / "my.jsonl", rows)
    cfg = DataConfig(data=str(path))
    labels = resolve_labels(cfg, "sequence")
    with caplog.at_level(logging.INFO, logger="lsllama"):
        data = training_data(cfg, "sequence", labels)
    assert len(data.validation) == 8 and len(data.train) == 72
    assert not {e.source for e in data.train} & {e.source for e in data.validation}
    counts = Counter(r["label"] for r in rows)
    for label, n in labels_of(data.validation).items():  # each label gives its share
        assert abs(n - counts[labels.names[label]] / 10) <= 1
    assert data.held_out == [e.source for e in data.validation]
    assert [r.getMessage() for r in caplog.records] == [
        f"validation: 10% of train held out (8 rows), no validation split in {path}"
    ]
    # the same rows every time (not drawn with the training seed), and the run's evaluation finds them
    assert training_data(cfg, "sequence", labels).held_out == data.held_out
    assert [e.source for e in load_split(cfg, "validation", "sequence", labels, None)] == data.held_out
    with pytest.raises(UsageError, match=r"has no 'test' split.*single file"):
        load_split(cfg, "test", "sequence", labels, None)


def test_max_train_samples_applies_to_the_rows_left_after_the_hold_out(tmp_path):
    path = write_jsonl(tmp_path / "my.jsonl", toy_rows(80, 1))
    cfg = DataConfig(data=str(path), max_train_samples=30, validation_fraction=0.25)
    data = training_data(cfg, "sequence", resolve_labels(cfg, "sequence"))
    assert len(data.validation) == 20 and len(data.train) == 30
    assert not {e.source for e in data.train} & set(data.held_out)


def test_train_file_without_validation_file_holds_out_validation_too(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", toy_rows(40, 1))
    cfg = DataConfig(train_file=str(path))
    data = training_data(cfg, "sequence", resolve_labels(cfg, "sequence"))
    assert len(data.validation) == 4 and len(data.train) == 36


def test_a_folder_with_train_and_test_but_no_validation_holds_out_from_train_and_keeps_test(tmp_path):
    write_jsonl(tmp_path / "news" / "train.jsonl", toy_rows(50, 1))
    write_jsonl(tmp_path / "news" / "test.jsonl", toy_rows(12, 2))
    cfg = DataConfig(data=str(tmp_path / "news"))
    labels = resolve_labels(cfg, "sequence")
    data = training_data(cfg, "sequence", labels)
    assert len(data.validation) == 5 and all("train.jsonl" in e.source for e in data.validation)
    assert len(load_split(cfg, "test", "sequence", labels, None)) == 12


def test_token_task_holds_out_whole_sentences(tmp_path):
    from .conftest import toy_ner_rows

    path = write_jsonl(tmp_path / "ner.jsonl", toy_ner_rows(30, 1))
    cfg = DataConfig(data=str(path))
    data = training_data(cfg, "token", resolve_labels(cfg, "token"))
    assert len(data.validation) == 3 and len(data.train) == 27


def test_validation_fraction_zero_means_no_validation_and_says_so(tmp_path, caplog):
    path = write_jsonl(tmp_path / "my.jsonl", toy_rows(20, 1))
    cfg = DataConfig(data=str(path), validation_fraction=0.0)
    with caplog.at_level(logging.INFO, logger="lsllama"):
        data = training_data(cfg, "sequence", resolve_labels(cfg, "sequence"))
    assert len(data.train) == 20 and data.validation == [] and data.held_out == []
    assert "validation: none" in caplog.text


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_validation_fraction_outside_0_1_is_a_usage_error(fraction):
    with pytest.raises(UsageError, match="--validation-fraction"):
        build_config(overrides={"data": {"data": "x", "validation_fraction": fraction}}).resolved()


def test_single_file_run_names_its_held_out_rows_and_has_no_test_split(tmp_path):
    path = write_jsonl(tmp_path / "my.jsonl", toy_rows(40, 1))
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", *TINY, "--data", str(path), "-o", str(run)])
    assert result.exit_code == 0, result.output
    assert "validation: 10% of train held out (4 rows), no validation split in" in result.stderr
    held = json.loads((run / "validation_rows.json").read_text())
    assert len(held) == 4 and all(h.startswith(f"{path}:") for h in held)
    results = json.loads((run / "results.json").read_text())
    assert (results["train_examples"], results["validation_examples"]) == (36, 4)

    test = runner.invoke(app, ["evaluate", str(run), "--split", "test"])
    assert test.exit_code == 2 and "has no 'test' split" in test.stderr
    typo = runner.invoke(app, ["evaluate", str(run), "--split", "testing"])
    assert typo.exit_code == 2 and "'testing' is not one of 'train', 'validation', 'test'" in typo.stderr
    validation = runner.invoke(app, ["evaluate", str(run)])
    assert validation.exit_code == 0 and json.loads(validation.stdout.splitlines()[-1])["n"] == 4


# ---- hub datasets ----


@pytest.fixture
def hub(monkeypatch):
    """A local `datasets.DatasetDict` served as if from the hub (no network here): train and test only,
    and a second ClassLabel column after the label column."""
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
            "topic": datasets.ClassLabel(names=["film", "book", "music"]),
        }
    )

    def split(n: int, seed: int) -> datasets.Dataset:
        rows = toy_rows(n, seed)
        return datasets.Dataset.from_dict(
            {
                "text": [r["text"] for r in rows],
                "label": [int(r["label"] == "positive") for r in rows],
                "topic": [i % 3 for i in range(n)],
            },
            features=features,
        )

    hub_data = datasets.DatasetDict({"train": split(40, 1), "test": split(10, 2)})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, *a, **k: hub_data)
    monkeypatch.setattr(dataset, "offline_reason", lambda: None)  # the hub counts as reachable
    dataset._hub_dataset.cache_clear()
    yield "someone/reviews"
    dataset._hub_dataset.cache_clear()


def test_hub_dataset_without_validation_split_holds_out_validation_from_train(hub):
    cfg = DataConfig(data=hub)
    labels = resolve_labels(cfg, "sequence")
    data = training_data(cfg, "sequence", labels)
    assert len(data.validation) == 4 and len(data.train) == 36
    assert data.held_out[0].startswith(f"{hub}:")
    assert len(load_split(cfg, "test", "sequence", labels, None)) == 10


def test_hub_label_names_come_from_the_label_column_not_the_last_class_label(hub):
    assert resolve_labels(DataConfig(data=hub), "sequence").names == ["negative", "positive"]
    assert resolve_labels(DataConfig(data=hub, label_column="topic"), "sequence").names == ["film", "book", "music"]


# ---- sample counts and empty training splits ----


@pytest.mark.parametrize(
    "option", [["--max-train-samples", "0"], ["--max-train-samples", "-3"], ["--max-eval-samples", "0"]]
)
def test_zero_or_negative_sample_counts_are_usage_errors_and_write_nothing(toy_data, tmp_path, option):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", *TINY, "--data", str(toy_data), "-o", str(run), *option])
    assert result.exit_code == 2 and f"{option[0]} must be positive" in result.stderr
    assert not run.exists()


def test_a_training_split_too_small_to_train_on_is_refused_before_the_run_folder(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", toy_rows(1, 1))
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", *TINY, "--data", str(path), "-o", str(run), "--labels", "negative,positive"])
    assert result.exit_code == 2 and "1 row(s)" in result.stderr
    assert not run.exists()


def test_evaluate_refuses_a_non_positive_sample_count(tmp_path):
    path = write_jsonl(tmp_path / "my.jsonl", toy_rows(20, 1))
    cfg = DataConfig(data=str(path))
    with pytest.raises(UsageError, match="must be positive"):
        load_split(cfg, "validation", "sequence", resolve_labels(cfg, "sequence"), 0)


# ---- labels by name ----


def int_label_folder(folder: Path, names: list[str]) -> Path:
    """Integer labels, whose meaning is the folder's labels.txt: row i is 'positive' for even i."""
    rows = [{"text": f"text {i}", "label": names.index("positive" if i % 2 == 0 else "negative")} for i in range(6)]
    write_jsonl(folder / "validation.jsonl", rows)
    (folder / "labels.txt").write_text("\n".join(names) + "\n")
    return folder


def test_integer_labels_are_read_through_the_folders_own_label_names(tmp_path):
    run_labels = LabelSet(["negative", "positive"])
    reversed_folder = int_label_folder(tmp_path / "reversed", ["positive", "negative"])
    cfg = DataConfig(data=str(reversed_folder), labels=run_labels.names)
    examples = load_split(cfg, "validation", "sequence", run_labels, None)
    assert [run_labels.names[e.label] for e in examples] == ["positive", "negative"] * 3


def test_data_whose_label_names_differ_from_the_runs_is_refused_naming_the_difference(tmp_path):
    folder = int_label_folder(tmp_path / "other", ["negative", "positive", "neutral"])
    cfg = DataConfig(data=str(folder))
    with pytest.raises(UsageError, match=r"label names differ.*only in the data: neutral"):
        load_split(cfg, "validation", "sequence", LabelSet(["negative", "positive"]), None)


def test_classifier_evaluate_on_another_folder_maps_labels_by_name(tmp_path):
    train_folder = tmp_path / "data"
    write_jsonl(train_folder / "train.jsonl", toy_rows(24, 1))
    write_jsonl(train_folder / "validation.jsonl", toy_rows(12, 2))
    cfg = build_config(
        task="sequence",
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            "data": {"data": str(train_folder), "labels": ["negative", "positive"]},
            "train": {"min_steps": 0, "tensorboard": False},
        },
    )
    clf = Classifier.train(cfg, tmp_path / "run", progress=False)
    rows = toy_rows(12, 2)
    for order in (["negative", "positive"], ["positive", "negative"]):
        folder = tmp_path / "-".join(order)
        write_jsonl(folder / "validation.jsonl", [{**r, "label": order.index(r["label"])} for r in rows])
        (folder / "labels.txt").write_text("\n".join(order))
    same = clf.evaluate(data=str(tmp_path / "negative-positive"))
    flipped = clf.evaluate(data=str(tmp_path / "positive-negative"))
    assert flipped["confusion_matrix"] == same["confusion_matrix"]
    assert flipped["per_class"]["positive"]["support"] == sum(r["label"] == "positive" for r in rows)
    (tmp_path / "positive-negative" / "labels.txt").write_text("positive\nnegative\nneutral\n")
    with pytest.raises(UsageError, match="neutral"):
        clf.evaluate(data=str(tmp_path / "positive-negative"))


# ---- a label typo ----


def test_a_rare_label_close_to_another_is_warned_about_as_a_likely_typo(tmp_path, caplog):
    rows = toy_rows(150, 1)
    rows[7]["label"] = "postive"
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="lsllama"):
        labels = resolve_labels(DataConfig(data=str(path)), "sequence")
    assert "postive" in labels.names
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'postive' has only 1 row(s)" in warnings[0] and "close to 'positive'" in warnings[0]


def test_pinned_labels_turn_the_typo_into_an_error_naming_its_line(tmp_path):
    rows = toy_rows(150, 1)
    rows[7]["label"] = "postive"
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", *TINY, "--data", str(path), "-o", str(run), "--labels", "negative,positive"])
    assert result.exit_code == 2 and f"{path}:8: unknown label 'postive'" in result.stderr
    assert not run.exists()


def test_a_common_label_is_not_reported_as_a_typo(tmp_path, caplog):
    rows = toy_rows(150, 1) + [{"text": "so so", "label": "positives"} for _ in range(20)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="lsllama"):
        resolve_labels(DataConfig(data=str(path)), "sequence")
    assert not caplog.records


# ---- multi-label scores ----


def test_multi_label_selection_score_is_cross_fitted_and_the_tuned_score_is_named_as_such():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, size=(60, 3))
    logits = rng.normal(size=(60, 3)).astype(np.float32)  # pure noise: any skill is tuning on the scored rows
    examples = [dataset.Example(source=f"x:{i}", text="t", label=list(np.flatnonzero(g))) for i, g in enumerate(gold)]
    metrics = sequence_metrics("multi_label", examples, logits, ["a", "b", "c"])
    assert metrics["micro_f1_tuned"] > metrics["micro_f1"]
    assert {"macro_f1_tuned", "subset_accuracy_tuned"} <= set(metrics)
    # the kept thresholds are the ones tuned on every row, which is what the tuned score used
    thresholds = np.array(list(metrics["thresholds"].values()), dtype=np.float32)
    rescored = sequence_metrics("multi_label", examples, logits, ["a", "b", "c"], thresholds)
    assert rescored["micro_f1"] == pytest.approx(metrics["micro_f1_tuned"])
    assert (sigmoid(logits) >= thresholds).any()


def test_integer_label_out_of_the_files_names_is_a_data_error(tmp_path):
    folder = tmp_path / "d"
    write_jsonl(folder / "validation.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 5}])
    (folder / "labels.txt").write_text("negative\npositive\n")
    with pytest.raises(DataError, match=r"validation\.jsonl:2: unknown label 5"):
        load_split(DataConfig(data=str(folder)), "validation", "sequence", LabelSet(["negative", "positive"]), None)
