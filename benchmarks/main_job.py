"""Time the README's main job from a cold model cache and record its validation accuracy.

    python benchmarks/main_job.py

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
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchmarks.hardware import machine  # noqa: E402

COMMAND = ["train", "--data", "sst2", "--max-train-samples", "2000", "--quiet"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LSLLAMA_CACHE": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "lsllama.cli", *COMMAND, "--output", str(Path(tmp) / "run")]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
        results = json.loads((Path(tmp) / "run" / "results.json").read_text())
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = {
        "command": "lsllama " + " ".join(a for a in COMMAND if a != "--quiet") + " --output runs/sst2",
        "wall_seconds_cold_cache": seconds,
        "validation_accuracy": metrics["accuracy"],
        "validation_macro_f1": metrics["macro_f1"],
        "train_step_seconds": results["throughput"]["seconds"],
        "machine": machine(),
        "date": date.today().isoformat(),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "main_job.json").write_text(json.dumps(summary, indent=2))
    (HERE / "results" / "main_job.md").write_text(
        f"`python benchmarks/main_job.py` ({summary['machine']}, {summary['date']}) runs `{summary['command']}` "
        f"from an empty model cache: validation accuracy **{summary['validation_accuracy']:.3f}** (macro-F1 "
        f"{summary['validation_macro_f1']:.3f}, 872 SST-2 validation sentences) in {seconds / 60:.1f} minutes "
        f"wall time, of which {summary['train_step_seconds'] / 60:.1f} minutes are optimizer steps.\n"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
