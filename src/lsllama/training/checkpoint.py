"""Resumable training state, written atomically.

A checkpoint folder is assembled under a temporary name and renamed into place only when complete,
so a kill at any moment leaves either the previous checkpoint or the new one. Weights are
safetensors; optimizer, scheduler and RNG state are plain tensors and containers, read back with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lsllama.errors import RunError
from lsllama.run import CHECKPOINTS, RunFolder, atomic_folder, commit_folder

STATE = "trainer_state.json"
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.pt"


@dataclass
class TrainerState:
    """Where training is: the next batch to run is `batch_in_epoch` of `epoch`'s batch plan."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False


def failpoint(name: str) -> None:
    """Crash tests set LSLLAMA_FAILPOINT to kill the process at an exact point (e.g. mid-write)."""
    if os.environ.get("LSLLAMA_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run: RunFolder,
    state: TrainerState,
    weights: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
    keep: int,
) -> Path:
    """Write a checkpoint of full tensors (gathered from every process, see `distributed`)."""
    target = run.file(CHECKPOINTS) / f"step-{state.global_step:08d}"
    tmp = atomic_folder(target)
    save_file(weights, str(tmp / WEIGHTS))
    torch.save({"optimizer": optimizer, "scheduler": scheduler, "rng": _rng_state()}, tmp / OPTIMIZER)
    failpoint(f"checkpoint-write-{state.global_step}")
    (tmp / STATE).write_text(json.dumps(asdict(state), indent=2))
    commit_folder(tmp, target)
    for old in list_checkpoints(run)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(run: RunFolder) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders start with a dot and are ignored)."""
    folder = run.file(CHECKPOINTS)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("step-") and (p / STATE).is_file())


def remove_stale_temporaries(run: RunFolder) -> None:
    """Half-written checkpoint folders of a killed run are invisible to `list_checkpoints`; delete them."""
    folder = run.file(CHECKPOINTS)
    if folder.is_dir():
        for tmp in folder.glob(".step-*"):
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Checkpoint:
    state: TrainerState
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]

    def restore_rng(self) -> None:
        _set_rng_state(self.rng)


def load_checkpoint(path: Path, expected: set[str]) -> Checkpoint:
    """Read a checkpoint whose weights must be exactly `expected` (the model's saved names)."""
    readers = {
        STATE: lambda file: TrainerState(**json.loads(file.read_text())),
        WEIGHTS: lambda file: load_file(str(file)),
        OPTIMIZER: lambda file: torch.load(file, map_location="cpu", weights_only=True),
    }
    loaded = {}
    for name, read in readers.items():
        try:
            loaded[name] = read(path / name)
        except Exception as exc:  # json, safetensors and torch each raise their own types for a damaged file
            raise RunError(
                f"{path / name}: corrupt checkpoint ({type(exc).__name__}: {exc}); "
                f"delete {path} to resume from an earlier one"
            ) from None
    weights, extra = loaded[WEIGHTS], loaded[OPTIMIZER]
    if set(weights) != expected:
        raise RunError(
            f"{path / WEIGHTS}: weights do not match the run's config (missing {len(expected - set(weights))}, "
            f"unexpected {len(set(weights) - expected)} tensors)"
        )
    if not (isinstance(extra, dict) and {"optimizer", "scheduler", "rng"} <= set(extra)):
        raise RunError(f"{path / OPTIMIZER}: not an lsllama checkpoint (optimizer, scheduler and rng state expected)")
    return Checkpoint(loaded[STATE], weights, extra["optimizer"], extra["scheduler"], extra["rng"])
