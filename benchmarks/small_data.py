"""Small data: the head that starts from the label words against the paper's random head, seed by seed.

    python -m benchmarks small_data [--datasets sst2 ...] [--rows 300 ...] [--seeds 0 1 2]
                                    [--variants random names ...] [--eval-rows 300] [--model NAME]

Each run is `lsllama train --data D --max-train-samples N --max-eval-samples E --seed S` plus the
variant's flags, in a run folder under benchmarks/cache/small_data/ (a finished folder is read, not run
again: an interrupted benchmark resumes). Reported: validation accuracy of the kept model (mean ± std
over seeds) and, for the label-word head, at step 0 (before any update: the zero-shot classifier that
the head starts as). Writes results/small_data.json and .md.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.record import CACHE, Record, parser

GENERIC_TEMPLATE = "{text}\\nQuestion: {labels}?\\nAnswer:"
"""A template that names no data set (typed as on the command line: `\\n` is a newline)."""
VARIANTS = {
    "random": ("random head (the paper's)", ["--head-init", "random"]),
    "names": ("label-word head (default)", []),
    "names+min100": ("label-word head, at least 100 steps", ["--min-steps", "100"]),
    "names+template": ("label-word head, generic template", ["--template", GENERIC_TEMPLATE]),
}


def run_once(folder: Path, args: list[str]) -> dict:
    """Train (unless the folder holds the finished run) and read what the report needs from the folder."""
    if not (folder / "results.json").is_file():
        command = [sys.executable, "-m", "lsllama.cli", "train", "--output", str(folder), *args]
        subprocess.run(command, check=True, capture_output=True, text=True)
    results = json.loads((folder / "results.json").read_text())
    evals = [e for e in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if e["event"] == "eval"]
    step0 = [e["accuracy"] for e in evals if e["step"] == 0]
    return {
        "accuracy": results["validation"]["accuracy"],
        "step0": step0[0] if step0 else None,
        "best_step": results["best_step"],
        "steps": results["global_step"],
        "curve": [[e["step"], e["accuracy"]] for e in evals],
        "train_seconds": results["throughput"]["seconds"],
    }


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f} (1 run)"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} ({len(values)} seeds)"


def table(runs: list[dict], datasets: list[str], sizes: list[int], variants: list[str]) -> str:
    columns = [(d, n) for d in datasets for n in sizes]
    lines = [
        "| variant | " + " | ".join(f"{d}, {n} rows" for d, n in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for variant in variants:
        for label, key in ((VARIANTS[variant][0], "accuracy"), ("  at step 0, before training", "step0")):
            cells = []
            for dataset, rows in columns:
                found = [r[key] for r in runs if (r["dataset"], r["rows"], r["variant"]) == (dataset, rows, variant)]
                cells.append(mean_std([v for v in found if v is not None]))
            if key == "accuracy" or any(c != "—" for c in cells):
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    options = parser(__name__, __doc__)
    options.add_argument("--datasets", nargs="+", default=["sst2"])
    options.add_argument("--rows", nargs="+", type=int, default=[300])
    options.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    options.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["random", "names"])
    options.add_argument("--eval-rows", type=int, default=300)
    options.add_argument("--model", default="smollm2-135m")
    options.add_argument("--cache", type=Path, default=CACHE / "small_data", help="run folders (resumable)")
    args = options.parse_args(argv)
    record = Record.start(__name__, argv)
    runs = []
    for dataset in args.datasets:
        for rows in args.rows:
            for variant in args.variants:
                for seed in args.seeds:
                    folder = args.cache / args.model / f"{dataset}-{rows}-{variant}-s{seed}"
                    flags = ["--data", dataset, "--model", args.model, "--max-train-samples", str(rows)]
                    flags += ["--max-eval-samples", str(args.eval_rows), "--seed", str(seed), *VARIANTS[variant][1]]
                    run = {"dataset": dataset, "rows": rows, "variant": variant, "seed": seed}
                    run.update(run_once(folder, flags))
                    print(json.dumps(run), flush=True)
                    runs.append(run)
    details = (
        f"model {args.model}; validation accuracy of the kept model on {args.eval_rows} fixed validation rows, "
        "mean ± std over seeds; 'at step 0': the label-word head before any update"
    )
    markdown = record.header(details) + "\n\n" + table(runs, args.datasets, args.rows, args.variants) + "\n"
    record.write("small_data", {"runs": runs, "eval_rows": args.eval_rows}, markdown, args.out)
