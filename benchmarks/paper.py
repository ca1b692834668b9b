"""Reproduce the paper's findings at small scale: LS variants against baselines, real data, seeds.

    python benchmarks/paper.py [--quick] [--recipe recorded|defaults] [--model smollm2-135m] [--rows N]
                               [--eval-rows N] [--seeds N] [--datasets NAME ...] [--methods NAME ...]
                               [--learning-rate LR] [--sft-learning-rate LR]
                               [--generic-prompt] [--ls-task-words]
                               [--results-dir DIR] [--cache-dir DIR] [--dry-run] [--report-only]
                               [--report-name NAME] [--calibrate]

Every method sees the same fixed samples of SST-2, SST-5, AG News, Twitter Financial News and
CoNLL-2003 ($LSLLAMA_DATA): LS variants through lsllama's API, zero-shot prompting and instruction SFT
of the same model, TF-IDF + logistic regression (per-word majority tag for NER) and the official
recipe. Writes one JSON per run (results/paper/runs/), a Markdown table whose findings are computed
from the numbers (results/paper.md) and a bar chart (results/paper.png). Runs are cached under a hash
of everything that determines them, so an interrupted suite resumes where it stopped and re-running a
finished one only re-renders the report. README: "Reproducing the paper at small scale".
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares
from transformers import AutoConfig, AutoModelForCausalLM

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.baselines.classic import C_GRID, majority_tag, tfidf_logreg  # noqa: E402
from benchmarks.baselines.generative import (  # noqa: E402
    GENERIC_PROMPT,
    PROMPT,
    PromptTask,
    instruction_sft,
    max_new_tokens,
    prompt_ids,
    zero_shot,
)
from benchmarks.hardware import machine  # noqa: E402
from benchmarks.official_recipe import run_official  # noqa: E402
from benchmarks.paper_plan import (  # noqa: E402
    DATASETS,
    FULL,
    HALF,
    METHODS,
    QUICK,
    Budget,
    PreparedData,
    Run,
    build_plan,
    prepare_data,
    sentences,
    task_question,
    texts,
)
from benchmarks.paper_report import Report, write_report  # noqa: E402
from lsllama import Classifier, build_config  # noqa: E402
from lsllama.api import default_device  # noqa: E402
from lsllama.config import TASKS, RunConfig, TrainConfig  # noqa: E402
from lsllama.data.batching import padded_length  # noqa: E402
from lsllama.evaluation.report import read_events  # noqa: E402
from lsllama.modeling.loading import load_tokenizer, model_source, tiny_random_config  # noqa: E402
from lsllama.modeling.masks import text_config  # noqa: E402
from lsllama.run_folder import LOG, RESULTS, atomic_folder, atomic_write_text, commit_folder  # noqa: E402

RUN_FORMAT = 1
"""Part of every run's cache key: bump it when a change to this code changes what a run computes."""
RECORDED_MODEL = {"lora_dropout": 0.05, "head_init": "random"}
"""Model settings whose package default changed after the suite ran (LoRA dropout 0.05 -> 0, on the
evidence of benchmarks/results/ablation_lora_dropout.md), pinned so that the recorded runs remain
the suite's runs. Drop an entry to rerun the suite with the new default."""
RECORDED_TRAIN = {"min_steps": 0}
"""Train settings whose package default changed after the suite ran (no step floor -> at least 100 steps,
benchmarks/results/small_data.md), pinned like `RECORDED_MODEL`."""
RECORDED_DATA = {"template": "none"}
"""Data settings whose package default changed after the suite ran (no template -> `auto`, the `labels`
question, benchmarks/results/labels_300/small_data.md), pinned like `RECORDED_MODEL`."""
RECORDED_TOKEN_TRAIN = {"learning_rate": 1e-3, "batch_size": 16}
"""The token task's own train settings whose default changed after the suite ran (lr 1e-3 -> the sequence
task's 5e-4, benchmarks/results/ablation_learning_rate.md; batch 16 -> 8,
benchmarks/results/ablation_batch_size.md), pinned for its runs only."""
RECIPES = {
    "recorded": {
        "model": RECORDED_MODEL,
        "data": RECORDED_DATA,
        "train": RECORDED_TRAIN,
        "token": {"train": RECORDED_TOKEN_TRAIN},
    },
    "defaults": {},
}
"""`--recipe`: the settings the recorded suite ran with (its runs stay cached), or today's package defaults
(label-word head, `labels` template, at least 100 steps for LS and, the step floor, for SFT: their runs get
their own keys)."""

RATES = {
    "classic": 0.105,
    "decode_tokens": 0.0199,
    "infer_samples": 0.00534,
    "infer_tokens": 0.000418,
    "load": 6.79e-05,
    "official_infer_samples": 0.192,
    "official_train_samples": 3.05e-09,
    "train_samples": 0.0298,
    "train_tokens": 0.0044,
}
"""Seconds per unit of a run's `workload` for SmolLM2-135M on the 2-core development CPU (bf16 autocast).
Fitted by `paper.py --calibrate` to the 68 runs of the 300-row suite of 2026-11-29, which had the
machine to itself (97 min; the earlier rates, fitted to the 600-row suite, estimated it at 83). Rates
that cannot be told apart in those runs (model loading; the official recipe's training and inference,
whose row counts move together) fold into their neighbours. Other models or
machines: run part of the suite and calibrate again."""
OFFICIAL_SPEED_ROWS = 8
"""run_official times inference on extra texts; a few keep that cost out of the budget."""


@dataclass
class Context:
    model: str
    """The name the user gave (what the report and cache keys show)."""
    model_path: str
    """What lsllama and from_pretrained load: the name, or a saved folder for `tiny-random`."""
    cache: Path
    data: dict[str, PreparedData]
    device: torch.device = field(default_factory=default_device)
    pinned: dict[str, dict[str, Any]] = field(default_factory=lambda: RECIPES["recorded"])
    """Settings that override the package defaults for every run (`RECIPES`)."""
    sft_learning_rate: float | None = None
    """SFT's own learning rate (`--sft-learning-rate`), chosen once for all data sets; None: LS's."""
    generic_prompt: bool = False
    """`--generic-prompt`: zero-shot and SFT are told the labels but not the task's words."""
    ls_task_words: bool = False
    """`--ls-task-words`: LS on the sentence sets reads `task_question`, the task's words SFT is told."""


def model_folder(model: str, cache: Path) -> str:
    """`tiny-random` saved once as a causal LM folder, so that every method, including the official
    recipe and the generative baselines that load by path, gets the same tiny weights."""
    if model != "tiny-random":
        return model
    folder = cache / "tiny-random-lm"
    if not (folder / "config.json").is_file():
        tokenizer = load_tokenizer("tiny-random")
        with torch.random.fork_rng():
            torch.manual_seed(0)
            lm = AutoModelForCausalLM.from_config(tiny_random_config(len(tokenizer), tokenizer.pad_token_id))
        tmp = atomic_folder(folder)
        lm.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        commit_folder(tmp, folder)
    return str(folder)


def half_of_layers(model_path: str) -> int:
    return text_config(AutoConfig.from_pretrained(model_source(model_path))).num_hidden_layers // 2


def sequence_defaults(ctx: Context) -> RunConfig:
    """The sequence task's defaults as the suite runs them (what SFT, zero-shot and the workload read)."""
    pinned = {section: dict(values) for section, values in ctx.pinned.items() if section not in TASKS}
    pinned["train"] = {**pinned.get("train", {}), **ctx.pinned.get("sequence", {}).get("train", {})}
    return build_config(task="sequence", overrides=pinned).resolved()


def pinned_settings(recipe: str, learning_rate: float | None) -> dict[str, dict[str, Any]]:
    """`--recipe`'s settings, and `--learning-rate` for the sentence sets' LS (and SFT) runs only."""
    pinned = dict(RECIPES[recipe])
    if learning_rate is not None:
        pinned["sequence"] = {"train": {"learning_rate": learning_rate}}
    return pinned


def prompt_task(run: Run, ctx: Context) -> PromptTask:
    """What the zero-shot and SFT prompt says for this run's data set: its task's words (or none, with
    `--generic-prompt`), its labels, and LS's text length."""
    data, description = ctx.data[run.dataset], DATASETS[run.dataset].prompt_task
    return PromptTask("" if ctx.generic_prompt else description, data.labels, sequence_defaults(ctx).data.max_length)


def sft_train(ctx: Context) -> TrainConfig:
    """What SFT trains with: LS's optimiser settings and steps, with its own learning rate where one is set."""
    train = sequence_defaults(ctx).train
    return train if ctx.sft_learning_rate is None else replace(train, learning_rate=ctx.sft_learning_rate)


def ls_config(run: Run, ctx: Context) -> RunConfig:
    """lsllama's own defaults for the task (what `lsllama train` would use, but for the settings pinned in
    `ctx.pinned`), with the variant's masking and pooling, the prepared data and the seed."""
    task = DATASETS[run.dataset].task
    model = {**ctx.pinned.get("model", {}), **METHODS[run.method].ls, "name": ctx.model_path}
    if model.get("unmask_from_layer") == HALF:
        model["unmask_from_layer"] = half_of_layers(ctx.model_path)
    train = {**ctx.pinned.get("train", {}), **ctx.pinned.get(task, {}).get("train", {})}
    data = {**ctx.pinned.get("data", {}), "data": str(ctx.data[run.dataset].folder)}
    if ctx.ls_task_words and task == "sequence":
        data["template"] = task_question(run.dataset)
    overrides = {
        "model": model,
        "data": data,
        "train": {**train, "seed": run.seed, "tensorboard": False},
    }
    return build_config(task=task, overrides=overrides).resolved()


NOT_IN_KEY = ("compile",)
"""Train settings that do not change what a run computes (how fast it gets there), added after records
were made: left out of the cache key, so those records stay theirs."""


ADDED_AT_DEFAULT = {"min_steps": 0, "head_learning_rate": None, "keep_checkpoints_after": False}
"""Train settings added after the records were made: left out of the key while they hold the value that
computes what the records did (`RECORDED_TRAIN` pins `min_steps` there), so that adding a setting does not
rerun the suite."""
ADDED_SETTINGS_AT_RECORDED = {
    "model": {"head_init": "random"},
    "data": {"template": None, "label_descriptions": None, "validation_fraction": 0.1, "question": None},
}
"""LS settings added after the records, left out of the key while they hold what the records computed
(`RECORDED_MODEL` pins the random head they used); `--recipe defaults` runs LS with the label-word head."""
SCORED_ON_VALIDATION = "last weights"
"""What an LS run reports where the reported split is the validation split, which also chooses its best
weights (SST-2, Twitter): the last weights' evaluation (SFT and TF-IDF choose nothing on it either).
Records of one evaluation per run, whose best weights are their last, were re-keyed when this was added."""
SFT_IGNORES = ("head_init",)
"""LS model settings that instruction SFT never reads (it generates with the pretrained output layer)."""


RENAMED_IN_KEY = {"micro_batches": "gradient_accumulation"}
"""Train settings renamed after the records were made: keyed by the name the records have."""


def _train_settings(train: dict[str, Any]) -> dict[str, Any]:
    return {
        RENAMED_IN_KEY.get(key, key): value
        for key, value in train.items()
        if key not in NOT_IN_KEY and not (key in ADDED_AT_DEFAULT and value == ADDED_AT_DEFAULT[key])
    }


def recipe(run: Run, ctx: Context) -> dict[str, Any]:
    """Everything besides data, model and seed that determines the run's result (part of its cache key)."""
    kind = METHODS[run.method].kind
    if kind == "ls":
        cfg = ls_config(run, ctx).to_dict()
        cfg["model"]["name"], cfg["data"]["data"] = ctx.model, run.dataset
        cfg["train"] = _train_settings(cfg["train"])
        if ctx.data[run.dataset].reported == "validation":
            cfg["scored"] = SCORED_ON_VALIDATION
        for section, added in ADDED_SETTINGS_AT_RECORDED.items():
            for key, recorded in added.items():
                if cfg[section].get(key, recorded) == recorded:
                    cfg[section].pop(key, None)
        return cfg
    sequence = sequence_defaults(ctx)
    if kind in ("zero_shot", "sft"):
        task = prompt_task(run, ctx)
        prompt = {"prompt": PROMPT if task.description else GENERIC_PROMPT, "task": task.description}
        prompt["max_length"] = task.max_length
        if kind == "zero_shot":
            return {**prompt, "precision": sequence.model.precision}
        lora = {key: value for key, value in asdict(sequence.model).items() if key not in SFT_IGNORES}
        return {**prompt, "lora": lora, "train": _train_settings(asdict(sft_train(ctx)))}
    if kind == "official":
        return {"epochs": sequence.train.epochs}
    if kind == "tfidf":
        return {"C_grid": list(C_GRID)}
    return {}


def run_file(run: Run, ctx: Context, runs_dir: Path) -> tuple[Path, dict[str, Any]]:
    key = {
        "format": RUN_FORMAT,
        "dataset": run.dataset,
        "data": ctx.data[run.dataset].fingerprint,
        "method": run.method,
        "seed": run.seed,
        "model": ctx.model,
        "recipe": recipe(run, ctx),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return runs_dir / f"{run.dataset}__{run.method}__seed{run.seed}__{digest}.json", key


def execute(run: Run, ctx: Context, workdir: Path) -> dict[str, Any]:
    """Train and score one run: its metrics per split, and anything worth keeping with them."""
    data, kind = ctx.data[run.dataset], METHODS[run.method].kind
    sequence = sequence_defaults(ctx)
    if kind == "ls":
        clf = Classifier.train(ls_config(run, ctx), workdir, progress=True)
        results = json.loads((workdir / RESULTS).read_text())
        splits = {"validation": results["validation"]}
        if data.reported == "test":
            splits["test"] = clf.evaluate(split="test")
        else:  # its best evaluation was chosen on the reported rows: score the last weights, as SFT's are
            splits["validation"] = [e for e in read_events(workdir / LOG) if e["event"] == "eval"][-1]
        return {"splits": splits, "best_step": results["best_step"], "global_step": results["global_step"]}
    if kind == "tfidf":
        # Choosing C on the split that is also reported would inflate the score: keep the default there.
        select_on = "validation" if data.reported == "test" else None
        held_out = {split: texts(data, split) for split in data.split_names()}
        return tfidf_logreg(texts(data, "train"), held_out, data.labels, select_on, run.seed)
    if kind == "majority_tag":
        return majority_tag(sentences(data, "train"), {split: sentences(data, split) for split in data.split_names()})
    reported = texts(data, data.reported)
    if kind == "official":
        train = texts(data, "train")
        result = run_official(
            ctx.model_path, train.texts, train.labels, reported.texts, reported.labels, len(data.labels), workdir,
            epochs=sequence.train.epochs, seed=run.seed, speed_texts=reported.texts[:OFFICIAL_SPEED_ROWS],
        )  # fmt: skip
        return {"splits": {data.reported: {"accuracy": result.accuracy, "n": len(reported.texts)}}}
    task = prompt_task(run, ctx)
    if kind == "zero_shot":
        metrics = zero_shot(ctx.model_path, task, reported, sequence.model.precision, ctx.device)
    else:
        train = texts(data, "train")
        metrics = instruction_sft(
            ctx.model_path, task, train, reported, sequence.model, sft_train(ctx), run.seed, ctx.device
        )
    return {"splits": {data.reported: metrics}}


def workload(run: Run, ctx: Context, tokenizer: Any) -> dict[str, float]:
    """What a run computes, in the units of `RATES`: samples and (padded) tokens trained, inferred and
    decoded, from its row counts and mean input lengths."""
    data, kind = ctx.data[run.dataset], METHODS[run.method].kind
    if kind in ("tfidf", "majority_tag"):
        return {"classic": 1}
    sequence = sequence_defaults(ctx)
    train_rows, reported_rows = data.examples("train"), data.examples(data.reported)
    n_train, n_reported = len(train_rows), len(reported_rows)
    if kind == "ls":
        cfg = ls_config(run, ctx)
        if data.task == "token":
            lengths = [len(tokenizer(" ".join(e.words or []))["input_ids"]) for e in train_rows]
        else:
            lengths = [len(tokenizer(e.text or "")["input_ids"]) for e in train_rows]
        tokens = mean(padded_length(min(n, cfg.data.max_length)) for n in lengths)
        trained = trained_rows(cfg.train, n_train)
        step0 = cfg.model.head_init == "label_names" and data.task == "sequence"  # scored before training
        evaluations = math.ceil(trained / n_train) + int(step0)
        inferred = evaluations * len(data.examples("validation"))
        inferred += n_reported if data.reported == "test" else 0
        return {
            "load": 1,
            "train_samples": trained,
            "train_tokens": trained * tokens,
            "infer_samples": inferred,
            "infer_tokens": inferred * tokens,
        }
    if kind == "official":
        return {
            "load": 1,
            "official_train_samples": sequence.train.epochs * n_train,
            "official_infer_samples": n_reported + OFFICIAL_SPEED_ROWS,
        }
    task = prompt_task(run, ctx)
    new_tokens = max_new_tokens(tokenizer, data.labels)

    def prompt(rows: list) -> float:
        return mean(len(prompt_ids(tokenizer, task, e.text or "")) for e in rows)

    units = {
        "load": 1,
        "infer_samples": n_reported,
        "infer_tokens": n_reported * prompt(reported_rows),
        "decode_tokens": n_reported * new_tokens,
    }
    if kind == "sft":
        trained = trained_rows(sequence.train, n_train)
        units |= {"train_samples": trained, "train_tokens": trained * (prompt(train_rows) + new_tokens)}
    return units


def trained_rows(train: TrainConfig, n_train: int) -> float:
    """Rows a run trains on: its epochs, or more where the step floor (`min_steps`) reads the set again."""
    return max(train.epochs * n_train, train.min_steps * train.batch_size)


def estimate_seconds(units: dict[str, float], rates: dict[str, float] = RATES) -> float:
    return sum(rates[name] * count for name, count in units.items())


def calibrate(workloads: dict[Run, dict[str, float]], seconds: dict[Run, float]) -> dict[str, float]:
    """Rates that best explain the measured seconds: a non-negative fit of relative errors, robust to
    outliers (a run that shared the CPU), on the fastest seed of each data set and method (sharing the
    CPU only ever slows a run down)."""
    fastest: dict[tuple[str, str], Run] = {}
    for run in seconds:
        key = (run.dataset, run.method)
        if key not in fastest or seconds[run] < seconds[fastest[key]]:
            fastest[key] = run
    names = sorted({name for run in fastest.values() for name in workloads[run]})
    runs = list(fastest.values())
    units = np.array([[workloads[run].get(name, 0.0) for name in names] for run in runs])
    measured = np.array([max(seconds[run], 0.1) for run in runs])
    start = np.array([RATES[name] for name in names])

    def relative_error(rates: np.ndarray) -> np.ndarray:
        return (units @ rates - measured) / measured

    fit = least_squares(relative_error, start, bounds=(0, np.inf), loss="soft_l1", f_scale=0.1)
    return dict(zip(names, (float(r) for r in fit.x), strict=True))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"the <= 15 minute preset: {QUICK}")
    parser.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default="recorded",
        help="recorded: the settings the committed runs used (they stay cached); defaults: today's package "
        "defaults for LS, and SFT trained for as many steps (default: recorded)",
    )
    parser.add_argument("--model", default="smollm2-135m", help="lsllama model name, hub id or folder")
    parser.add_argument(
        "--learning-rate",
        type=float,
        help="LS's learning rate on the sentence sets (and SFT's, unless --sft-learning-rate), one for all data "
        "sets (default: the recipe's); its runs get their own keys",
    )
    parser.add_argument(
        "--sft-learning-rate",
        type=float,
        help="SFT's learning rate, one for all data sets (default: LS's); its runs get their own keys",
    )
    parser.add_argument(
        "--generic-prompt",
        action="store_true",
        help="zero-shot and SFT prompts name the labels but not the task (what LS's default question says); "
        "their runs get their own keys",
    )
    parser.add_argument(
        "--ls-task-words",
        action="store_true",
        help="LS on the sentence sets reads the labels question after the task's words that SFT's prompt has "
        "(a user's template, not a default); its runs get their own keys",
    )
    parser.add_argument("--rows", type=int, help="training rows per data set (CoNLL: sentences)")
    parser.add_argument("--eval-rows", type=int, help="at most this many rows of each evaluation split")
    parser.add_argument("--seeds", type=int, help="seeds for the main rows (ablations always get one)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        help="run only these methods (default: all); the report shows every finished run of the budget and recipe",
    )
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--cache-dir", type=Path, default=HERE / "cache" / "paper")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time, run nothing")
    parser.add_argument(
        "--report-name",
        help="file name of the report under --results-dir (default: paper, --quick: paper_quick; "
        "--recipe defaults adds _defaults, --learning-rate LR _lrLR, --sft-learning-rate LR _sft_lrLR, "
        "--generic-prompt _generic_prompt, --ls-task-words _ls_task_words)",
    )
    parser.add_argument(
        "--calibrate", action="store_true", help="fit the time estimate's rates to the finished runs, print them"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from the runs finished so far, run nothing"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    preset = QUICK if args.quick else FULL
    budget = Budget(
        rows=args.rows or preset.rows,
        eval_rows=args.eval_rows or preset.eval_rows,
        seeds=args.seeds or preset.seeds,
        datasets=tuple(args.datasets or preset.datasets),
    )
    cache, results_dir = args.cache_dir.resolve(), args.results_dir.resolve()
    runs_dir = results_dir / "paper" / "runs"
    model_path = model_folder(args.model, cache)
    data = {name: prepare_data(name, budget.rows, budget.eval_rows, cache) for name in budget.datasets}
    pinned = pinned_settings(args.recipe, args.learning_rate)
    ctx = Context(
        args.model, model_path, cache, data, pinned=pinned, sft_learning_rate=args.sft_learning_rate,
        generic_prompt=args.generic_prompt, ls_task_words=args.ls_task_words,
    )  # fmt: skip
    tokenizer = load_tokenizer(model_path)
    runs = [run for run in build_plan(budget) if not args.methods or run.method in args.methods]
    plan = [(run, *run_file(run, ctx, runs_dir)) for run in runs]
    workloads = {run: workload(run, ctx, tokenizer) for run, _, _ in plan}
    if args.calibrate:
        measured = {run: json.loads(path.read_text())["seconds"] for run, path, _ in plan if path.is_file()}
        rates = calibrate(workloads, measured)
        print("RATES = " + json.dumps({name: float(f"{rate:.3g}") for name, rate in rates.items()}, indent=4))
        return
    estimates = {run: estimate_seconds(units) for run, units in workloads.items()}
    todo = [] if args.report_only else [(run, path, key) for run, path, key in plan if not path.is_file()]
    cached = sum(path.is_file() for _, path, _ in plan)
    print(
        f"{len(plan)} runs, {cached} cached; estimated {sum(estimates.values()) / 60:.0f} min for "
        f"all, {sum(estimates[run] for run, _, _ in todo) / 60:.0f} min for what is left "
        "(at rates fitted to SmolLM2-135M runs on 2 CPU cores)",
        flush=True,
    )
    for number, (run, path, key) in enumerate(todo, start=1):
        print(
            f"[{number}/{len(todo)}] {run.dataset} {run.method} seed {run.seed} (~{estimates[run]:.0f} s)", flush=True
        )
        if args.dry_run:
            continue
        workdir = cache / "runs" / path.stem
        if METHODS[run.method].kind != "ls":  # an interrupted LS run resumes from its checkpoints
            shutil.rmtree(workdir, ignore_errors=True)
        start = time.perf_counter()
        outcome = execute(run, ctx, workdir)
        seconds = time.perf_counter() - start
        record = {
            "key": key,
            "label": METHODS[run.method].label,
            "reported_split": data[run.dataset].reported,
            "seconds": seconds,
            "estimated_seconds": estimates[run],
            "finished": datetime.now().isoformat(timespec="seconds"),
            **outcome,
        }
        runs_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2))
        shutil.rmtree(workdir, ignore_errors=True)  # the record is the result; weights are not kept
        gc.collect()  # dozens of models are built in this one process: free each before the next
        print(f"    done in {seconds:.0f} s", flush=True)
    if args.dry_run:
        return
    # `--methods` chooses what to run; the report covers every finished run of this budget and recipe (the
    # deterministic rows and the official recipe are shared between recipes), so that a run of a few methods
    # does not replace a report of more. Its rows are the methods with a finished run.
    full = [(run, *run_file(run, ctx, runs_dir)) for run in build_plan(budget)]
    shown = {run.method for run, path, _ in full if path.is_file()}
    reported = [(run, path) for run, path, _ in full if run.method in shown]
    report = Report(
        command=" ".join(["python benchmarks/paper.py", *sys.argv[1:]]),
        machine=machine(),
        day=date.today().isoformat(),
        model=args.model,
        budget=budget,
        data=data,
        records=[json.loads(path.read_text()) for _, path in reported if path.is_file()],
        estimated_seconds=sum(estimate_seconds(workload(run, ctx, tokenizer)) for run, _ in reported),
        planned=len(reported),
        unmask_layer=half_of_layers(model_path),
        methods=tuple(shown),
    )
    name = ("paper_quick" if args.quick else "paper") + ("" if args.recipe == "recorded" else f"_{args.recipe}")
    name += "" if args.learning_rate is None else f"_lr{args.learning_rate:g}"
    name += "" if args.sft_learning_rate is None else f"_sft_lr{args.sft_learning_rate:g}"
    name += "_generic_prompt" if args.generic_prompt else ""
    name += "_ls_task_words" if args.ls_task_words else ""
    print(write_report(results_dir, report, args.report_name or name))


if __name__ == "__main__":
    main()
