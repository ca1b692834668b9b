"""Breadth on real data: one short run per problem type beyond single-label classification, default model.

    python -m benchmarks breadth [--runs regression multi_label pairs long_head long_windows] [--rows 600]
    python -m benchmarks breadth --model tiny-random --rows 40     # smoke check of this script (a minute)

../shared/data holds single-label sets only, so this script first makes the others from it, into
benchmarks/cache/breadth/data/ (outside the repository, as the data's terms ask). They are constructed,
not published benchmarks, and their numbers compare with nothing published:

- `sst5_regression`: SST-5 with its five ordered classes as numbers (very negative 0 ... very positive 4),
  predicted as one value. Pearson / Spearman against these ordinal scores (the published SST-5 figure is
  5-way accuracy). Splits as in SST-5.
- `news_topics` (multi-label): AG News articles (the 5,000-row training sample), a third of them alone
  and two thirds joined with a second article (topics drawn independently), labelled with the set of
  their topics: one or two of World, Sports, Business, Sci/Tech. A synthetic multi-topic task; no
  real multi-label corpus is in ../shared/data. Train and validation come from disjoint parts of the
  AG News training sample, test from the AG News test split.
- `sst2_same_sentiment` (text pairs): two SST-2 sentences, labelled `same` or `different` by whether
  their sentiments agree; no sentence is in two pairs. Train from SST-2's training split, validation
  from its validation split.
- `ag_news_dev` (long texts): the AG News training sample split into train and validation parts.
  Articles run about 50 tokens, so at `--max-length 32` most are "long": `long_head` keeps their first
  32 tokens, `long_windows` reads 32-token windows (stride 16) and averages them before the head.

Every run is `lsllama train` with `--max-train-samples ROWS`, one epoch, the package defaults otherwise
(causal, last-token pooling, LoRA on all linear layers, lr 5e-4, batch 16) and a fixed sample of at most
500 validation rows. With one epoch there is one evaluation, so validation is not used for model
selection, except that multi-label thresholds are tuned on it: that run is also scored on its test split
(500 rows) with the saved thresholds. "Trivial" is what a model that ignores the text scores: the
majority class (accuracy), the training mean (MSE), or every label predicted (micro F1).

Data and finished runs are cached under benchmarks/cache/breadth/, so an interrupted benchmark resumes.
Writes benchmarks/results/breadth.md and breadth.json (a smoke run with another model or row count
writes them into its cache folder instead, --out anywhere).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer

from benchmarks import record
from lsllama import Classifier, build_config
from lsllama.data.dataset import data_root, load_split, resolve_labels, sample
from lsllama.data.encoding import encode_examples
from lsllama.run_folder import RunFolder
from lsllama.training.loop import train_run

CACHE = record.CACHE / "breadth"
DEFAULT_MODEL, DEFAULT_ROWS, EVAL_ROWS = "smollm2-135m", 600, 500
SST5_SCORES = {"very negative": 0, "negative": 1, "neutral": 2, "positive": 3, "very positive": 4}
RUNS: dict[str, dict[str, Any]] = {
    "regression": {"data": "sst5_regression", "settings": {"problem": "regression"}},
    "multi_label": {"data": "news_topics", "settings": {"problem": "multi_label"}},
    "pairs": {"data": "sst2_same_sentiment", "settings": {"text_pair_column": "text_b"}},
    "long_head": {"data": "ag_news_dev", "settings": {"max_length": 32, "long_text": "head"}},
    "long_windows": {
        "data": "ag_news_dev",
        "settings": {"max_length": 32, "long_text": "windows", "window_stride": 16},
    },
}
HEADLINE = {
    "single_label": ("accuracy", "macro_f1"),
    "multi_label": ("micro_f1", "macro_f1", "subset_accuracy"),
    "regression": ("pearson", "spearman", "mse"),
}


# ---- data ----


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_folder(name: str, splits: dict[str, list[dict]], labels: list[str] | None = None) -> None:
    """Write a data folder atomically: a half-written folder never looks finished."""
    target = CACHE / "data" / name
    if target.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    for split, rows in splits.items():
        (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if labels:
        (tmp / "labels.txt").write_text("\n".join(labels) + "\n")
    os.replace(tmp, target)


def make_sst5_regression(source: Path) -> None:
    splits = {
        split: [{"text": r["text"], "label": SST5_SCORES[r["label"]]} for r in read_jsonl(source / f"{split}.jsonl")]
        for split in ("train", "validation", "test")
    }
    write_folder("sst5_regression", splits)


def _join_articles(rows: list[dict], rng: random.Random) -> list[dict]:
    out, i = [], 0
    while i < len(rows):
        take = 1 if rng.random() < 1 / 3 or i + 1 == len(rows) else 2
        parts = rows[i : i + take]
        out.append({"text": " ".join(p["text"] for p in parts), "label": sorted({p["label"] for p in parts})})
        i += take
    return out


def make_news_topics(source: Path) -> None:
    rng = random.Random(0)
    train = read_jsonl(source / "train.jsonl")
    rng.shuffle(train)
    test = read_jsonl(source / "test.jsonl")
    rng.shuffle(test)
    labels = (source / "labels.txt").read_text().split("\n")
    splits = {
        "train": _join_articles(train[:4000], rng),
        "validation": _join_articles(train[4000:], rng),
        "test": _join_articles(test[:1500], rng),
    }
    write_folder("news_topics", splits, [name for name in labels if name.strip()])


def _pairs(rows: list[dict], rng: random.Random) -> list[dict]:
    rows = list(rows)
    rng.shuffle(rows)
    return [
        {"text": a["text"], "text_b": b["text"], "label": "same" if a["label"] == b["label"] else "different"}
        for a, b in zip(rows[0::2], rows[1::2], strict=False)
    ]


def make_sst2_same_sentiment(source: Path) -> None:
    rng = random.Random(0)
    train = read_jsonl(source / "train.jsonl")[:20000]
    splits = {"train": _pairs(train, rng), "validation": _pairs(read_jsonl(source / "validation.jsonl"), rng)}
    write_folder("sst2_same_sentiment", splits, ["different", "same"])


def make_ag_news_dev(source: Path) -> None:
    rng = random.Random(0)
    train = read_jsonl(source / "train.jsonl")
    rng.shuffle(train)
    labels = [name for name in (source / "labels.txt").read_text().split("\n") if name.strip()]
    write_folder("ag_news_dev", {"train": train[:4000], "validation": train[4000:]}, labels)


def make_data() -> None:
    root = data_root()
    make_sst5_regression(root / "sst5")
    make_news_topics(root / "ag_news")
    make_sst2_same_sentiment(root / "sst2")
    make_ag_news_dev(root / "ag_news")


# ---- runs ----


def trivial_score(problem: str, train_rows: list[dict], rows: list[dict], labels: list[str]) -> tuple[str, float]:
    """What ignoring the text scores on `rows`."""
    if problem == "regression":
        mean = float(np.mean([r["label"] for r in train_rows]))
        return "mse", float(np.mean([(r["label"] - mean) ** 2 for r in rows]))
    if problem == "multi_label":
        predicted = len(rows) * len(labels)
        true = sum(len(r["label"]) for r in rows)
        return "micro_f1", 2 * true / (predicted + true)
    counts: dict[str, int] = {}
    for r in train_rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    majority = max(counts, key=counts.__getitem__)
    return "accuracy", sum(r["label"] == majority for r in rows) / len(rows)


def run_one(name: str, model: str, rows: int, runs_folder: Path) -> dict[str, Any]:
    spec = RUNS[name]
    data = CACHE / "data" / spec["data"]
    settings = {**spec["settings"], "data": str(data), "max_train_samples": rows, "max_eval_samples": EVAL_ROWS}
    recipe = {"epochs": 1, "min_steps": 0}  # one epoch, one evaluation (module docstring)
    cfg = build_config(task="sequence", overrides={"model": {"name": model}, "data": settings, "train": recipe})
    out = runs_folder / name
    results = train_run(cfg, out, progress=True).results
    problem = cfg.data.problem
    report: dict[str, Any] = {
        "run": name,
        "data": spec["data"],
        "problem": problem,
        "command": f"lsllama train --data {data.relative_to(record.BENCHMARKS.parent)} --output runs/{name} "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in spec["settings"].items())
        + f" --max-train-samples {rows} --max-eval-samples {EVAL_ROWS}"
        + ("" if model == DEFAULT_MODEL else f" --model {model}"),
        "validation": {k: results["validation"][k] for k in (*HEADLINE[problem], "n")},
        "train_examples": results["train_examples"],
        "train_seconds": results["throughput"]["seconds"],
    }
    validation_rows = sample(read_jsonl(data / "validation.jsonl"), EVAL_ROWS)  # the run's own sample
    labels = json.loads((out / "labels.json").read_text())
    metric, value = trivial_score(problem, sample(read_jsonl(data / "train.jsonl"), rows), validation_rows, labels)
    report["trivial_validation"] = {metric: value}
    if problem == "multi_label":  # its thresholds were tuned on validation: score held-out rows too
        scored = out / "test_metrics.json"
        if not scored.is_file():
            scored.write_text(json.dumps(Classifier.load(out).evaluate(split="test", max_samples=EVAL_ROWS)))
        test = json.loads(scored.read_text())
        report["test"] = {k: test[k] for k in (*HEADLINE[problem], "n")}
        report["thresholds"] = test["thresholds"]
    if name.startswith("long"):
        tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
        examples = load_split(cfg.data, "validation", "sequence", resolve_labels(cfg.data, "sequence"), EVAL_ROWS)
        _, longer = encode_examples(examples, "sequence", tokenizer, RunFolder(out).config().data)  # as it ran
        report["validation_texts_longer_than_max_length"], report["max_length"] = longer, cfg.data.max_length
    return report


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if k != "n")


def markdown(rows: list[dict], started: record.Record, model: str, n: int) -> str:
    lines = [
        started.header(
            f"model `{model}`, {n} training rows, 1 epoch, at most {EVAL_ROWS} validation rows. Data sets are built "
            "by this script (see its docstring)."
        ),
        "",
        "| run | data | problem | validation | trivial | test | training time (s) |",
        "| --- | --- | --- | --- | --- | --- | ---: |",
    ]
    for r in rows:
        test = _scores(r["test"]) if "test" in r else "–"
        extra = ""
        if "validation_texts_longer_than_max_length" in r:
            longer = r["validation_texts_longer_than_max_length"]
            extra = f" ({longer} of {r['validation']['n']} texts over {r['max_length']} tokens)"
        lines.append(
            f"| {r['run']} | {r['data']} | {r['problem']} | {_scores(r['validation'])}{extra} | "
            f"{_scores(r['trivial_validation'])} | {test} | {r['train_seconds']:.0f} |"
        )
    lines += ["", "Commands (the same runs with the `lsllama` command line):", ""]
    lines += [f"- {r['run']}: `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = record.parser(__name__, __doc__)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="training rows per run")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="smoke check: tiny-random")
    args = parser.parse_args(argv)
    started = record.Record.start(__name__, argv)
    make_data()
    runs_folder = CACHE / "runs" / f"{args.model}-{args.rows}"
    rows = [run_one(name, args.model, args.rows, runs_folder) for name in args.runs]
    official = args.model == DEFAULT_MODEL and args.rows == DEFAULT_ROWS
    folder = args.out or (record.RESULTS if official else runs_folder)
    started.write("breadth", {"rows": rows}, markdown(rows, started, args.model, args.rows), folder)
