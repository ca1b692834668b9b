"""Training and inference speed of lsllama against the official LS-LLaMA recipe, side by side.

    python -m benchmarks speed [--quick]

One command, same SST-2 rows, same model (the default SmolLM2-135M), three recipes: the official one,
lsllama's defaults, and lsllama with the official recipe's adapter (see `WORKERS`). Each runs in a child
process of this one so that its peak RSS is its own; the bf16 matmul rate that the useful FLOP/s are
compared with is measured in this run too. Useful FLOPs count real (non-pad) tokens only:
4 x non-embedding parameters per token for LoRA training (forward, backward through activations,
no weight gradients for frozen weights: ~2x + ~2x), 2 x for inference. Writes
benchmarks/results/speed[_quick].json and .md (benchmarks/record.py).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import record
from benchmarks.hardware import bf16_matmul_gflops, non_embedding_params

FULL = {"rows": 2000, "epochs": 1.0}
QUICK = {"rows": 600, "epochs": 1.0}
MEMORY_RULE = 1.5
"""lsllama's peak RSS may be at most this multiple of the official recipe's, in the same run."""
WORKERS = ("official", "lsllama", "lsllama_adapter")
"""The official recipe; lsllama's defaults, as a user gets them (LoRA on every linear layer); and
lsllama with the official recipe's adapter (LoRA r 12 on q,v, dropout 0.1): the same adaptation, so
that ratio measures the engineering alone."""


def load_sst2(rows: int) -> tuple[list[str], list[int], list[str], list[int], list[str]]:
    from lsllama.config import DataConfig
    from lsllama.data.dataset import load_split, resolve_labels

    cfg = DataConfig(data="sst2", max_train_samples=rows)
    labels = resolve_labels(cfg, "sequence")
    train = load_split(cfg, "train", "sequence", labels, rows)
    val = load_split(cfg, "validation", "sequence", labels, None)
    return (
        [e.text for e in train],
        [e.label for e in train],
        [e.text for e in val],
        [e.label for e in val],
        labels.names,
    )


def worker_official(rows: int, epochs: float, workdir: Path) -> dict:
    from benchmarks.official_recipe import run_official

    train_x, train_y, val_x, val_y, names = load_sst2(rows)
    result = run_official("smollm2-135m", train_x, train_y, val_x, val_y, len(names), workdir / "official", epochs)
    return result.__dict__


def worker_lsllama(rows: int, epochs: float, workdir: Path, overrides: dict) -> dict:
    from lsllama import Classifier, build_config
    from lsllama.heap import tune_process_heap

    tune_process_heap()  # what `lsllama train` does first: the worker measures the command users run
    # The official recipe's epochs and nothing more: the step floor for small sets (train.min_steps) would
    # train lsllama on more batches than the recipe it is compared with.
    train = {"epochs": epochs, "min_steps": 0, "tensorboard": False}
    layers = {"data": {"data": "sst2", "max_train_samples": rows}, "train": train}
    for section, values in overrides.items():
        layers.setdefault(section, {}).update(values)
    cfg = build_config(overrides=layers)
    clf = Classifier.train(cfg, workdir, progress=True)  # returns the run loaded for inference
    results = json.loads((workdir / "results.json").read_text())
    train_x, _, _, _, _ = load_sst2(rows)
    clf.predict_proba(train_x[:64])  # warm-up (allocator, kernels), as Trainer's first batches are too
    start = time.perf_counter()
    clf.predict_proba(train_x)
    eval_seconds = time.perf_counter() - start
    tokens = sum(
        len(ids) for ids in clf.tokenizer(train_x, truncation=True, max_length=cfg.data.max_length)["input_ids"]
    )
    throughput = results["throughput"]
    return {
        "train_seconds": throughput["seconds"],
        "train_samples": throughput["samples"],
        "train_real_tokens": throughput["real_tokens"],
        "eval_seconds": eval_seconds,
        "eval_samples": len(train_x),
        "eval_real_tokens": tokens,
        "accuracy": results["validation"]["accuracy"],
        "head_init": cfg.model.head_init,  # what the README's accuracy row says the head started from
    }


def run_worker(name: str, rows: int, epochs: float, workdir: Path) -> dict:
    """Run one recipe in a child process; returns its measurements and its own peak RSS."""
    out = workdir / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmarks", "speed", "--worker", name, "--rows", str(rows), "--epochs", str(epochs)]
    cmd += ["--workdir", str(workdir)]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    subprocess.run(cmd, check=True, env=env, cwd=record.BENCHMARKS.parent)
    return json.loads(out.read_text())


def main(argv: list[str]) -> None:
    parser = record.parser(__name__, __doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rows (<= 6 minutes here)")
    parser.add_argument("--worker", choices=WORKERS, help="(internal) run one recipe in this process")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--workdir", type=Path, help="(internal) where a worker leaves its measurements")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.rows, args.epochs, args.workdir)
        return
    run = record.Record.start(__name__, argv)
    setting = QUICK if args.quick else FULL
    rows, epochs = args.rows or setting["rows"], args.epochs or setting["epochs"]
    peak = bf16_matmul_gflops()
    params = non_embedding_params()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: run_worker(name, rows, epochs, Path(tmp)) for name in WORKERS}
    summary = {**compare(runs, params, peak), "rows": rows, "epochs": epochs, "runs": runs}
    run.write("speed_quick" if args.quick else "speed", summary, markdown(summary, run), args.out)


def worker(name: str, rows: int, epochs: float, workdir: Path) -> None:
    """One recipe, in this (child) process: its measurements and peak RSS into WORKDIR/NAME.json."""
    if name == "official":
        measured = worker_official(rows, epochs, workdir)
    else:
        from benchmarks.official_recipe import ADAPTER

        overrides = {"model": ADAPTER} if name == "lsllama_adapter" else {}
        measured = worker_lsllama(rows, epochs, workdir / name, overrides)
    measured["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (workdir / f"{name}.json").write_text(json.dumps(measured))


def compare(runs: dict[str, dict], params: int, peak: float) -> dict:
    """Rates per recipe (added to `runs`), and lsllama's against the official recipe's."""
    for m in runs.values():
        m["train_samples_per_s"] = m["train_samples"] / m["train_seconds"]
        m["train_real_tokens_per_s"] = m["train_real_tokens"] / m["train_seconds"]
        m["eval_samples_per_s"] = m["eval_samples"] / m["eval_seconds"]
        m["eval_real_tokens_per_s"] = m["eval_real_tokens"] / m["eval_seconds"]
        m["train_peak_fraction"] = 4 * params * m["train_real_tokens_per_s"] / (peak * 1e9)
        m["eval_peak_fraction"] = 2 * params * m["eval_real_tokens_per_s"] / (peak * 1e9)
    official, ours, same = runs["official"], runs["lsllama"], runs["lsllama_adapter"]
    return {
        "train_speedup": ours["train_samples_per_s"] / official["train_samples_per_s"],
        "eval_speedup": ours["eval_samples_per_s"] / official["eval_samples_per_s"],
        "train_peak_fraction": ours["train_peak_fraction"],
        "eval_peak_fraction": ours["eval_peak_fraction"],
        "lsllama_accuracy": ours["accuracy"],
        "official_accuracy": official["accuracy"],
        "lsllama_peak_rss_mb": ours["peak_rss_mb"],
        "official_peak_rss_mb": official["peak_rss_mb"],
        "peak_rss_ratio": ours["peak_rss_mb"] / official["peak_rss_mb"],
        "same_adapter_train_speedup": same["train_samples_per_s"] / official["train_samples_per_s"],
        "same_adapter_eval_speedup": same["eval_samples_per_s"] / official["eval_samples_per_s"],
        "same_adapter_train_peak_fraction": same["train_peak_fraction"],
        "same_adapter_accuracy": same["accuracy"],
        "same_adapter_peak_rss_mb": same["peak_rss_mb"],
        "official_padding_fraction": 1 - official["train_real_tokens"] / official["train_computed_tokens"],
        "bf16_matmul_gflops": peak,
        "non_embedding_params": params,
    }


def markdown(s: dict, run: record.Record) -> str:
    runs = s["runs"]
    measures = [
        ("train samples/s", "train_samples_per_s", True),
        ("train real tokens/s", "train_real_tokens_per_s", False),
        ("inference samples/s", "eval_samples_per_s", True),
        ("inference real tokens/s", "eval_real_tokens_per_s", False),
        ("train useful FLOP/s / bf16 peak", "train_peak_fraction", False),
        ("inference useful FLOP/s / bf16 peak", "eval_peak_fraction", False),
        ("validation accuracy", "accuracy", False),
        ("peak RSS (MB)", "peak_rss_mb", True),
    ]
    lines = [
        run.header(
            f"SST-2, {s['rows']} training rows, {s['epochs']:g} epoch; bf16 matmul peak measured "
            f"{s['bf16_matmul_gflops']:.0f} GFLOP/s; official recipe padding: "
            f"{100 * s['official_padding_fraction']:.0f}% of computed tokens."
        ),
        "",
        "| measure | official recipe | lsllama (defaults) | ratio | lsllama, official's adapter | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, key, ratio in measures:
        cells = [f"{runs['official'][key]:.3g}"]
        for recipe in WORKERS[1:]:
            value = runs[recipe][key]
            cells += [f"{value:.3g}", f"{value / runs['official'][key]:.2f}x" if ratio else ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    verdict = "within" if s["peak_rss_ratio"] <= MEMORY_RULE else "above"
    lines += [
        "",
        f"lsllama's peak RSS is {s['peak_rss_ratio']:.2f}x the official recipe's: {verdict} the {MEMORY_RULE}x rule.",
    ]
    return "\n".join(lines) + "\n"
