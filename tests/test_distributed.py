"""Two processes (torchrun, gloo on CPU) train to the same model as one process with the same global batch;
so does one process whose micro-batch is halved after an out-of-memory error (simulated on CPU by a
micro-batch runner that fails)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import toy_rows, write_jsonl

pytestmark = pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not installed",
)
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
FSDP_CONFIG = Path(__file__).parents[1] / "configs" / "accelerate" / "fsdp.yaml"
# Dropout masks are drawn per process, so the equivalence is checked without LoRA dropout.
ARGS = [  # a random head: the step-0 score of a label-word head would make the best step a near tie
    "--head-init",
    "random",
    "--model",
    "tiny-random",
    "--precision",
    "fp32",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--lr",
    "3e-3",
    "--lora-dropout",
    "0",
    "--checkpoint-every",
    "3",
    "--min-steps",  # the steps and checkpoints compared are the epochs'
    "0",
    "--keep-checkpoints",
    "--quiet",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    write_jsonl(folder / "train.jsonl", toy_rows(40, 1))
    write_jsonl(folder / "validation.jsonl", toy_rows(13, 2))  # not a multiple of the world size
    return folder


def train(
    data: Path, out: Path, processes: int, env: dict | None = None, fsdp: bool = False
) -> subprocess.CompletedProcess:
    cli = ["-m", "lsllama.cli", "train", "--data", str(data), "--output", str(out), *ARGS]
    if fsdp:  # the shipped config, as users launch it; LSLLAMA_FSDP_ON_CPU keeps accelerate from dropping FSDP on CPU
        config = ["--config_file", str(FSDP_CONFIG), "--num_processes", str(processes), "--main_process_port", "0"]
        cmd = [ACCELERATE, "launch", *config, *cli]
        env = {"LSLLAMA_FSDP_ON_CPU": "1", **(env or {})}
    elif processes == 1:
        cmd = [sys.executable, *cli]
    else:
        cmd = [TORCHRUN, "--standalone", "--nproc_per_node", str(processes), *cli]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    proc = train(data, out, 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def assert_same_model(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:  # summation order differs between one and two processes: float tolerance only
        torch.testing.assert_close(wa[name], wb[name], atol=2e-5, rtol=1e-4, msg=name)
    ra, rb = json.loads((a / "results.json").read_text()), json.loads((b / "results.json").read_text())
    assert ra["validation"]["accuracy"] == rb["validation"]["accuracy"]
    assert ra["validation"]["n"] == rb["validation"]["n"] == 13  # every validation row counted once


def test_two_processes_match_one_process(data, single, tmp_path):
    out = tmp_path / "run"
    proc = train(data, out, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_model(single, out)


def test_two_processes_resume_after_a_crash_mid_checkpoint(data, single, tmp_path):
    out = tmp_path / "run"
    crashed = train(data, out, 2, env={"LSLLAMA_FAILPOINT": "checkpoint-write-6"})
    assert crashed.returncode != 0
    assert (out / "checkpoints").is_dir() and not (out / "results.json").exists()
    resumed = train(data, out, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_model(single, out)


def test_fsdp_shards_the_model_and_matches_one_process(data, single, tmp_path):
    """torch's FSDP 2 over 2 gloo processes: weights and checkpoints are gathered into full tensors."""
    out = tmp_path / "run"
    proc = train(data, out, 2, fsdp=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["distributed"] == {"processes": 2, "mode": "FSDP"}
    assert_same_model(single, out)
    last = sorted((out / "checkpoints").iterdir())[-1]
    a, b = (
        load_file(str(last / "weights.safetensors")),
        load_file(str(single / "checkpoints" / last.name / "weights.safetensors")),
    )
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)  # full tensors, not one shard
    moments = [torch.load(r / "checkpoints" / last.name / "optimizer.pt", weights_only=True) for r in (out, single)]
    for name, kept in moments[1]["optimizer"]["state"].items():
        torch.testing.assert_close(
            moments[0]["optimizer"]["state"][name]["exp_avg"], kept["exp_avg"], atol=1e-6, rtol=1e-4
        )


def test_fsdp_resumes_after_a_crash_mid_checkpoint(data, single, tmp_path):
    out = tmp_path / "run"
    crashed = train(data, out, 2, env={"LSLLAMA_FAILPOINT": "checkpoint-write-6"}, fsdp=True)
    assert crashed.returncode != 0
    assert (out / "checkpoints").is_dir() and not (out / "results.json").exists()
    resumed = train(data, out, 2, fsdp=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_model(single, out)


def out_of_memory_above(limit: int):
    """A micro-batch runner that fails like CUDA does for micro-batches of more than `limit` examples."""
    from lsllama.training import loop

    real = loop.run_micro_batch

    def run(trainer, items, weight, n_targets):
        if len(items) > limit:
            raise torch.cuda.OutOfMemoryError(f"simulated: micro-batch {len(items)} > {limit}")
        return real(trainer, items, weight, n_targets)

    return run


def in_process_config(data: Path):
    """The CLI runs' settings (ARGS), for runs in this process."""
    from lsllama import build_config

    return build_config(
        task="sequence",
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32", "lora_dropout": 0.0, "head_init": "random"},
            "data": {"data": str(data)},
            "train": {
                "epochs": 2,
                "min_steps": 0,
                "batch_size": 8,
                "learning_rate": 3e-3,
                "checkpoint_every": 3,
                "keep_checkpoints_after": True,
            },
        },
    )


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_global_batch(data, single, tmp_path, monkeypatch, capsys):
    from lsllama.training import loop

    out = tmp_path / "run"
    monkeypatch.setattr(loop, "run_micro_batch", out_of_memory_above(2))
    loop.train_run(in_process_config(data), out, progress=False)
    said = capsys.readouterr().out
    assert "micro-batch 8 -> 4" in said and "micro-batch 4 -> 2" in said, said[-2000:]
    assert_same_model(single, out)  # same global batch of 8, now in 4 micro-batches of 2
    last = sorted((out / "checkpoints").iterdir())[-1]  # a resumed run goes on with 4, not 1 and 2 more errors
    assert json.loads((last / "trainer_state.json").read_text())["micro_batches"] == 4


def test_out_of_memory_at_micro_batch_one_stops_with_a_clear_error(data, tmp_path, monkeypatch):
    from lsllama.errors import TrainingError
    from lsllama.training import loop

    out = tmp_path / "run"
    monkeypatch.setattr(loop, "run_micro_batch", out_of_memory_above(0))
    with pytest.raises(TrainingError, match=r"^CUDA out of memory with a micro-batch of 1"):
        loop.train_run(in_process_config(data), out, progress=False)
    assert not (out / "results.json").exists()
