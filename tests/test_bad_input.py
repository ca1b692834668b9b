"""Bad input through a real process, and inputs that look odd but are valid. The malformed-input corpus
itself is tests/corpus/ (run by test_corpus.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import toy_rows, write_jsonl


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--output",
        str(out),
        "--model",
        "tiny-random",
        "--quiet",
        "--min-steps",
        "0",
        *extra,
    ]


def folder_with(tmp_path: Path, train_text: str, name: str = "train.jsonl") -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / name).write_text(train_text)
    write_jsonl(folder / "validation.jsonl", toy_rows(4, 3))
    return folder


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
