"""What `lsllama predict` reads and writes: texts from the files users have, predictions they can join back.

Inputs: a .txt file (or standard input, `-`) is one text per line, always; blank lines are skipped and
counted (the CLI says how many), so record i is the i-th non-blank line. A CSV /
TSV / JSONL file is read by column (`--text-column`, `--text-pair-column`; default: the run's own), and
an `id` column, or the columns asked for, is copied into each record.

Everything here runs before the model loads: a missing file or column costs no model load.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsllama.config import RunConfig
from lsllama.data.dataset import column_value, text_field
from lsllama.data.readers import Row, read_rows
from lsllama.errors import DataError, UsageError
from lsllama.run_folder import atomic_write_text

if TYPE_CHECKING:
    from lsllama.api import Classifier

STDIN = "-"
OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv"}
PREDICTION_FIELDS = ("text", "label", "labels", "score", "value", "probabilities", "entities")
"""Keys a prediction record has of its own: a kept input column may not take one of these names."""


@dataclass
class PredictInput:
    """Texts in input order, with what each output record keeps of its input row."""

    texts: list[Any] = field(default_factory=list)
    """Strings, or (token task, a tokens column) lists of words."""
    pairs: list[str] | None = None
    kept: list[dict[str, Any]] = field(default_factory=list)
    skipped_blank_lines: int = 0


def output_format(output: Path, format: str) -> str:
    """`conll` (token task, whatever the suffix), else from the suffix: .jsonl or .csv; anything else refused
    before any work is done."""
    if format not in ("jsonl", "conll"):
        raise UsageError(f"--format must be jsonl or conll, got {format!r}")
    if format == "conll":
        return "conll"
    suffix = output.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UsageError(f"--output {output}: expected a .jsonl or .csv file (or --format conll), got {suffix!r}")
    return OUTPUT_FORMATS[suffix]


def read_inputs(
    source: Path,
    config: RunConfig,
    text_column: str | None = None,
    pair_column: str | None = None,
    keep_columns: list[str] | None = None,
) -> PredictInput:
    """The texts of `source` (see the module docstring) for a run with `config`."""
    run_pairs = config.task == "sequence" and bool(config.data.text_pair_column)
    if pair_column and not run_pairs:
        raise UsageError("--text-pair-column: this run was trained on single texts")
    if str(source) == STDIN or source.suffix.lower() == ".txt":
        if text_column or keep_columns:
            raise UsageError("--text-column and --keep-columns are for CSV / JSONL input: a .txt line is one text")
        if run_pairs:
            raise UsageError(
                f"this run was trained on text pairs (column {config.data.text_pair_column!r}): give a CSV or JSONL "
                "file with both columns (--text-column, --text-pair-column)"
            )
        return _lines(source)
    _check_readable(source)
    rows = read_rows(source)
    if config.task == "token" and not text_column and config.data.tokens_column in rows[0].values:
        texts = [_words(r, config.data.tokens_column, source) for r in rows]
    else:
        texts = [text_field(r, text_column or config.data.text_column, source) for r in rows]
    pairs = [text_field(r, pair_column or config.data.text_pair_column, source) for r in rows] if run_pairs else None
    return PredictInput(texts, pairs, [_kept(r, keep_columns, source) for r in rows])


def _lines(source: Path) -> PredictInput:
    if str(source) == STDIN:
        text = sys.stdin.read()
    else:
        _check_readable(source)
        try:
            text = source.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", source) from None
    lines = text.split("\n")
    if lines[-1] == "":  # what follows a final newline is no line
        lines.pop()
    found = PredictInput()
    for line in lines:
        line = line.removesuffix("\r")
        if line.strip():
            found.texts.append(line)
            found.kept.append({})
        else:
            found.skipped_blank_lines += 1
    if not found.texts:
        raise DataError("no texts (every line is blank)", "standard input" if str(source) == STDIN else source)
    return found


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("is a folder, expected a file", path)
    if not os.access(path, os.R_OK):
        raise DataError("cannot read the file (permission denied)", path)


def _words(row: Row, column: str, path: Path) -> list:
    value = column_value(row, column, path)
    if not isinstance(value, list):
        raise DataError(f"column {column!r} must be a list", path, row.line)
    if not value:
        raise DataError(f"empty text in column {column!r}", path, row.line)
    return value


def _kept(row: Row, columns: list[str] | None, path: Path) -> dict[str, Any]:
    """The input columns copied into the row's record: those asked for, else `id` where the row has one."""
    if columns is None:
        return {"id": row.values["id"]} if "id" in row.values else {}
    for column in columns:
        if column in PREDICTION_FIELDS:
            raise UsageError(f"--keep-columns {column}: the prediction record has its own {column!r}")
        if column not in row.values:
            raise DataError(f"missing column {column!r} asked for by --keep-columns", path, row.line)
    return {column: row.values[column] for column in columns}


def predict_inputs(clf: Classifier, inputs: PredictInput, batch_size: int, conll: bool = False) -> list[Any]:
    """One record per text, the input's kept columns first; with `conll` (token task), CoNLL lines instead
    (word TAB tag, a blank line after each sentence). One model pass either way."""
    from lsllama.api import split_words  # here: reading the inputs must not wait for torch to import

    if clf.task == "sequence":
        predicted = clf.records(inputs.texts, inputs.pairs, batch_size)
    elif conll:
        words_list = [x if isinstance(x, list) else split_words(x)[0] for x in inputs.texts]
        lines: list[str] = []
        for words, tags in zip(words_list, clf.predict_tags(words_list, batch_size), strict=True):
            lines += [f"{w}\t{t}" for w, t in zip(words, tags, strict=True)] + [""]
        return lines
    else:
        entities = clf.predict_entities(inputs.texts, batch_size)
        pairs = zip(inputs.texts, entities, strict=True)
        predicted = [{"text": t, "entities": [asdict(e) for e in ents]} for t, ents in pairs]
    return [{**kept, **record} for kept, record in zip(inputs.kept, predicted, strict=True)]


def write_predictions(output: Path, records: list[Any], format: str) -> None:
    """JSON lines; CSV with one column per field (probabilities: one `prob_<label>` column per label; a list,
    such as multi-label labels or entities, as a JSON string); or CoNLL lines. Atomic: no half-written file."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if format == "conll":
        atomic_write_text(output, "\n".join(records) + "\n")
        return
    if format == "jsonl":
        atomic_write_text(output, "".join(json.dumps(r) + "\n" for r in records))
        return
    rows = [_flat(r) for r in records]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(output, buffer.getvalue())


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key == "probabilities":
            flat.update({f"prob_{name}": p for name, p in value.items()})
        elif isinstance(value, list | dict):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return flat
