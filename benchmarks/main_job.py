"""Time the README's main job from a cold model cache and record its validation accuracy.

    python -m benchmarks main_job

Runs exactly `lsllama train --data sst2 --output <tmp> --max-train-samples 2000` (the README's first
command, after set-up) with an empty $LSLLAMA_CACHE, so the GGUF -> safetensors conversion of the
default model is included in the wall time. Writes benchmarks/results/main_job.json and .md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import record

COMMAND = ["train", "--data", "sst2", "--max-train-samples", "2000", "--quiet"]


def main(argv: list[str]) -> None:
    args = record.parser(__name__, __doc__).parse_args(argv)
    started = record.Record.start(__name__, argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LSLLAMA_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "lsllama.cli", *COMMAND, "--output", str(Path(tmp) / "run")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
        results = json.loads((Path(tmp) / "run" / "results.json").read_text())
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = {
        "job": "lsllama " + " ".join(a for a in COMMAND if a != "--quiet") + " --output runs/sst2",
        "wall_seconds_cold_cache": seconds,
        "validation_accuracy": metrics["accuracy"],
        "validation_macro_f1": metrics["macro_f1"],
        "train_step_seconds": results["throughput"]["seconds"],
    }
    text = started.header(
        f"runs `{summary['job']}` from an empty model cache: validation accuracy "
        f"**{summary['validation_accuracy']:.3f}** (macro-F1 {summary['validation_macro_f1']:.3f}, 872 SST-2 "
        f"validation sentences) in {seconds / 60:.1f} minutes wall time, of which "
        f"{summary['train_step_seconds'] / 60:.1f} minutes are optimizer steps.\n"
    )
    started.write("main_job", summary, text, args.out)
