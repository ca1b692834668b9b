"""Benchmark scripts that need hardware we lack in CI still run, on tiny configurations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.profile_step import SWEEP

from .conftest import DATA_ROOT, REPO


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


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_profile_sweep_times_every_setting_on_the_same_rows(tmp_path: Path):
    out = tmp_path / "sweep.md"
    command = [sys.executable, "benchmarks/profile_step.py", "--sweep", "--model", "tiny-random", "--rows", "48"]
    proc = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[1:]]
    assert [r[:3] for r in rows] == [[s.name, str(s.batch_size), str(s.pad_multiple)] for s in SWEEP]
    assert rows[0][3] == "16, 0.05, all-linear" and rows[-1][3] == "12, 0.1, q_proj,v_proj"
    assert all(float(r[4]) > 0 and float(r[7]) > 0 for r in rows)
    padding = {m: {float(r[6]) for r in rows if r[1] == "16" and r[2] == m} for m in ("1", "8")}
    assert len(padding["1"]) == len(padding["8"]) == 1  # the same batches in every batch-16 setting
    assert 1.0 <= padding["1"].pop() < padding["8"].pop()  # the default pads to each batch's longest row
