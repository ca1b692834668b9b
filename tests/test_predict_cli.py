"""`lsllama predict` and `lsllama evaluate` on the files users have: columns, standard input, ids, CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lsllama.api
from lsllama import Classifier
from lsllama.cli import app as cli

from .conftest import toy_ner_rows, toy_rows, train_tiny_run, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def sentence_run(tmp_path_factory) -> Path:
    """A run trained with --text-column sentence."""
    rows = [{"sentence": r["text"], "label": r["label"]} for r in toy_rows(24, 1)]
    return train_tiny_run(tmp_path_factory.mktemp("sentence"), task="sequence", rows=rows, text_column="sentence")


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("ner"), task="token", rows=toy_ner_rows(16, 1))


def predict(run: Path, *args: str, input: str | None = None):
    return runner.invoke(cli, ["predict", str(run), *args], input=input)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_txt_file_is_one_text_per_line_whatever_the_text_column(sentence_run, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a wonderful story\n\nterrible people\n   \n")
    result = predict(sentence_run, "-i", str(source), "-o", str(tmp_path / "p.jsonl"))
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in jsonl(tmp_path / "p.jsonl")] == ["a wonderful story", "terrible people"]
    assert "skipped 2 blank lines" in result.stderr


def test_standard_input_is_read_with_a_dash(sentence_run, tmp_path):
    result = predict(sentence_run, "-i", "-", "-o", str(tmp_path / "p.jsonl"), input="a wonderful story\ntime\n")
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in jsonl(tmp_path / "p.jsonl")] == ["a wonderful story", "time"]


def test_csv_in_csv_out_with_a_text_column_and_the_id_kept(sentence_run, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,review,stars\n7,a wonderful story,5\n9,terrible people,1\n")
    out = tmp_path / "p.csv"
    result = predict(sentence_run, "-i", str(source), "-o", str(out), "--text-column", "review")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["7", "9"] and rows[0]["text"] == "a wonderful story"
    assert {"label", "score", "prob_negative", "prob_positive"} <= set(rows[0])
    expected = Classifier.load(sentence_run, device="cpu").predict(["a wonderful story", "terrible people"])
    assert [r["label"] for r in rows] == expected
    kept = predict(sentence_run, "-i", str(source), "-o", str(tmp_path / "k.jsonl"), "--text-column", "review",
                   "--keep-columns", "stars,id")  # fmt: skip
    assert kept.exit_code == 0, kept.output
    assert [(r["stars"], r["id"]) for r in jsonl(tmp_path / "k.jsonl")] == [("5", "7"), ("1", "9")]


def test_a_missing_column_names_the_file_line_and_the_columns(sentence_run, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"review": "a wonderful story"}])
    result = predict(sentence_run, "-i", str(source), "-o", str(tmp_path / "p.jsonl"))
    assert result.exit_code == 2
    assert f"{source}:1: missing column 'sentence' (found: review)" in result.stderr
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize("output", ["p.txt", "p.json", "p"])
def test_other_output_suffixes_are_refused(sentence_run, tmp_path, output):
    (tmp_path / "in.txt").write_text("a wonderful story\n")
    result = predict(sentence_run, "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / output))
    assert result.exit_code == 2 and "expected a .jsonl or .csv file" in result.stderr


def test_a_missing_input_fails_before_the_model_loads(sentence_run, tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Classifier, "load", no_load)
    result = predict(sentence_run, "-i", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "p.jsonl"))
    assert result.exit_code == 2 and f"{tmp_path / 'nope.txt'}: file not found" in result.stderr
    missing_column = write_jsonl(tmp_path / "in.jsonl", [{"review": "a wonderful story"}])
    result = predict(sentence_run, "-i", str(missing_column), "-o", str(tmp_path / "p.jsonl"))
    assert result.exit_code == 2 and "missing column 'sentence'" in result.stderr


def test_conll_output_runs_the_model_once(ner_run, tmp_path, monkeypatch):
    calls = []
    original = lsllama.api.predict_logits

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(lsllama.api, "predict_logits", counted)
    (tmp_path / "in.txt").write_text("Peter Smith flew to Paris today .\n")
    out = tmp_path / "out.conll"
    result = predict(ner_run, "-i", str(tmp_path / "in.txt"), "-o", str(out), "--format", "conll")
    assert result.exit_code == 0, result.output
    assert len(calls) == 1
    assert [line.split("\t")[0] for line in out.read_text().splitlines() if line][:2] == ["Peter", "Smith"]


def test_evaluate_writes_where_asked_and_says_where(sentence_run, tmp_path):
    report = tmp_path / "report"
    before = (sentence_run / "README.md").read_text() if (sentence_run / "README.md").exists() else None
    result = runner.invoke(cli, ["evaluate", str(sentence_run), "--output", str(report), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert (report / "validation_metrics.json").is_file()
    assert f"wrote the report to {report}" in result.stderr
    after = (sentence_run / "README.md").read_text() if (sentence_run / "README.md").exists() else None
    assert after == before  # the run folder is left alone
    default = runner.invoke(cli, ["evaluate", str(sentence_run)])
    assert default.exit_code == 0 and f"wrote the report to {sentence_run / 'report'}" in default.stderr
