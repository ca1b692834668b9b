"""Benchmark scripts that need hardware we lack in CI still run, on tiny configurations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_on_a_tiny_config_on_cpu():
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--tiny", "--steps", "1", "--batches", "2x8", "4x16"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["batch"] for r in summary["rows"]] == [2, 4]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in summary["rows"])
