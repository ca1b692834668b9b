"""Small data: each lever alone and together (the head that starts from the label words, the step floor,
a generic template, the learning rate, the head's own) against the paper's recipe, seed by seed; and the
label-word head on labels that are codes (`codes`: each label described as its index, "0", "1", ...,
which is what a data set of integer labels gives the head) against the random head, so that a data set
without label words is seen not to lose by the default.

    python -m benchmarks small_data [--datasets sst2 ...] [--rows 300 ...] [--seeds 0 1 2]
                                    [--variants random names ...] [--eval-rows 300] [--model NAME]

Each run is `lsllama train --data D --max-train-samples N --max-eval-samples E --seed S` plus the
variant's flags, in a run folder under benchmarks/cache/small_data/ (a finished folder is read, not run
again: an interrupted benchmark resumes). Reported: validation accuracy of the kept model (mean ± std
over seeds) and, for the label-word head, at step 0 (before any update: the zero-shot classifier that
the head starts as; one row per starting point, since the step floor and the head's learning rate do not
change it). Writes results/small_data.json and .md.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from functools import cache
from pathlib import Path

from benchmarks.paper_plan import task_question
from benchmarks.record import CACHE, Record, parser
from lsllama.config import TrainConfig, build_config
from lsllama.data.dataset import resolve_labels

GENERIC_TEMPLATE = "{text}\\nQuestion: {labels}?\\nAnswer:"
"""A template that names no data set (typed as on the command line: `\\n` is a newline)."""
HEAD_LR = 2.5e-3
"""The head's own learning rate in `names+headlr`: five times the adapters' 5e-4 (their default when it
was measured)."""
FLOOR = f"at least {TrainConfig.min_steps} steps"
"""What the variants without `--min-steps` train for: the package's step floor."""
BARE = ["--template", "none"]
"""The text alone: what every variant but the templates' read before `auto` became the default (their
cached runs stay theirs)."""
VARIANTS = {
    "random": ("random head, 1 epoch (the paper's)", ["--head-init", "random", "--min-steps", "0", *BARE]),
    "random+min100": (f"random head, {FLOOR}", ["--head-init", "random", *BARE]),
    "names-1epoch": ("label-word head, 1 epoch", ["--min-steps", "0", *BARE]),
    "names": (f"label-word head, {FLOOR}", BARE),
    "names+template": (f"label-word head, generic template, {FLOOR}", ["--template", GENERIC_TEMPLATE]),
    "names+labels": (f"label-word head, `labels` template, {FLOOR} (default)", ["--template", "labels"]),
    "names+headlr": (f"label-word head, head lr {HEAD_LR:g} (5x), {FLOOR}", ["--head-lr", f"{HEAD_LR:g}", *BARE]),
    "names+floor2x": (
        f"label-word head, at least {2 * TrainConfig.min_steps} steps (twice the floor)",
        ["--min-steps", str(2 * TrainConfig.min_steps), *BARE],
    ),
    "random+template": (
        f"random head, generic template, {FLOOR}",
        ["--head-init", "random", "--template", GENERIC_TEMPLATE],
    ),
}
"""Variant key: (label, `lsllama train` flags); the package defaults otherwise."""
VARIANTS |= {
    f"labels+lr{lr}": (
        f"label-word head, `labels` template, lr {float(lr):g}, {FLOOR}",
        ["--template", "labels", "--lr", lr],
    )
    for lr in ("5e-4", "1e-3")
}
VARIANTS["codes"] = ("label-word head on codes (labels described as '0', '1', ...), defaults", [])
VARIANTS["task+labels"] = (f"label-word head, `labels` question with the task's words (as SFT's prompt), {FLOOR}", [])
"""Their flags depend on the data set (`variant_flags`): its labels, the paper suite's words for its task."""
SPECIAL_STARTS = {"codes": " on codes", "task+labels": ", `labels` question with the task's words"}
"""The variants whose flags depend on the data set, and how their step-0 rows name them."""
TEMPLATE_NAMES = {GENERIC_TEMPLATE: ", generic template", "labels": ", `labels` template"}
"""How the step-0 rows name a variant's template (none: nothing)."""
TRAINING_ONLY = ("--min-steps", "--head-lr", "--lr")
"""Flags that change how the head trains, not where it starts: variants that differ only in these share
their step-0 score."""


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


@cache
def label_names(dataset: str) -> tuple[str, ...]:
    cfg = build_config(task="sequence", overrides={"data": {"data": dataset}}).resolved()
    return tuple(resolve_labels(cfg.data, "sequence").names)


def variant_flags(variant: str, dataset: str) -> list[str]:
    """`codes`: each label described by its index, as if the data set's labels were integers; `task+labels`:
    the data set's task words in the question."""
    if variant == "task+labels":
        return ["--template", task_question(dataset).replace("\n", "\\n")]  # typed as on the command line
    if variant != "codes":
        return VARIANTS[variant][1]
    codes = {name: str(index) for index, name in enumerate(label_names(dataset))}
    return ["--set", f"data.label_descriptions={json.dumps(codes)}"]


def starting_point(variant: str) -> tuple[str, ...]:
    """The variant's flags that decide the model before training (head init, template)."""
    if variant in SPECIAL_STARTS:
        return (variant,)
    flags = VARIANTS[variant][1]
    pairs = zip(flags[::2], flags[1::2], strict=True)  # every flag takes a value
    return tuple(item for flag, value in pairs if flag not in TRAINING_ONLY for item in (flag, value))


def table(runs: list[dict], datasets: list[str], sizes: list[int], variants: list[str]) -> str:
    """One row per variant; after the first variant of each starting point, its step-0 score (once: the
    variants that share it score the same before training)."""
    columns = [(d, n) for d in datasets for n in sizes]
    lines = [
        "| variant | " + " | ".join(f"{d}, {n} rows" for d, n in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    shown: set[tuple[str, ...]] = set()
    for variant in variants:
        lines.append(f"| {VARIANTS[variant][0]} | " + " | ".join(_cells(runs, columns, [variant], "accuracy")) + " |")
        start = starting_point(variant)
        if start in shown:
            continue
        shown.add(start)
        sharing = [v for v in variants if starting_point(v) == start]
        cells = _cells(runs, columns, sharing, "step0")
        if any(c != "—" for c in cells):
            template = dict(zip(start[::2], start[1::2], strict=True)).get("--template") if len(start) > 1 else None
            head = "label-word head" + SPECIAL_STARTS.get(next(iter(start), ""), TEMPLATE_NAMES.get(template, ""))
            lines.append(f"|   {head} at step 0, before training | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cells(runs: list[dict], columns: list[tuple[str, int]], variants: list[str], key: str) -> list[str]:
    """Mean ± std of `key` per column over seeds, each seed once (variants sharing a step 0 score it alike)."""
    cells = []
    for dataset, rows in columns:
        by_seed: dict[int, float] = {}
        for r in runs:
            if (r["dataset"], r["rows"]) == (dataset, rows) and r["variant"] in variants and r[key] is not None:
                by_seed.setdefault(r["seed"], r[key])
        cells.append(mean_std(list(by_seed.values())))
    return cells


def main(argv: list[str]) -> None:
    options = parser(__name__, __doc__)
    options.add_argument("--datasets", nargs="+", default=["sst2"])
    options.add_argument("--rows", nargs="+", type=int, default=[300])
    options.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    options.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
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
                    flags += ["--max-eval-samples", str(args.eval_rows), "--seed", str(seed)]
                    flags += variant_flags(variant, dataset)
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
