"""Learning curve: accuracy against training rows for label supervision, the paper's recipe, SFT and TF-IDF.

    python -m benchmarks learning_curve [--datasets sst2 ag_news] [--rows 100 300 1000 2000] [--seeds 0]
                                        [--methods tfidf ls ls-paper sft] [--eval-rows 300] [--model NAME]
                                        [--cache DIR] [--report-only]

It shows where label supervision starts to pay. At each (data set, N training rows, seed), every method
sees the same N rows (lsllama's fixed sample, the one `--max-train-samples N` takes: the same rows for
every seed and method; AG News has no validation split, so its validation rows are the ones lsllama
holds out of the training file and the N rows come from the rest) and is scored on the same
--eval-rows validation rows (accuracy):

  ls        `lsllama train` with the package defaults (label-word head, `labels` template; whatever step
            floor is the default), and its step-0 point: the label-word head before any update, the
            zero-shot classifier restricted to the label words
  ls-paper  the paper's head and schedule: `--head-init random --min-steps 0 --template none` (one epoch)
  sft       instruction SFT of the same model (benchmarks/baselines/generative.py): the ls run's LoRA and
            optimiser settings and exactly its number of optimizer steps (the ls run is made first)
  tfidf     TF-IDF + logistic regression (benchmarks/baselines/classic.py, C = 1: the only held-out
            rows are the reported ones); deterministic on the fixed rows, so fitted once, at the first
            seed asked for (as the paper suite runs its deterministic rows once)

The LS runs keep their best evaluation (lsllama's default), chosen on the same validation rows they are
scored on; SFT and TF-IDF have no such selection. That flatters LS (most at the smallest sizes, where
the step floor makes many epochs, each evaluated), so the table also gives ls's last weights, scored on
the same rows with no selection: the like-for-like line against SFT. Each finished run stays in --cache
(LS: its run folder; SFT, TF-IDF: one JSON), so an interrupted benchmark resumes; runs go seed by seed,
cheapest first (TF-IDF, then the smallest sizes), so a partial run already gives a curve, and
`--report-only` renders what is cached. The cache does not notice a change of lsllama's defaults: after
one, use a new --cache (the record lists the head and step floor that each LS run used). Writes
results/learning_curve.json, .md (mean ± std over seeds, with the number of seeds per cell) and .png.

Size: 2 data sets × 4 sizes = 8 cells a seed; × 3 model runs (ls, ls-paper, sft) = 24 trainings, plus 8
TF-IDF fits (seconds each, the first seed only). At batch 16 an epoch is 7 / 19 / 63 / 125 steps for
100 / 300 / 1,000 / 2,000 rows; with the 100-step floor ls and sft make 100 / 100 / 100 / 125 steps,
ls-paper one epoch. On the 2-core development CPU one seed of both data sets took about two hours
(2026-12-05: AG News two thirds of it, SFT half; at 100 rows an ls run evaluates every second of its 15
epochs), so the default is one seed, the budget the project sets for this command; `--seeds 0 1 2` adds
two more (about four hours more, resumable across sessions: the finished seed is not run again). The
record's second table gives the measured wall time of every run type.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.baselines import LabelledTexts
from benchmarks.baselines.classic import tfidf_logreg
from benchmarks.baselines.generative import PromptTask, instruction_sft
from benchmarks.paper_plan import DATASETS
from benchmarks.record import CACHE, RESULTS, Record, parser
from benchmarks.small_data import mean_std, run_once
from lsllama.api import default_device
from lsllama.config import RunConfig, TrainConfig, build_config
from lsllama.data.dataset import Example, resolve_labels, training_data
from lsllama.run_folder import CONFIG, atomic_write_text

METHODS = {
    "tfidf": "TF-IDF + logistic regression",
    "ls": "LS, lsllama defaults (label-word head, template)",
    "ls-paper": "LS, the paper's recipe (random head, no template, 1 epoch)",
    "sft": "instruction SFT (same rows, LoRA and steps as ls)",
}
STEP0 = "ls at step 0 (zero-shot through the head)"
LAST = "ls, its last weights (no selection on the scored rows)"
STYLES = {
    "step0": {"linestyle": "--", "marker": "x", "color": "gray"},
    "last": {"linestyle": ":", "marker": ".", "color": "black"},
}
"""How the chart draws the two extra LS lines (the methods' own lines: solid, with markers)."""
LS_FLAGS = {"ls": [], "ls-paper": ["--head-init", "random", "--min-steps", "0", "--template", "none"]}
"""`lsllama train` flags of each LS method beyond data, rows, model and seed."""
WALL_TIME = "learning_curve_seconds.json"
"""Written into an LS run folder by this benchmark: the run's wall time (process start, loading, training,
evaluations), which results.json does not hold (its throughput times the training loop only)."""
MODEL_RUNS = ("ls", "ls-paper", "sft")
"""After TF-IDF, in this order at each size: sft reads the ls run's step count."""
SEQUENCE_DATASETS = [name for name, spec in DATASETS.items() if spec.task == "sequence"]
"""The data sets whose SFT prompt benchmarks/paper_plan.py words (`DatasetSpec.prompt_task`)."""


@dataclass(frozen=True)
class Run:
    dataset: str
    rows: int
    seed: int
    method: str


@dataclass(frozen=True)
class Setup:
    model: str
    """The name the user gave (cache folders and the record show it)."""
    model_path: str
    """What every method loads: the name, or for `tiny-random` one saved causal LM (the same weights for all)."""
    eval_rows: int
    cache: Path

    def path(self, run: Run) -> Path:
        """The run's folder (LS) or JSON file (SFT, TF-IDF)."""
        stem = f"{run.dataset}-n{run.rows}-e{self.eval_rows}-{run.method}-s{run.seed}"
        folder = self.cache / self.model.strip("/").replace("/", "--")
        return folder / stem if run.method in LS_FLAGS else folder / f"{stem}.json"


def plan(datasets: list[str], sizes: list[int], seeds: list[int], methods: list[str]) -> list[Run]:
    """Seed by seed, so that an interrupted benchmark has every cell once; within a seed TF-IDF first
    (seconds; the first seed only, since it draws nothing at random), then sizes from the smallest, each
    with ls before the sft run that reads its steps."""
    runs = []
    for seed in seeds:
        if "tfidf" in methods and seed == seeds[0]:
            runs += [Run(d, n, seed, "tfidf") for n in sorted(sizes) for d in datasets]
        for n in sorted(sizes):
            runs += [Run(d, n, seed, m) for d in datasets for m in MODEL_RUNS if m in methods]
    return runs


def is_cached(run: Run, setup: Setup) -> bool:
    path = setup.path(run)
    return (path / "results.json").is_file() if run.method in LS_FLAGS else path.is_file()


def ls_flags(run: Run, setup: Setup) -> list[str]:
    flags = ["--data", run.dataset, "--model", setup.model_path, "--max-train-samples", str(run.rows)]
    return [*flags, "--max-eval-samples", str(setup.eval_rows), "--seed", str(run.seed), *LS_FLAGS[run.method]]


def ls_result(run: Run, setup: Setup) -> dict[str, Any]:
    """small_data's reading of the run folder (training it first when unfinished), with the head and step
    floor it ran with (the defaults of the lsllama that made it) and the run's wall time, kept beside it."""
    folder, trained = setup.path(run), not is_cached(run, setup)
    start = time.perf_counter()
    try:
        result = run_once(folder, ls_flags(run, setup))
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"learning_curve: `lsllama train` failed for {folder}:\n{error.stderr[-3000:]}") from None
    if trained:
        atomic_write_text(folder / WALL_TIME, json.dumps({"seconds": time.perf_counter() - start}) + "\n")
    wall = json.loads((folder / WALL_TIME).read_text())["seconds"] if (folder / WALL_TIME).is_file() else None
    cfg = RunConfig.load(folder / CONFIG)
    last = result["curve"][-1][1]  # the evaluation at the run's end: the weights SFT is scored with
    return {**result, "last": last, "seconds": wall, "head_init": cfg.model.head_init, "min_steps": cfg.train.min_steps}


def sft_recipe(ls_recipe: TrainConfig, steps: int) -> TrainConfig:
    """The ls run's optimiser settings for exactly its `steps` optimizer steps: no epochs of its own and the
    step count as the floor (instruction_sft plans its steps as lsllama does: `planned_steps`). Epochs
    worked out from the steps would round to one step more where an epoch does not divide them."""
    return dataclasses.replace(ls_recipe, epochs=0.0, min_steps=steps)


def labelled_texts(cfg: RunConfig, rows: int, eval_rows: int) -> tuple[LabelledTexts, LabelledTexts, list[str]]:
    """The training and validation rows the ls run of these settings trained and was scored on, read with
    lsllama's own data code (the fixed sample, and for data without a validation split its held-out rows)."""
    data = dataclasses.replace(cfg.data, max_train_samples=rows, max_eval_samples=eval_rows)
    labels = resolve_labels(data, cfg.task)
    split = training_data(data, cfg.task, labels)

    def texts(examples: list[Example]) -> LabelledTexts:
        return LabelledTexts([e.text or "" for e in examples], [int(e.label) for e in examples])

    return texts(split.train), texts(split.validation), labels.names


def sft_result(run: Run, setup: Setup) -> dict[str, Any]:
    """Instruction SFT with the LoRA and optimiser settings of the ls run of the same cell, for its steps."""
    ls_run = dataclasses.replace(run, method="ls")
    steps = ls_result(ls_run, setup)["steps"]
    cfg = RunConfig.load(setup.path(ls_run) / CONFIG)
    train, evaluation, labels = labelled_texts(cfg, run.rows, setup.eval_rows)
    recipe = sft_recipe(cfg.train, steps)
    task = PromptTask(DATASETS[run.dataset].prompt_task, labels, cfg.data.max_length)
    start = time.perf_counter()
    metrics = instruction_sft(setup.model_path, task, train, evaluation, cfg.model, recipe, run.seed, default_device())
    seconds = time.perf_counter() - start
    return {"accuracy": metrics["accuracy"], "steps": metrics["train_steps"], "ls_steps": steps,
            "unparseable": metrics["unparseable"], "seconds": seconds}  # fmt: skip


def tfidf_result(run: Run, setup: Setup) -> dict[str, Any]:
    """TF-IDF on the rows the ls run of the cell reads (lsllama's data defaults for the data set)."""
    cfg = build_config(task="sequence", overrides={"data": {"data": run.dataset}}).resolved()
    train, evaluation, labels = labelled_texts(cfg, run.rows, setup.eval_rows)
    start = time.perf_counter()
    result = tfidf_logreg(train, {"validation": evaluation}, labels, None, run.seed)
    return {"accuracy": result["splits"]["validation"]["accuracy"], "seconds": time.perf_counter() - start}


def result(run: Run, setup: Setup) -> dict[str, Any]:
    """The run's figures: read from the cache, else computed (and, for SFT and TF-IDF, cached whole)."""
    if run.method in LS_FLAGS:
        return ls_result(run, setup)
    path = setup.path(run)
    if not path.is_file():
        figures = sft_result(run, setup) if run.method == "sft" else tfidf_result(run, setup)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(figures, indent=2) + "\n")
    return json.loads(path.read_text())


def collect(runs: list[Run], setup: Setup, report_only: bool) -> list[dict[str, Any]]:
    """Every run's figures in plan order (with --report-only: the cached ones), printed as they come."""
    cached = sum(is_cached(run, setup) for run in runs)
    print(f"learning_curve: {len(runs)} runs, {cached} cached, {0 if report_only else len(runs) - cached} to run")
    found = []
    for run in runs:
        if report_only and not is_cached(run, setup):
            continue
        figures = {**dataclasses.asdict(run), **result(run, setup)}
        print(json.dumps(figures), flush=True)
        found.append(figures)
    return found


def values(found: list[dict], method: str, dataset: str, rows: int, key: str = "accuracy") -> list[float]:
    cell = [r.get(key) for r in found if (r["method"], r["dataset"], r["rows"]) == (method, dataset, rows)]
    return [v for v in cell if v is not None]


def lines(methods: list[str]) -> list[tuple[str, str, str]]:
    """(label, method, figure) of each line of the table and the chart; the step-0 point after ls."""
    result = []
    for method in methods:
        result.append((METHODS[method], method, "accuracy"))
        if method == "ls":
            result += [(STEP0, "ls", "step0"), (LAST, "ls", "last")]
    return result


def cells(found: list[dict], datasets: list[str], sizes: list[int], methods: list[str]) -> list[dict[str, Any]]:
    """The table's figures for the record: mean, std and number of seeds per line and column."""
    result = []
    for label, method, key in lines(methods):
        for dataset in datasets:
            for rows in sorted(sizes):
                found_values = values(found, method, dataset, rows, key)
                result.append({
                    "line": label, "method": method, "figure": key, "dataset": dataset, "rows": rows,
                    "mean": statistics.mean(found_values) if found_values else None,
                    "std": statistics.stdev(found_values) if len(found_values) > 1 else None,
                    "seeds": len(found_values),
                })  # fmt: skip
    return result


def header(columns: list[tuple[str, int]]) -> list[str]:
    names = " | ".join(f"{d}, {n} rows" for d, n in columns)
    return [f"| method | {names} |", "| --- |" + " ---: |" * len(columns)]


def table(found: list[dict], datasets: list[str], sizes: list[int], methods: list[str]) -> str:
    """Accuracy per method (and the step-0 point) and column, then what each run cost."""
    columns = [(d, n) for d in datasets for n in sorted(sizes)]
    rows = header(columns)
    for label, method, key in lines(methods):
        rows.append(f"| {label} | " + " | ".join(mean_std(values(found, method, d, n, key)) for d, n in columns) + " |")
    rows += ["", "Optimizer steps and wall seconds per run (mean over the runs above):", "", *header(columns)]
    for method in methods:
        cells = []
        for d, n in columns:
            steps, seconds = values(found, method, d, n, "steps"), values(found, method, d, n, "seconds")
            parts = [f"{statistics.mean(steps):.0f} steps"] if steps else []
            parts += [f"{statistics.mean(seconds):.0f} s"] if seconds else []
            cells.append(", ".join(parts) or "—")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def chart(found: list[dict], datasets: list[str], sizes: list[int], methods: list[str], title: str, path: Path) -> None:
    """One panel per data set: accuracy against training rows on a log scale, one line per method with
    the standard deviation over seeds as error bars, the step-0 point dashed (as paper_report draws)."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for label, method, key in lines(methods):
            points = [(n, values(found, method, dataset, n, key)) for n in sorted(sizes)]
            points = [(n, v) for n, v in points if v]
            if not points:
                continue
            means = [statistics.mean(v) for _, v in points]
            stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in points]
            style = STYLES.get(key, {"marker": "o"})
            ax.errorbar([n for n, _ in points], means, yerr=stds, capsize=3, label=label, **style)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted(sizes), [str(n) for n in sorted(sizes)])
        ax.set_ylim(0, 1)
        ax.set_xlabel("training rows")
        ax.set_ylabel("validation accuracy")
        ax.set_title(DATASETS[dataset].title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=8, wrap=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def setup_from(args: argparse.Namespace) -> Setup:
    cache = args.cache.resolve()
    if args.model != "tiny-random":
        return Setup(args.model, args.model, args.eval_rows, cache)
    from benchmarks.paper import model_folder  # the paper suite's runner: imported only where it is needed

    return Setup(args.model, model_folder(args.model, cache), args.eval_rows, cache)


def main(argv: list[str]) -> None:
    options = parser(__name__, __doc__)
    options.add_argument("--datasets", nargs="+", choices=SEQUENCE_DATASETS, default=["sst2", "ag_news"])
    options.add_argument("--rows", nargs="+", type=int, default=[100, 300, 1000, 2000])
    options.add_argument("--seeds", nargs="+", type=int, default=[0])
    options.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    options.add_argument("--eval-rows", type=int, default=300)
    options.add_argument("--model", default="smollm2-135m")
    options.add_argument("--cache", type=Path, default=CACHE / "learning_curve", help="finished runs (resumable)")
    options.add_argument("--report-only", action="store_true", help="render what is cached, train nothing")
    args = options.parse_args(argv)
    if min(args.rows) < 1 or args.eval_rows < 1:
        options.error("--rows and --eval-rows must be positive")
    record = Record.start(__name__, argv)
    methods = [m for m in METHODS if m in args.methods]
    runs = plan(args.datasets, args.rows, args.seeds, methods)
    found = collect(runs, setup_from(args), args.report_only)
    details = (
        f"model {args.model}; validation accuracy on {args.eval_rows} fixed validation rows, mean ± std over seeds "
        f"{args.seeds} (a cell says how many it has; TF-IDF, deterministic, is fitted once); {len(found)} of "
        f"{len(runs)} planned runs. LS head and step floor used: "
        f"{sorted({(r['head_init'], r['min_steps']) for r in found if 'head_init' in r})}"
    )
    markdown = record.header(details) + "\n\n" + table(found, args.datasets, args.rows, methods) + "\n"
    figures = {
        "cells": cells(found, args.datasets, args.rows, methods),
        "runs": found,
        "planned": len(runs),
        "eval_rows": args.eval_rows,
        "model": args.model,
    }
    out = args.out or RESULTS
    record.write("learning_curve", figures, markdown, out)
    chart(found, args.datasets, args.rows, methods, record.header(f"model {args.model}"), out / "learning_curve.png")
