"""Read rows from local files, keeping the line number of each row for error messages."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsllama.errors import DataError

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")
SPLIT_SUFFIXES = (".jsonl", ".csv", ".tsv", ".conll", ".json")


@dataclass(frozen=True)
class Row:
    values: dict[str, Any]
    line: int


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
    except IsADirectoryError:
        raise DataError("is a folder, expected a file", path) from None


def _lines(text: str) -> list[str]:
    """Split on newlines only: `str.splitlines` also breaks on U+0085 and U+2028, which occur inside texts."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _jsonl(path: Path, text: str) -> Iterator[Row]:
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg}, column {exc.colno})", path, number) from None
        if not isinstance(value, dict):
            raise DataError(f"expected a JSON object per line, got {type(value).__name__}", path, number)
        yield Row(value, number)


def _delimited(path: Path, text: str, delimiter: str) -> Iterator[Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    for values in reader:
        number = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise DataError(f"expected {len(header)} columns as in the header, found {len(values)}", path, number)
        yield Row(dict(zip(header, values, strict=True)), number)


def _plain_lines(path: Path, text: str) -> Iterator[Row]:
    for number, line in enumerate(_lines(text), start=1):
        if line.strip():
            yield Row({"text": line}, number)


def read_rows(path: str | Path) -> list[Row]:
    """JSONL (one object per line), CSV / TSV with a header row, or .txt (one text per line)."""
    path = Path(path)
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = list(_jsonl(path, text))
    elif suffix == ".csv":
        rows = list(_delimited(path, text, ","))
    elif suffix == ".tsv":
        rows = list(_delimited(path, text, "\t"))
    elif suffix == ".txt":
        rows = list(_plain_lines(path, text))
    else:
        raise DataError(f"unsupported file type {suffix!r} (expected one of {', '.join(TABLE_SUFFIXES)}, .conll)", path)
    if not rows:
        raise DataError("file has no rows", path)
    return rows
