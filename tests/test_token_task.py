"""The token task end to end on the tiny model (its bad inputs are in the corpus: test_corpus.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lsllama import Classifier, build_config
from lsllama.cli import app

from .conftest import toy_ner_rows, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    write_jsonl(folder / "data" / "train.jsonl", toy_ner_rows(64, 1))
    write_jsonl(folder / "data" / "validation.jsonl", toy_ner_rows(16, 2))
    cfg = build_config(
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            "data": {"data": str(folder / "data")},
            "train": {"epochs": 6, "min_steps": 0, "learning_rate": 5e-3, "batch_size": 8, "tensorboard": False},
        },
        task="token",
    )
    return Classifier.train(cfg, folder / "run", progress=False), folder


def test_token_task_defaults_to_bidirectional_and_learns(ner_run):
    clf, _ = ner_run
    assert clf.config.model.bidirectional is True
    metrics = clf.evaluate()
    assert metrics["f1"] >= 0.9, metrics


def test_token_task_defaults_sit_under_the_users_settings():
    token = build_config(task="token").train
    sequence = build_config(task="sequence").train
    assert (token.epochs, token.batch_size) == (3.0, 8) != (sequence.epochs, sequence.batch_size)
    assert build_config(task="token", overrides={"train": {"batch_size": 32}}).train.batch_size == 32


def test_task_is_inferred_from_token_columns(tmp_path):
    from lsllama.config import DataConfig
    from lsllama.data.dataset import infer_task

    write_jsonl(tmp_path / "train.jsonl", toy_ner_rows(2, 1))
    assert infer_task(DataConfig(data=str(tmp_path))) == "token"


def test_entities_come_back_with_type_word_span_and_character_offsets(ner_run):
    clf, _ = ner_run
    text = "Maria Smith flew to Berlin today ."
    [entities] = clf.predict_entities([text])
    found = {(e.type, e.text) for e in entities}
    assert ("PER", "Maria Smith") in found and ("LOC", "Berlin") in found
    for e in entities:
        assert text[e.start_char : e.end_char] == e.text


def test_predict_cli_writes_conll_columns(ner_run, tmp_path):
    _, folder = ner_run
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"tokens": ["John", "Smith", "flew", "to", "Rome", "today", "."]}])
    out = tmp_path / "out.conll"
    result = runner.invoke(
        app, ["predict", str(folder / "run"), "--input", str(inputs), "--output", str(out), "--format", "conll"]
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in out.read_text().splitlines() if line]
    assert [r[0] for r in rows] == ["John", "Smith", "flew", "to", "Rome", "today", "."]
    assert rows[0][1] == "B-PER" and rows[4][1] == "B-LOC"


def test_predict_cli_writes_entities_for_raw_text(ner_run, tmp_path):
    _, folder = ner_run
    inputs = tmp_path / "in.txt"
    inputs.write_text("Peter Smith flew to Paris today.\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", str(folder / "run"), "-i", str(inputs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert {"type": "LOC", "text": "Paris"}.items() <= next(e for e in record["entities"] if e["type"] == "LOC").items()
