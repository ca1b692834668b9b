"""Training killed with SIGKILL at many points resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import toy_rows, write_jsonl

STEPS_LOGGED_BEFORE_KILL = [2, 7, 13]  # mid-epoch, around an evaluation, late in the run
MID_WRITE = ["checkpoint-write-4", "checkpoint-write-12"]  # killed inside a checkpoint write


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume")
    write_jsonl(folder / "train.jsonl", toy_rows(40, 1))
    write_jsonl(folder / "validation.jsonl", toy_rows(12, 2))
    return folder


def command(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lsllama.cli",
        "train",
        "--data",
        str(data),
        "--output",
        str(out),
        "--model",
        "tiny-random",
        "--precision",
        "fp32",
        "--epochs",
        "3",
        "--min-steps",  # the kill points are placed in the epochs' 21 steps
        "0",
        "--batch-size",
        "6",
        "--lr",
        "3e-3",
        "--checkpoint-every",
        "2",
        "--lora-dropout",
        "0.2",
        "--quiet",
        *extra,
    ]


def digest(out: Path) -> tuple[str, list]:
    """The weights' hash and the logged events, less their wall-clock time (the one field a resume may change)."""
    weights = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for event in events:
        assert event.pop("wall_time") > 0
    return weights, events


def logged_steps(out: Path) -> int:
    log = out / "metrics.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def run_killed_when(cmd: list[str], out: Path, condition, env=None) -> None:
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if condition(out):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(command(data, out), check=True, capture_output=True)
    return digest(out)


def test_resuming_after_sigkill_at_many_points_gives_identical_weights_and_metrics(data, reference, tmp_path):
    out = tmp_path / "run"
    cmd = command(data, out)
    for point in MID_WRITE:
        run_killed_when(cmd, out, lambda _: False, env={"LSLLAMA_FAILPOINT": point})
    for steps in STEPS_LOGGED_BEFORE_KILL:
        run_killed_when(cmd, out, lambda o, s=steps: logged_steps(o) >= s)
    assert not (out / "results.json").exists()
    subprocess.run(cmd, check=True, capture_output=True)
    assert not list((out / "checkpoints").glob(".step-*")), "half-written checkpoint folders were not cleaned up"
    weights, events = digest(out)
    ref_weights, ref_events = reference
    assert events == ref_events
    assert weights == ref_weights


def test_explicit_resume_without_checkpoint_is_a_usage_error(data, tmp_path):
    proc = subprocess.run(command(data, tmp_path / "fresh", "--resume"), capture_output=True, text=True)
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(data, tmp_path):
    out = tmp_path / "nan"
    cmd = command(data, out)
    cmd[cmd.index("--lr") + 1] = "1e9"
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: loss became") and "Traceback" not in proc.stderr
