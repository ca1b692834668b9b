"""Bad input: one clear line naming the file and line (or the argument), exit 2, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsllama.cli import app

from .conftest import toy_rows, write_jsonl

runner = CliRunner()


def run_cli(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--output", str(out), "--model", "tiny-random", "--quiet", *extra]


def folder_with(tmp_path: Path, train_text: str, name: str = "train.jsonl") -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / name).write_text(train_text)
    write_jsonl(folder / "validation.jsonl", toy_rows(4, 3))
    return folder


GOOD = '{"text": "fine", "label": "positive"}\n'
CASES = {
    "malformed_json": (GOOD + '{"text": "broken", \n', "train.jsonl:2", "malformed JSON"),
    "missing_column": (GOOD + '{"txt": "x", "label": "negative"}\n', "train.jsonl:2", "missing column 'text'"),
    "empty_text": (GOOD + '{"text": "   ", "label": "negative"}\n', "train.jsonl:2", "empty text"),
    "empty_file": ("", "train.jsonl", "no rows"),
    "bad_csv_row": ("text,label\nfine,positive\nbad,row,extra\n", "train.csv:3", "expected 2 columns"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_training_file_is_reported_with_file_and_line(tmp_path, case):
    content, where, message = CASES[case]
    name = "train.csv" if case == "bad_csv_row" else "train.jsonl"
    data = folder_with(tmp_path, content, name)
    out = tmp_path / "run"
    code, output = run_cli(*train_args(data, out))
    assert code == 2, output
    assert where in output and message in output, output
    assert "Traceback" not in output
    assert not out.exists()


def test_unknown_label_in_validation_is_reported(tmp_path):
    folder = tmp_path / "d"
    write_jsonl(folder / "train.jsonl", toy_rows(8, 1))
    write_jsonl(folder / "validation.jsonl", [*toy_rows(2, 2), {"text": "meh", "label": "neutral"}])
    out = tmp_path / "run"
    code, output = run_cli(*train_args(folder, out))
    assert code == 2
    assert "validation.jsonl:3" in output and "unknown label 'neutral'" in output
    assert not out.exists()


def test_unknown_model_name_is_a_usage_error(toy_data, tmp_path):
    out = tmp_path / "run"
    code, output = run_cli("train", "--data", str(toy_data), "--output", str(out), "--model", "./no/such/model")
    assert code == 2
    assert "--model ./no/such/model" in output
    assert not out.exists()


def test_missing_data_is_a_usage_error(tmp_path):
    code, output = run_cli("train", "--data", "no-such-dataset.jsonl", "--output", str(tmp_path / "r"))
    assert code == 2 and "--data no-such-dataset.jsonl" in output


def test_missing_run_folder(tmp_path):
    code, output = run_cli("evaluate", str(tmp_path / "nothing"))
    assert code == 2 and "run folder not found" in output


def test_incomplete_run_folder_names_the_missing_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("task: sequence\n")
    code, output = run_cli("predict", str(tmp_path / "run"), "--input", "x.txt", "--output", "y.jsonl")
    assert code == 2 and "labels.json is missing" in output


def test_bad_option_value_names_the_option(toy_data, tmp_path):
    code, output = run_cli(*train_args(toy_data, tmp_path / "run", "--pooling", "median"))
    assert code == 2 and "--pooling" in output
    assert not (tmp_path / "run").exists()


def test_real_process_exits_2_without_traceback(tmp_path):
    data = folder_with(tmp_path, '{"text": "x", "label": "positive"}\nnot json\n')
    proc = subprocess.run(
        [sys.executable, "-m", "lsllama.cli", *train_args(data, tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "train.jsonl:2" in proc.stderr and "Traceback" not in proc.stderr


def test_texts_containing_unicode_line_separators_are_read_whole(tmp_path):
    from lsllama.data.readers import read_rows

    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a\u0085b\u2028c", "label": "x"}, {"text": "d", "label": "y"}])
    rows = read_rows(path)
    assert [r.values["text"] for r in rows] == ["a\u0085b\u2028c", "d"]
    assert [r.line for r in rows] == [1, 2]
