"""From a `--data` argument to validated examples with integer labels.

`--data` may be a folder holding `train` / `validation` / `test` files, a name resolved under the data
root ($LSLLAMA_DATA, default ../shared/data), a single file, or a Hugging Face hub dataset id. Every
example remembers its file and line so that a bad label or an empty text is reported where it is.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import math
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsllama.config import DataConfig
from lsllama.data.readers import SPLIT_SUFFIXES, Row, read_rows
from lsllama.data.tagging import describe_scheme, detect_scheme, read_conll, split_tag, to_iob2
from lsllama.errors import DataError, UsageError
from lsllama.hub import closest, offline_reason

logger = logging.getLogger(__name__)

SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test",),
}
SAMPLE_SEED = 0  # fixed, so that every training seed sees the same sample of a large split
HOLD_OUT_SEED = 0
"""Fixed, not the training seed: every seed of a run holds out the same validation rows."""
VALIDATION_ROWS = "validation_rows.json"
"""In a run folder: the source (file:line) of every training row held out as validation."""


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
    """The file (or hub id) holding a split; None when the split does not exist. A single file (`--data
    my.csv`, or `--train-file` alone) is the training split only."""
    explicit = {"train": cfg.train_file, "validation": cfg.validation_file, "test": cfg.test_file}.get(split)
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"--{split}-file {explicit}: no such file")
        return path
    location = resolve_location(cfg)
    if isinstance(location, str):
        return location if _hub_split_name(location, split) is not None else None
    if location is None or location.is_file():
        return location if split == "train" else None
    for alias in SPLIT_ALIASES.get(split, (split,)):
        for suffix in SPLIT_SUFFIXES:
            candidate = location / f"{alias}{suffix}"
            if candidate.is_file():
                return candidate
    return None


@functools.lru_cache(maxsize=2)
def _hub_dataset(name: str) -> Any:
    """Every split of a hub dataset (a `datasets.DatasetDict`), loaded once per process."""
    try:
        import datasets

        return datasets.load_dataset(name)
    except Exception as exc:  # offline, unknown id: all one message for the user
        raise UsageError(
            f"--data {name}: not a local file or folder, and loading it from the Hugging Face hub failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


def _hub_split_name(name: str, split: str) -> str | None:
    """The hub dataset's own name for a split (`validation`, `valid`, `dev`...), None if it has none."""
    return next((alias for alias in SPLIT_ALIASES.get(split, (split,)) if alias in _hub_dataset(name)), None)


def _load_hub_split(name: str, split: str, label_column: str) -> tuple[list[Row], list[str] | None]:
    """Rows of a hub split, and the label names of its label column's ClassLabel feature (for the token
    task, the tags column's sequence of ClassLabel), if it has one."""
    ds = _hub_dataset(name)[_hub_split_name(name, split)]
    feature = ds.features.get(label_column)
    inner = getattr(feature, "feature", feature)
    names = list(inner.names) if hasattr(inner, "names") else None
    return [Row(dict(r), i + 1) for i, r in enumerate(ds)], names


def load_raw_split(cfg: DataConfig, split: str, task: str) -> tuple[list[Row], Path | str, list[str] | None]:
    """Rows of one split, where they came from, and label names the source itself declares."""
    where = split_file(cfg, split)
    if where is None:
        raise UsageError(f"--data {cfg.data}: has no {split!r} split")
    if isinstance(where, str):
        rows, names = _load_hub_split(where, split, cfg.tags_column if task == "token" else cfg.label_column)
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
        self.value_names: list[str] | None = None

    def reading(self, value_names: list[str] | None) -> LabelSet:
        """This label set for a source that declares its own names (labels.txt, a hub ClassLabel): an
        integer label value is the id in *that* list, mapped to this set by name."""
        view = LabelSet(self.names, self.problem)
        view.value_names = list(value_names) if value_names is not None and self.problem != "regression" else None
        return view

    def __len__(self) -> int:
        return len(self.names)

    def id(self, value: Any, source: str) -> int:
        if isinstance(value, str) and value in self.index:
            return self.index[value]
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            number = int(value)
            names = self.names if self.value_names is None else self.value_names
            if 0 <= number < len(names) and names[number] in self.index:
                return self.index[names[number]]
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


def column_value(row: Row, column: str, where: Path | str) -> Any:
    if column not in row.values:
        raise DataError(
            f"missing column {column!r} (found: {', '.join(map(str, row.values)) or 'none'})", where, row.line
        )
    return row.values[column]


def text_field(row: Row, column: str, where: Path | str) -> str:
    """The one check of a text cell, for training data and prediction input alike: a non-blank string."""
    value = column_value(row, column, where)
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
        example = Example(source=source, text=text_field(row, cfg.text_column, where))
        if cfg.text_pair_column:
            example.text_pair = text_field(row, cfg.text_pair_column, where)
        if labels is not None:
            example.label = labels.target(column_value(row, cfg.label_column, where), source)
        examples.append(example)
    return examples


def _words_and_tags(row: Row, cfg: DataConfig, where: Path | str, with_tags: bool) -> tuple[list[str], list]:
    words = column_value(row, cfg.tokens_column, where)
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise DataError(f"column {cfg.tokens_column!r} must be a list of strings", where, row.line)
    if not words:
        raise DataError("empty sentence (no tokens)", where, row.line)
    if any(not w.strip() for w in words):
        raise DataError("a token is empty or whitespace", where, row.line)
    if not with_tags:
        return words, []
    tags = column_value(row, cfg.tags_column, where)
    if not isinstance(tags, list):
        raise DataError(f"column {cfg.tags_column!r} must be a list", where, row.line)
    if len(tags) != len(words):
        raise DataError(f"{len(words)} tokens but {len(tags)} tags", where, row.line)
    return words, tags


def iob2_names(tags: list[str]) -> list[str]:
    """A tag set in IOB2, in first-seen order: S-/U- tags become B-, E-/L- tags I-, and every type has both
    its B- and its I- tag (an IOB1 or IO file may never use B-, yet the converted data does)."""
    names: list[str] = []
    for tag in tags:
        try:
            prefix, entity_type = split_tag(tag)
        except ValueError as exc:
            raise UsageError(f"tag set: {exc}") from None
        for name in ("O",) if prefix == "O" else (f"B-{entity_type}", f"I-{entity_type}"):
            if name not in names:
                names.append(name)
    return names


def token_label_names(declared: list[str] | None, rows: list[Row], cfg: DataConfig, where: Path | str) -> list[str]:
    """IOB2 tag set: declared names (converted to IOB2), else the training tags; O first."""
    if declared is None:
        found = set()
        for row in rows:
            for tag in _tag_names(_words_and_tags(row, cfg, where, True)[1], None, where, row.line):
                try:
                    split_tag(tag)
                except ValueError as exc:
                    raise DataError(str(exc), where, row.line) from None
                found.add(tag)
        declared = sorted(found, key=lambda t: (t != "O", t[2:], t[:1]))
    return iob2_names(declared)


def _tag_names(tags: list, declared: list[str] | None, where: Path | str, line: int) -> list[str]:
    """A sentence's tags as the file's own names: an integer is an id into the file's tag list."""
    names = []
    for tag in tags:
        if isinstance(tag, int) and not isinstance(tag, bool):
            if declared is None:
                raise DataError(f"integer tag {tag} but no tag names (labels.txt beside the file)", where, line)
            if not 0 <= tag < len(declared):
                raise DataError(f"tag id {tag} is out of range: the file has {len(declared)} tag names", where, line)
            tag = declared[tag]
        names.append(str(tag))
    return names


def token_examples(
    rows: list[Row], where: Path | str, cfg: DataConfig, labels: LabelSet | None, declared: list[str] | None = None
) -> list[Example]:
    """Sentences for the token task. Gold tags (integer ids are read through `declared`, the file's own tag
    names) are converted from the file's detected scheme to IOB2."""
    parsed = [(row, *_words_and_tags(row, cfg, where, labels is not None)) for row in rows]
    examples = []
    raw, scheme = [], "IOB2"
    if labels is not None:
        raw = [_tag_names(tags, declared, where, row.line) for row, _, tags in parsed]
        scheme = detect_scheme(raw)
        logger.info("tags: %s scheme in %s (read as IOB2)", describe_scheme(raw, scheme), where)
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


def _check_label_names(labels: LabelSet, declared: list[str] | None, where: Path | str, task: str) -> None:
    """Refuse data whose declared label names are not the run's: ids would silently mean other labels."""
    if declared is None or labels.problem == "regression":
        return
    names = set(iob2_names(declared) if task == "token" else declared)
    extra, missing = sorted(names - set(labels.names)), sorted(set(labels.names) - names)
    if extra or missing:
        difference = "; ".join(
            part
            for part in (
                extra and f"only in the data: {', '.join(extra)}",
                missing and f"not in the data: {', '.join(missing)}",
            )
            if part
        )
        raise UsageError(f"{where}: label names differ from the run's ({difference})")


def _read_examples(cfg: DataConfig, split: str, task: str, labels: LabelSet | None) -> list[Example]:
    """Every example of a split as stored (`labels=None`: texts only)."""
    rows, where, declared = load_raw_split(cfg, split, task)
    if labels is not None:
        _check_label_names(labels, declared, where, task)
    if task == "token":
        return token_examples(rows, where, cfg, labels, declared)
    return sequence_examples(rows, where, cfg, labels.reading(declared) if labels is not None else None)


def hold_out(examples: list[Example], fraction: float, stratify: bool) -> tuple[list[Example], list[Example]]:
    """(kept, held out): a seeded `fraction` of the examples (at least one, never all), stratified by label
    when `stratify`: within each label, rows are shuffled; the labels' rows are laid end to end and every
    1/fraction-th position is held out, so each label gives its share. Both keep the original order."""
    if len(examples) < 2:
        raise UsageError(f"the training split has {len(examples)} row(s): too few to hold out validation rows from it")
    rng = random.Random(HOLD_OUT_SEED)
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        groups[example.label if stratify else None].append(i)
    order = []
    for key in sorted(groups, key=str):
        members = groups[key]
        rng.shuffle(members)
        order += members
    n = min(len(examples) - 1, max(1, round(len(examples) * fraction)))
    held = {order[i] for i in range(len(order)) if (i + 1) * n // len(order) > i * n // len(order)}
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def _carved_validation(cfg: DataConfig) -> bool:
    """Whether validation is held out from the training split (the data has no validation split)."""
    return split_file(cfg, "validation") is None and cfg.validation_fraction > 0


def _held_out_splits(cfg: DataConfig, task: str, labels: LabelSet) -> tuple[list[Example], list[Example]]:
    stratify = task == "sequence" and labels.problem == "single_label"
    return hold_out(_read_examples(cfg, "train", task, labels), cfg.validation_fraction, stratify)


def load_split(cfg: DataConfig, split: str, task: str, labels: LabelSet | None, limit: int | None) -> list[Example]:
    """One split's examples (a fixed sample of `limit` of them). Without a validation split in the data,
    `validation` is the rows held out of the training file and `train` the rest."""
    if split not in SPLIT_ALIASES:
        raise UsageError(f"--split must be one of {', '.join(SPLIT_ALIASES)}, got {split!r}")
    if limit is not None and limit <= 0:
        raise UsageError(f"the number of {split} samples must be positive, got {limit}")
    if split != "test" and labels is not None and _carved_validation(cfg):
        kept, held = _held_out_splits(cfg, task, labels)
        return sample(kept if split == "train" else held, limit)
    if split_file(cfg, split) is None:
        location = resolve_location(cfg)
        single = location is None or (isinstance(location, Path) and location.is_file())
        what = f"--data {cfg.data}" if cfg.data is not None else f"--train-file {cfg.train_file}"
        why = " (a single file is the training split; its validation rows are held out of it)" if single else ""
        raise UsageError(f"{what}: has no {split!r} split{why}")
    return sample(_read_examples(cfg, split, task, labels), limit)


@dataclass
class TrainingData:
    """What a run trains and selects on, and where its validation rows came from."""

    train: list[Example]
    validation: list[Example]
    held_out: list[str] = field(default_factory=list)
    """The source (file:line) of every training row held out as validation; empty with a validation split."""

    def write_held_out(self, path: Path) -> None:
        """Name the held-out rows in the run folder (and leave no stale list when there are none)."""
        path.unlink(missing_ok=True)
        if self.held_out:
            path.write_text(json.dumps(self.held_out, indent=0) + "\n", encoding="utf-8")


def training_data(cfg: DataConfig, task: str, labels: LabelSet) -> TrainingData:
    """Training and validation examples after `max_train_samples` / `max_eval_samples`. Data without a
    validation split gives `validation_fraction` of its training rows (seeded, stratified by label for
    single-label data) as validation, and says so; a run with no training rows is refused."""
    train_where = split_file(cfg, "train")
    if train_where is None:
        raise UsageError(f"--data {cfg.data}: has no 'train' split")
    held_out: list[str] = []
    if _carved_validation(cfg):
        train, validation = _held_out_splits(cfg, task, labels)
        held_out = [e.source for e in validation]
        logger.info(
            "validation: %g%% of train held out (%d rows), no validation split in %s",
            100 * cfg.validation_fraction,
            len(validation),
            train_where,
        )
    else:
        train = _read_examples(cfg, "train", task, labels)
        has_validation = split_file(cfg, "validation") is not None
        validation = _read_examples(cfg, "validation", task, labels) if has_validation else []
        if not has_validation:
            logger.info("validation: none (--validation-fraction 0): the last weights are kept")
    train = sample(train, cfg.max_train_samples)
    if not train:
        raise UsageError(f"--data {cfg.data or cfg.train_file}: the training split is empty")
    return TrainingData(train, sample(validation, cfg.max_eval_samples), held_out)


def resolve_labels(cfg: DataConfig, task: str) -> LabelSet:
    """Label set: the config's list, else labels.txt / the hub's names, else sorted from train (with a
    warning for a rare class whose name is close to another's: a typo would silently be a class of its own).
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
    counts: Counter = Counter()
    for row in rows:
        value = column_value(row, cfg.label_column, where)
        if cfg.problem == "multi_label":
            counts.update(str(v) for v in multi_label_values(value, f"{where}:{row.line}"))
        elif isinstance(value, (list, dict)):
            raise DataError(
                f"label {value!r} is not a single label"
                + (" (a list of labels: pass --problem multi_label)" if isinstance(value, list) else ""),
                where,
                row.line,
            )
        else:
            counts[value] += 1
    if cfg.problem != "multi_label" and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        return LabelSet([str(v) for v in range(max(counts) + 1)])
    _warn_about_likely_typos(Counter({str(k): v for k, v in counts.items()}), len(rows), where)
    return LabelSet(sorted(str(v) for v in counts), cfg.problem)


RARE_LABEL_ROWS = 2
"""A label inferred from at most this many rows (and under 1% of them), named like another label, is
probably a typo of it."""


def _warn_about_likely_typos(counts: Counter, n_rows: int, where: Path | str) -> None:
    for name, count in sorted(counts.items()):
        if count > RARE_LABEL_ROWS or count >= 0.01 * n_rows:
            continue
        others = [other for other in counts if other != name and counts[other] > count]
        close = difflib.get_close_matches(name, others, n=1)
        if close:
            logger.warning(
                "label %r has only %d row(s) in %s and is close to %r: a typo? "
                "Pin the label set with --labels or labels.txt",
                name,
                count,
                where,
                close[0],
            )
