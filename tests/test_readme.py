"""The README's quickstart, followed as written (on the tiny random model, as the README suggests for a
smoke run): if a command or option in it stops working, this fails."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsllama.cli import app

from .conftest import REPO

runner = CliRunner()


def quickstart() -> str:
    readme = (REPO / "README.md").read_text()
    return readme[readme.index("## Quickstart") : readme.index("\n## ", readme.index("## Quickstart") + 1)]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def lsllama_commands(text: str) -> list[list[str]]:
    return [
        shlex.split(line)[1:]
        for block in blocks(text, "bash")
        for line in block.splitlines()
        if line.startswith(".venv/bin/lsllama ")
    ]


def test_the_quickstart_shows_train_evaluate_predict_serve_and_export():
    names = [command[0] for command in lsllama_commands(quickstart())]
    assert names == ["train", "evaluate", "predict", "serve", "export"]
    train = lsllama_commands(quickstart())[0]
    assert "--text-column" in train and "--label-column" in train


@pytest.mark.filterwarnings("ignore")
def test_the_quickstart_runs_as_written(tmp_path: Path, monkeypatch):
    text = quickstart()
    example = list(csv.reader(blocks(text, "csv")[0].strip().splitlines()))
    header, rows = example[0], example[1:]
    monkeypatch.chdir(tmp_path)
    for name, copies in (("reviews.csv", 12), ("test.csv", 2), ("new_reviews.csv", 1)):
        with open(name, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows * copies])
    for command in lsllama_commands(text):
        if command[0] == "serve":
            continue  # runs until stopped; tests/test_serve.py covers the server
        tiny = ["--model", "tiny-random", "--quiet", "--min-steps", "0"]  # epochs alone: fast
        args = [*command, *tiny] if command[0] == "train" else command
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"lsllama {shlex.join(args)}: {result.output}"
    predictions = [json.loads(line) for line in Path("predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == len(rows) and {"label", "probabilities"} <= set(predictions[0])
    assert (tmp_path / "exports" / "reviews").is_dir()
    exec(blocks(text, "python")[0], {})
