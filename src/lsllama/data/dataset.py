"""From a `--data` argument to validated examples with integer labels.

`--data` may be a folder holding `train` / `validation` / `test` files, a name resolved under the data
root ($LSLLAMA_DATA, default ../shared/data), a single file, or a Hugging Face hub dataset id. Every
example remembers its file and line so that a bad label or an empty text is reported where it is.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsllama.config import DataConfig
from lsllama.data.readers import SPLIT_SUFFIXES, Row, read_rows
from lsllama.data.tagging import detect_scheme, read_conll, to_iob2
from lsllama.errors import DataError, UsageError
from lsllama.hub import closest, offline_reason

SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test",),
}
SAMPLE_SEED = 0  # fixed, so that every training seed sees the same sample of a large split


MULTI_LABEL_SEPARATOR = "|"
"""Multi-label values in CSV / TSV cells (which cannot hold lists): label names joined by this."""


@dataclass
class Example:
    """One sequence-task text (`text`, optional `text_pair`) or one token-task sentence (`words`).

    `label` is a label id (single-label), a sorted list of label ids (multi-label) or a number
    (regression)."""

    source: str
    text: str | None = None
    text_pair: str | None = None
    words: list[str] | None = None
    label: int | list[int] | float | None = None
    tags: list[int] | None = None


def data_root() -> Path:
    """$LSLLAMA_DATA, else the `shared/data` folder beside the repository this package lives in (so that
    `--data sst2` finds it from any working folder), else `../shared/data` from the working folder."""
    if "LSLLAMA_DATA" in os.environ:
        return Path(os.environ["LSLLAMA_DATA"])
    beside_repository = Path(__file__).resolve().parents[4] / "shared" / "data"
    return beside_repository if beside_repository.is_dir() else Path("../shared/data")


def resolve_location(cfg: DataConfig) -> Path | str | None:
    """A local folder or file for `cfg.data`, or the string itself when it must be a hub id."""
    if cfg.data is None:
        return None
    path = Path(cfg.data).expanduser()
    if path.exists():
        return path
    root = data_root()
    named = root / cfg.data
    if named.exists():
        return named
    local = sorted(p.name for p in root.iterdir() if p.is_dir() or p.suffix in SPLIT_SUFFIXES) if root.is_dir() else []
    listing = f"data root {root}: {', '.join(local) or 'empty or missing'}; set LSLLAMA_DATA to change it"
    if cfg.data.startswith((".", "/", "~")) or Path(cfg.data).suffix in SPLIT_SUFFIXES:
        raise UsageError(f"--data {cfg.data}: no such file or folder.{closest(cfg.data, local)} ({listing})")
    offline = offline_reason()
    if offline is not None:  # the hub client would retry for tens of seconds before failing
        raise UsageError(
            f"--data {cfg.data}: not a local data set, and the hub is offline ({offline})."
            f"{closest(cfg.data, local)} ({listing})"
        )
    return cfg.data


def split_file(cfg: DataConfig, split: str) -> Path | str | None:
    """The file (or hub id) holding a split; None when the split does not exist."""
    explicit = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}.get(split)
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"--{split}-file {explicit}: no such file")
        return path
    location = resolve_location(cfg)
    if location is None or isinstance(location, str) or location.is_file():
        return location
    for alias in SPLIT_ALIASES.get(split, (split,)):
        for suffix in SPLIT_SUFFIXES:
            candidate = location / f"{alias}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _load_hub_split(name: str, split: str) -> tuple[list[Row], list[str] | None]:
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown id, missing split: all one message for the user
        raise UsageError(
            f"--data {name}: not a local file or folder, and loading it from the Hugging Face hub failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    names = None
    for feature in ds.features.values():
        inner = getattr(feature, "feature", feature)
        if hasattr(inner, "names"):
            names = list(inner.names)
    return [Row(dict(r), i + 1) for i, r in enumerate(ds)], names


def load_raw_split(cfg: DataConfig, split: str, task: str) -> tuple[list[Row], Path | str, list[str] | None]:
    """Rows of one split, where they came from, and label names the source itself declares."""
    where = split_file(cfg, split)
    if where is None:
        raise UsageError(f"--data {cfg.data}: has no {split!r} split")
    if isinstance(where, str):
        rows, names = _load_hub_split(where, split)
        return rows, where, names
    if where.suffix == ".conll":
        sentences = read_conll(where)
        rows = [Row({cfg.tokens_column: s.tokens, cfg.tags_column: s.tags}, s.line) for s in sentences]
    else:
        rows = read_rows(where)
    labels_file = where.parent / "labels.txt"
    names = None
    if labels_file.is_file():
        names = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows, where, names


def infer_task(cfg: DataConfig) -> str:
    """`token` when the training data is CoNLL or has token/tag columns and no text column."""
    where = split_file(cfg, "train")
    if isinstance(where, Path):
        if where.suffix == ".conll":
            return "token"
        rows = read_rows(where)[:1]
        if rows and cfg.tokens_column in rows[0].values and cfg.text_column not in rows[0].values:
            return "token"
    return "sequence"


def sample(items: list, limit: int | None) -> list:
    """A fixed, seeded sample that keeps the original order."""
    if limit is None or limit >= len(items):
        return items
    keep = sorted(random.Random(SAMPLE_SEED).sample(range(len(items)), limit))
    return [items[i] for i in keep]


class LabelSet:
    """Label names in id order (one output of the head each), and the one place that turns a raw label
    value into the example's target. A regression run has one "label": the name of what it predicts."""

    def __init__(self, names: list[str], problem: str = "single_label"):
        if len(set(names)) != len(names):
            raise UsageError(f"duplicate label names in {names}")
        if problem == "regression" and len(names) != 1:
            raise UsageError(f"a regression run predicts one value, got labels {names}")
        if problem != "regression" and len(names) < 2:
            raise UsageError(f"need at least two labels, got {names}")
        self.names = list(names)
        self.problem = problem
        self.index = {name: i for i, name in enumerate(names)}

    def __len__(self) -> int:
        return len(self.names)

    def id(self, value: Any, source: str) -> int:
        if isinstance(value, str) and value in self.index:
            return self.index[value]
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            number = int(value)
            if 0 <= number < len(self.names):
                return number
        hint = " (a list of labels: pass --problem multi_label)" if isinstance(value, list) else ""
        raise DataError(f"unknown label {value!r} (known: {', '.join(self.names)}){hint}", *_split_source(source))

    def target(self, value: Any, source: str) -> int | list[int] | float:
        """A raw label value as this problem's target: an id, a sorted list of ids, or a number."""
        if self.problem == "regression":
            return _number(value, source)
        if self.problem == "multi_label":
            return sorted({self.id(v, source) for v in multi_label_values(value, source)})
        return self.id(value, source)


def multi_label_values(value: Any, source: str) -> list[Any]:
    """A multi-label cell: a list, or names joined by `|` (an empty string: no label applies)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [v.strip() for v in value.split(MULTI_LABEL_SEPARATOR) if v.strip()]
    raise DataError(
        f"a multi-label value must be a list of labels (or labels joined by {MULTI_LABEL_SEPARATOR!r}), got {value!r}",
        *_split_source(source),
    )


def _number(value: Any, source: str) -> float:
    try:
        number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        raise DataError(f"regression target must be a finite number, got {value!r}", *_split_source(source))
    return number


def _split_source(source: str) -> tuple[str, int | None]:
    path, _, line = source.rpartition(":")
    return (path, int(line)) if line.isdigit() else (source, None)


def _column(row: Row, column: str, where: Path | str) -> Any:
    if column not in row.values:
        raise DataError(
            f"missing column {column!r} (found: {', '.join(map(str, row.values)) or 'none'})", where, row.line
        )
    return row.values[column]


def _text(row: Row, column: str, where: Path | str) -> str:
    value = _column(row, column, where)
    if not isinstance(value, str):
        raise DataError(f"column {column!r} must be a string, got {type(value).__name__}", where, row.line)
    if not value.strip():
        raise DataError(f"empty text in column {column!r}", where, row.line)
    return value


def sequence_examples(rows: list[Row], where: Path | str, cfg: DataConfig, labels: LabelSet | None) -> list[Example]:
    """Examples for the sequence task; `labels=None` reads texts only (prediction input)."""
    examples = []
    for row in rows:
        source = f"{where}:{row.line}"
        example = Example(source=source, text=_text(row, cfg.text_column, where))
        if cfg.text_pair_column:
            example.text_pair = _text(row, cfg.text_pair_column, where)
        if labels is not None:
            example.label = labels.target(_column(row, cfg.label_column, where), source)
        examples.append(example)
    return examples


def _words_and_tags(row: Row, cfg: DataConfig, where: Path | str, with_tags: bool) -> tuple[list[str], list]:
    words = _column(row, cfg.tokens_column, where)
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise DataError(f"column {cfg.tokens_column!r} must be a list of strings", where, row.line)
    if not words:
        raise DataError("empty sentence (no tokens)", where, row.line)
    if any(not w.strip() for w in words):
        raise DataError("a token is empty or whitespace", where, row.line)
    if not with_tags:
        return words, []
    tags = _column(row, cfg.tags_column, where)
    if not isinstance(tags, list):
        raise DataError(f"column {cfg.tags_column!r} must be a list", where, row.line)
    if len(tags) != len(words):
        raise DataError(f"{len(words)} tokens but {len(tags)} tags", where, row.line)
    return words, tags


def token_label_names(declared: list[str] | None, rows: list[Row], cfg: DataConfig, where: Path | str) -> list[str]:
    """IOB2 tag set: declared names (converted to IOB2), else the training tags; O first, every B-X with I-X."""
    if declared is None:
        found = {str(t) for row in rows for t in _words_and_tags(row, cfg, where, True)[1]}
        declared = sorted(found, key=lambda t: (t != "O", t[2:], t[:1]))
    names: list[str] = []
    for tag in declared:
        converted = "B-" + tag[2:] if tag[:2] == "S-" else "I-" + tag[2:] if tag[:2] == "E-" else tag
        if converted not in names:
            names.append(converted)
    for tag in list(names):
        if tag.startswith("B-") and "I-" + tag[2:] not in names:
            names.append("I-" + tag[2:])
    return names


def token_examples(rows: list[Row], where: Path | str, cfg: DataConfig, labels: LabelSet | None) -> list[Example]:
    """Sentences for the token task; gold tags are converted to IOB2 with the file's detected scheme."""
    parsed = [(row, *_words_and_tags(row, cfg, where, labels is not None)) for row in rows]
    examples = []
    scheme = None
    if labels is not None:
        raw = [
            [labels.names[t] if isinstance(t, int) and not isinstance(t, bool) else str(t) for t in tags]
            for _, _, tags in parsed
        ]
        scheme = detect_scheme(raw)
    for i, (row, words, _tags) in enumerate(parsed):
        source = f"{where}:{row.line}"
        example = Example(source=source, words=words)
        if labels is not None:
            try:
                iob2 = to_iob2(raw[i], scheme)
            except ValueError as exc:
                raise DataError(str(exc), where, row.line) from None
            example.tags = [labels.id(tag, source) for tag in iob2]
        examples.append(example)
    return examples


def load_split(cfg: DataConfig, split: str, task: str, labels: LabelSet | None, limit: int | None) -> list[Example]:
    rows, where, _ = load_raw_split(cfg, split, task)
    rows = sample(rows, limit)
    build = token_examples if task == "token" else sequence_examples
    return build(rows, where, cfg, labels)


def resolve_labels(cfg: DataConfig, task: str) -> LabelSet:
    """Label set: the config's list, else labels.txt / the hub's names, else sorted from train.
    Regression: the one output, named after the label column."""
    if cfg.problem == "regression":
        return LabelSet(list(cfg.labels or [cfg.label_column]), cfg.problem)
    if cfg.labels:
        names = list(cfg.labels)
        if task == "token":
            names = token_label_names(names, [], cfg, "config")
        return LabelSet(names, cfg.problem)
    rows, where, declared = load_raw_split(cfg, "train", task)
    if task == "token":
        return LabelSet(token_label_names(declared, rows, cfg, where))
    if declared:
        return LabelSet(declared, cfg.problem)
    if cfg.problem == "multi_label":
        found = {
            str(v)
            for row in rows
            for v in multi_label_values(_column(row, cfg.label_column, where), f"{where}:{row.line}")
        }
        return LabelSet(sorted(found), cfg.problem)
    values = set()
    for row in rows:
        value = _column(row, cfg.label_column, where)
        if isinstance(value, (list, dict)):
            raise DataError(
                f"label {value!r} is not a single label"
                + (" (a list of labels: pass --problem multi_label)" if isinstance(value, list) else ""),
                where,
                row.line,
            )
        values.add(value)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return LabelSet([str(v) for v in range(max(values) + 1)])
    return LabelSet(sorted(str(v) for v in values))
