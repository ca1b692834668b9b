"""Does one setting change accuracy? Train the same rows with each value, over several seeds, side by side.

    python -m benchmarks ablation --setting model.lora_dropout --values 0 0.05 \
        [--data sst2 conll2003] [--seeds 1 2 3] [--train-rows 1000] [--eval-rows 500]
    python -m benchmarks ablation --setting lsllama.modeling.model.CPU_MATH_ATTENTION_MAX_LENGTH --values 0 256

The setting is a key of the run config (`section.key`) or one of the package's tuned constants
(`lsllama.module.NAME`, set in this process for the run; the code reads it at call time). Every run
is `lsllama train` with the task's defaults and that one setting changed, on the first
`--train-rows` training rows, selected and scored on the first `--eval-rows` validation rows (the
task's default metric: accuracy, span F1). A default is changed on the strength of a difference
larger than the spread between seeds, not of one run. Finished runs are cached under
benchmarks/cache/ablation/ (an interrupted ablation resumes). Writes
benchmarks/results/ablation_<setting>.json and .md.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import re
import statistics
from pathlib import Path

import yaml

from benchmarks import record
from benchmarks.paper_plan import DATASETS
from lsllama import build_config
from lsllama.training.loop import train_run

CONFIG_SECTIONS = ("model", "data", "train")


def is_constant(setting: str) -> bool:
    return setting.startswith("lsllama.")


def constant_owner(setting: str) -> tuple[object, str]:
    """The module that holds a tuned constant, and its name; a clear error if there is none."""
    module_name, name = setting.rsplit(".", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise SystemExit(f"--setting {setting}: no module {module_name}") from None
    if not name.isupper() or not hasattr(module, name):
        raise SystemExit(f"--setting {setting}: {module_name} has no constant {name}")
    return module, name


@contextlib.contextmanager
def constant_set_to(setting: str, value: object):
    module, name = constant_owner(setting)
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


def run(
    model: str, dataset: str, setting: str, value: object, seed: int, train_rows: int, eval_rows: int, cache: Path
) -> dict:
    owner, key = setting.rsplit(".", 1)
    overrides: dict[str, dict] = {
        "model": {"name": model},
        "data": {"data": dataset, "max_train_samples": train_rows, "max_eval_samples": eval_rows},
        "train": {"seed": seed, "tensorboard": False},
    }
    identity: dict = {}
    changed: contextlib.AbstractContextManager = contextlib.nullcontext()
    if is_constant(setting):
        identity = {"constant": {setting: value}}  # not in the config: the cache key must carry it
        changed = constant_set_to(setting, value)
    else:
        overrides[owner][key] = value
    cfg = build_config(task=DATASETS[dataset].task, overrides=overrides).resolved()
    digest = hashlib.sha256(json.dumps({**cfg.to_dict(), **identity}, sort_keys=True).encode()).hexdigest()[:12]
    with changed:
        results = train_run(cfg, cache / f"{dataset}-{key}-{value}-seed{seed}-{digest}", progress=True).results
    metric = results["metric_for_best"]
    return {
        "dataset": dataset,
        "value": value,
        "seed": seed,
        "metric": metric,
        "score": results["validation"][metric],
        "train_samples_per_s": results["throughput"]["samples_per_second"],
    }


def markdown(summary: dict, started: record.Record) -> str:
    lines = [
        started.header(
            f"{summary['model']}; {summary['train_rows']} training rows, {summary['eval_rows']} validation rows, "
            f"seeds {', '.join(map(str, summary['seeds']))} (mean ± standard deviation over seeds)."
        ),
        "",
        f"| data | {summary['setting']} | validation metric | score | training samples/s |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for row in summary["table"]:
        # One seed has no spread to give: "± 0.000" would claim a measured one.
        score = f"{row['mean']:.3f}" + (f" ± {row['sd']:.3f}" if len(summary["seeds"]) > 1 else " (1 seed)")
        lines.append(f"| {row['dataset']} | {row['value']} | {row['metric']} | {score} | {row['samples_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def scalar(text: str) -> object:
    """A YAML scalar, except that `1e-3` is the number (YAML 1.1 reads it as a string without a dot)."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value):
        return float(value)
    return value


def table(runs: list[dict], datasets: list[str], values: list) -> list[dict]:
    """Mean and spread over seeds, one row per data set and value."""
    rows = []
    for dataset in datasets:
        for value in values:
            group = [r for r in runs if r["dataset"] == dataset and r["value"] == value]
            scores = [r["score"] for r in group]
            rows.append(
                {
                    "dataset": dataset,
                    "value": value,
                    "metric": group[0]["metric"],
                    "mean": statistics.mean(scores),
                    "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                    "samples_per_s": statistics.mean(r["train_samples_per_s"] for r in group),
                }
            )
    return rows


def main(argv: list[str]) -> None:
    parser = record.parser(__name__, __doc__)
    parser.add_argument(
        "--setting",
        required=True,
        help="section.key of the run config (model.lora_dropout) or a package constant (lsllama.module.NAME)",
    )
    parser.add_argument("--values", nargs="+", required=True, help="values to compare (YAML scalars)")
    parser.add_argument("--data", nargs="+", default=["sst2", "conll2003"], choices=sorted(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--model", default="smollm2-135m", help="lsllama model name, hub id or folder")
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--eval-rows", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=record.CACHE / "ablation", help="finished runs")
    args = parser.parse_args(argv)
    if is_constant(args.setting):
        constant_owner(args.setting)  # fail before any run
    elif "." not in args.setting or args.setting.split(".")[0] not in CONFIG_SECTIONS:
        parser.error(f"--setting must be model.KEY, data.KEY, train.KEY or lsllama.module.NAME, got {args.setting!r}")
    started = record.Record.start(__name__, argv)
    values = [scalar(v) for v in args.values]
    runs = [
        run(args.model, dataset, args.setting, value, seed, args.train_rows, args.eval_rows, args.cache)
        for dataset in args.data
        for value in values
        for seed in args.seeds
    ]
    summary = {
        "setting": args.setting,
        "model": args.model,
        "table": table(runs, args.data, values),
        "runs": runs,
        "seeds": args.seeds,
        "train_rows": args.train_rows,
        "eval_rows": args.eval_rows,
    }
    stem = "ablation_" + args.setting.rsplit(".", 1)[1].lower()
    started.write(stem, summary, markdown(summary, started), args.out)
