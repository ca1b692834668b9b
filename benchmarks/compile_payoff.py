"""Does compiling pay on a run of `COMPILE_AFTER_STEPS` steps, compilation included?

The evidence behind training's default (lsllama/modeling/compilation.py: a single-process CPU run of that
many steps compiles).

    python -m benchmarks compile_payoff [--steps N] [--model NAME] [--out DIR]

Runs `lsllama train` on the default model and N x 16 SST-2 rows (one epoch, N optimizer steps) twice,
`--no-compile` and `--compile`, each in its own process; the compiled run starts from an empty
inductor cache, as a user's first run does. Compares the seconds of the optimizer steps (compilation
included, loading and evaluation not) and the validation accuracy (on 400 sentences, to keep the run
short). Each finished run is cached (benchmarks/cache/compile_payoff/, or DIR/cache), so an interrupted
benchmark resumes; writes benchmarks/results/compile_payoff.json and .md (or both under --out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import record
from lsllama.modeling.compilation import COMPILE_AFTER_STEPS

BATCH = 16  # the default batch size: N steps are N x 16 rows
EVAL_ROWS = 400


def run(model: str, mode: str, steps: int, cache: Path) -> dict:
    """One `lsllama train` run (mode: compile or no-compile), cached by model and step count."""
    cached = cache / f"{model.replace('/', '--')}-{steps}-{mode}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "inductor"), "TRANSFORMERS_VERBOSITY": "error"}
        cmd = [sys.executable, "-m", "lsllama.cli", "train", "--model", model, "--data", "sst2", f"--{mode}"]
        cmd += ["--max-train-samples", str(steps * BATCH), "--max-eval-samples", str(EVAL_ROWS), "--min-steps", "0"]
        cmd += ["--output", str(Path(tmp) / "run")]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        results = json.loads((Path(tmp) / "run" / "results.json").read_text())
    summary = {
        "steps": results["global_step"],
        "samples": results["throughput"]["samples"],
        "seconds": results["throughput"]["seconds"],
        "compiled": results["throughput"]["compiled"],
        "accuracy": json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"],
    }
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(summary))
    return summary


def main(argv: list[str]) -> None:
    parser = record.parser(__name__, __doc__)
    parser.add_argument("--steps", type=int, default=COMPILE_AFTER_STEPS)
    parser.add_argument("--model", default="smollm2-135m", help="lsllama model name, hub id or folder")
    args = parser.parse_args(argv)
    started = record.Record.start(__name__, argv)
    cache = args.out / "cache" if args.out else record.CACHE / "compile_payoff"
    eager, compiled = (run(args.model, mode, args.steps, cache) for mode in ("no-compile", "compile"))
    if eager["compiled"] or not compiled["compiled"]:
        raise SystemExit("the runs did not compile as asked")
    summary = {
        "steps": args.steps,
        "model": args.model,
        "eager": eager,
        "compiled": compiled,
        "speedup_including_compilation": eager["seconds"] / compiled["seconds"],
    }
    table = (
        started.header(
            f"{args.model}; SST-2, {args.steps} optimizer steps of 16 rows, one process; the compiled run starts "
            "from an empty inductor cache.\n\n"
        )
        + "| run | seconds of optimizer steps (compilation included) | samples/s | validation accuracy (400 rows) |\n"
        "| --- | ---: | ---: | ---: |\n"
        + "".join(
            f"| {name} | {r['seconds']:.0f} | {r['samples'] / r['seconds']:.1f} | {r['accuracy']:.3f} |\n"
            for name, r in (("eager (`--no-compile`)", eager), ("compiled (`--compile`)", compiled))
        )
        + f"\nCompiling made this run {summary['speedup_including_compilation']:.2f}x as fast, compilation included.\n"
    )
    started.write("compile_payoff", summary, table, args.out)
