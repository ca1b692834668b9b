"""CoNLL-2003 NER with the default model: bidirectional (LS-unLLaMA) vs causal, side by side.

    python -m benchmarks ner [--variants bidirectional causal layerwise] [--train-rows 2000]

Each variant is the plain `lsllama train --data conll2003 --max-train-samples 2000` run (token-task
defaults: 3 epochs, lr 1e-3, LoRA on all linear layers), with the attention flag changed. The model
is selected on the full validation split (3,250 sentences, every word scored); the test split is
reported for the selected model. Finished runs are cached in benchmarks/cache/ner/, so an interrupted
benchmark resumes. Writes benchmarks/results/ner.json and ner.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import record
from lsllama import Classifier, build_config

VARIANTS = {
    "bidirectional": {"bidirectional": True},
    "causal": {"bidirectional": False},
    "layerwise": {"bidirectional": False, "unmask_from_layer": 15},  # half of SmolLM2's 30 layers
}


def run_variant(name: str, train_rows: int, cache: Path) -> dict:
    cfg = build_config(
        task="token",
        overrides={"model": VARIANTS[name], "data": {"data": "conll2003", "max_train_samples": train_rows}},
    )
    out = cache / f"{name}-{train_rows}"
    results = Classifier.train(cfg, out, progress=True) and json.loads((out / "results.json").read_text())
    scored = out / "test_metrics.json"
    if not scored.is_file():
        test = Classifier.load(out).evaluate(split="test")
        scored.write_text(json.dumps(test))
    test = json.loads(scored.read_text())
    return {
        "variant": name,
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


def main(argv: list[str]) -> None:
    parser = record.parser(__name__, __doc__)
    parser.add_argument("--variants", nargs="+", default=["bidirectional", "causal"], choices=list(VARIANTS))
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report finished runs and the curves of unfinished ones",
    )
    args = parser.parse_args(argv)
    started = record.Record.start(__name__, argv)
    cache = record.CACHE / "ner"
    finished = [n for n in args.variants if (cache / f"{n}-{args.train_rows}" / "results.json").is_file()]
    rows = [run_variant(name, args.train_rows, cache) for name in (finished if args.report_only else args.variants)]
    curves = {name: validation_curve(cache / f"{name}-{args.train_rows}") for name in args.variants}
    lines = [
        started.header(
            f"SmolLM2-135M-Instruct, CoNLL-2003, {args.train_rows} training sentences, 3 epochs, model selected on "
            "the full validation split."
        ),
        "",
        "| attention | validation span F1 | test span F1 | test F1 PER / ORG / LOC / MISC | training time (s) |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        per = r["test_per_type_f1"]
        types = " / ".join(f"{per.get(t, 0):.3f}" for t in ("PER", "ORG", "LOC", "MISC"))
        seconds = "n/a" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(f"| {r['variant']} | {r['validation_f1']:.3f} | {r['test_f1']:.3f} | {types} | {seconds} |")
    lines += ["", "Validation span F1 after each epoch (from each run's metrics.jsonl):", ""]
    for name, curve in curves.items():
        status = "" if name in finished or not args.report_only else " (run unfinished)"
        lines.append(f"- {name}{status}: " + (" / ".join(f"{f:.3f}" for f in curve) or "no evaluation yet"))
    started.write("ner", {"rows": rows, "validation_curves": curves}, "\n".join(lines) + "\n", args.out)
