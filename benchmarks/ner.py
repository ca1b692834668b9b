"""CoNLL-2003 NER with the default model: bidirectional (LS-unLLaMA) vs causal, side by side.

    python -m benchmarks ner [--variants bidirectional causal layerwise] [--train-rows 2000] [--seeds 42 43 44]

Each variant is the plain `lsllama train --data conll2003 --max-train-samples 2000 --seed S` run
(token-task defaults: 3 epochs, batch 8, lr 5e-4, LoRA on all linear layers), with the attention flag changed. The model
is selected on the full validation split (3,250 sentences, every word scored); the test split is
reported for the selected model. Three seeds, because one is not enough here: a run's trajectory at lr
1e-3 (the token default until 2026-12-05) turned on rounding (two seed-42 runs that differed only in how
batches were split into micro-batches, which gives the same gradients up to rounding, ended 0.12 span F1
apart). Finished runs are cached in benchmarks/cache/ner/, so an interrupted benchmark resumes; after a
change of lsllama's defaults lsllama refuses to continue a cached run with other settings, so move that
folder away first. Writes benchmarks/results/ner.json (every run, and each variant's mean and standard
deviation) and ner.md.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks import record
from lsllama import Classifier, build_config
from lsllama.config import TOKEN_TASK_DEFAULTS

TOKEN = TOKEN_TASK_DEFAULTS["train"]
"""The token task's epochs and batch size, which every variant trains with (the header names them)."""
VARIANTS = {
    "bidirectional": {"bidirectional": True},
    "causal": {"bidirectional": False},
    "layerwise": {"bidirectional": False, "unmask_from_layer": 15},  # half of SmolLM2's 30 layers
}


def run_folder(cache: Path, name: str, train_rows: int, seed: int) -> Path:
    return cache / f"{name}-{train_rows}-s{seed}"


def run_variant(name: str, train_rows: int, seed: int, cache: Path) -> dict:
    cfg = build_config(
        task="token",
        overrides={
            "model": VARIANTS[name],
            "data": {"data": "conll2003", "max_train_samples": train_rows},
            "train": {"seed": seed},
        },
    )
    out = run_folder(cache, name, train_rows, seed)
    results = Classifier.train(cfg, out, progress=True) and json.loads((out / "results.json").read_text())
    scored = out / "test_metrics.json"
    if not scored.is_file():
        test = Classifier.load(out).evaluate(split="test")
        scored.write_text(json.dumps(test))
    test = json.loads(scored.read_text())
    return {
        "variant": name,
        "seed": seed,
        "validation_f1": results["validation"]["f1"],
        "validation_token_accuracy": results["validation"]["token_accuracy"],
        "validation_sentences": results["validation_examples"],
        "test_f1": test["f1"],
        "test_per_type_f1": {k: v["f1"] for k, v in test["per_type"].items()},
        "test_windowed_sentences": test["windowed_sentences"],
        "best_step": results["best_step"],
        # None for a run trained before lsllama recorded throughput (cached runs are reused as they are)
        "train_seconds": (results.get("throughput") or {}).get("seconds"),
    }


def validation_curve(out: Path) -> list[float]:
    """Validation span F1 at each evaluation (every epoch), read from the run's log; works mid-run too."""
    log = out / "metrics.jsonl"
    if not log.is_file():
        return []
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e["f1"] for e in events if e.get("event") == "eval"]


def summarize(rows: list[dict], variants: list[str]) -> list[dict]:
    """Per variant: mean and standard deviation over its seeds of validation and test span F1."""
    summary = []
    for name in variants:
        runs = [r for r in rows if r["variant"] == name]
        if not runs:
            continue
        entry: dict = {"variant": name, "seeds": [r["seed"] for r in runs]}
        for key in ("validation_f1", "test_f1"):
            values = [r[key] for r in runs]
            entry[f"{key}_mean"] = statistics.mean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        entry["test_per_type_f1_mean"] = {
            t: statistics.mean(r["test_per_type_f1"].get(t, 0.0) for r in runs) for t in ("PER", "ORG", "LOC", "MISC")
        }
        seconds = [r["train_seconds"] for r in runs if r["train_seconds"] is not None]
        entry["train_seconds_mean"] = statistics.mean(seconds) if seconds else None
        summary.append(entry)
    return summary


def mean_std(entry: dict, key: str) -> str:
    std = entry[f"{key}_std"]
    return f"{entry[f'{key}_mean']:.3f}" + ("" if std is None else f" ± {std:.3f}")


def table(summary: list[dict]) -> list[str]:
    lines = [
        "| attention | seeds | validation span F1 | test span F1 | test F1 PER / ORG / LOC / MISC "
        "| training time (s) |",
        "| --- | --- | ---: | ---: | --- | ---: |",
    ]
    for entry in summary:
        per = entry["test_per_type_f1_mean"]
        types = " / ".join(f"{per[t]:.3f}" for t in ("PER", "ORG", "LOC", "MISC"))
        seconds = "n/a" if entry["train_seconds_mean"] is None else f"{entry['train_seconds_mean']:.0f}"
        seeds = ", ".join(map(str, entry["seeds"]))
        lines.append(
            f"| {entry['variant']} | {seeds} | {mean_std(entry, 'validation_f1')} | {mean_std(entry, 'test_f1')} "
            f"| {types} | {seconds} |"
        )
    return lines


def main(argv: list[str]) -> None:
    parser = record.parser(__name__, __doc__)
    parser.add_argument("--variants", nargs="+", default=["bidirectional", "causal"], choices=list(VARIANTS))
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report finished runs and the curves of unfinished ones",
    )
    args = parser.parse_args(argv)
    started = record.Record.start(__name__, argv)
    cache = record.CACHE / "ner"
    runs = [(name, seed) for name in args.variants for seed in args.seeds]
    finished = [(n, s) for n, s in runs if (run_folder(cache, n, args.train_rows, s) / "results.json").is_file()]
    rows = [run_variant(n, args.train_rows, s, cache) for n, s in (finished if args.report_only else runs)]
    curves = {f"{n}, seed {s}": validation_curve(run_folder(cache, n, args.train_rows, s)) for n, s in runs}
    summary = summarize(rows, args.variants)
    lines = [
        started.header(
            f"SmolLM2-135M-Instruct, CoNLL-2003, {args.train_rows} training sentences, {TOKEN['epochs']:g} epochs, "
            f"batch {TOKEN['batch_size']}, model selected on the full validation split; mean ± standard deviation "
            "over the seeds."
        ),
        "",
        *table(summary),
        "",
        "Validation span F1 after each epoch (from each run's metrics.jsonl):",
        "",
    ]
    for (name, seed), (label, curve) in zip(runs, curves.items(), strict=True):
        status = "" if (name, seed) in finished or not args.report_only else " (run unfinished)"
        lines.append(f"- {label}{status}: " + (" / ".join(f"{f:.3f}" for f in curve) or "no evaluation yet"))
    figures = {"rows": rows, "summary": summary, "validation_curves": curves}
    started.write("ner", figures, "\n".join(lines) + "\n", args.out)
