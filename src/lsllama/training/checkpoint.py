"""Resumable training state, written atomically.

A checkpoint folder is assembled under a temporary name and renamed into place only when complete,
so a kill at any moment leaves either the previous checkpoint or the new one. Weights are
safetensors; optimizer, scheduler and RNG state (one per process, so that dropout resumes exactly
under several processes too) are plain tensors and containers, read back with
`torch.load(weights_only=True)`. The run's best weights so far (`model.safetensors`, written at an
evaluation just before the checkpoint) are linked into the checkpoint: a run resumed from it puts them
back, so `model.safetensors` always matches the `best_step` it resumes with, whatever a killed run
wrote after its last checkpoint.
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
from lsllama.run_folder import CHECKPOINTS, RunFolder, atomic_folder, commit_folder

STATE = "trainer_state.json"
CHECKPOINT_WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.pt"
BEST = "best.safetensors"


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
    last_eval_step: int | None = None
    """The step of the last evaluation: a run resumed at it does not evaluate (and log) it again."""
    micro_batches: int | None = None
    """Micro-batches per batch in use (None: the config's); doubled after each out-of-memory error."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainerState:
        """Checkpoints written before the rename call `micro_batches` `gradient_accumulation`."""
        current = dict(raw)
        if "gradient_accumulation" in current:
            current["micro_batches"] = current.pop("gradient_accumulation")
        return cls(**current)


def failpoint(name: str) -> None:
    """Crash tests set LSLLAMA_FAILPOINT to kill the process at an exact point (e.g. mid-write)."""
    if os.environ.get("LSLLAMA_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def rng_state() -> dict[str, Any]:
    """This process's random generators (each process draws its own dropout masks)."""
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
    rng: list[dict[str, Any]],
    best: Path | None = None,
) -> Path:
    """Write a checkpoint of full tensors (gathered from every process, see `distributed`), every
    process's RNG state (`rng`, in rank order) and the best weights file `best` if there is one."""
    target = run.file(CHECKPOINTS) / f"step-{state.global_step:08d}"
    tmp = atomic_folder(target)
    save_file(weights, str(tmp / CHECKPOINT_WEIGHTS))
    torch.save({"optimizer": optimizer, "scheduler": scheduler, "rng": rng}, tmp / OPTIMIZER)
    if best is not None and best.is_file():
        _link_or_copy(best, tmp / BEST)
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


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link costs no space (the weights file is replaced, never rewritten in place); a copy where
    the file system has no links."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@dataclass
class Checkpoint:
    path: Path
    state: TrainerState
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict[str, Any]] | dict[str, Any]

    def restore_rng(self, rank: int) -> None:
        """This process's generators as they were; a checkpoint of another process count (or of an older
        lsllama, which kept rank 0's only) gives each process the state of rank `rank` modulo its count."""
        _set_rng_state(self.rng[rank % len(self.rng)] if isinstance(self.rng, list) else self.rng)

    def restore_best_weights(self, target: Path) -> None:
        """Make `target` (the run's model.safetensors) the best weights this checkpoint knew, or remove it
        if none was kept yet: what a killed run wrote after the checkpoint is not part of this run."""
        best = self.path / BEST
        if not best.is_file():
            target.unlink(missing_ok=True)
            return
        tmp = target.with_name(f".{target.name}.restore")
        tmp.unlink(missing_ok=True)
        _link_or_copy(best, tmp)
        tmp.replace(target)


def load_checkpoint(path: Path, expected: set[str]) -> Checkpoint:
    """Read a checkpoint whose weights must be exactly `expected` (the model's saved names)."""
    readers = {
        STATE: lambda file: TrainerState.from_json(json.loads(file.read_text())),
        CHECKPOINT_WEIGHTS: lambda file: load_file(str(file)),
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
    weights, extra = loaded[CHECKPOINT_WEIGHTS], loaded[OPTIMIZER]
    if set(weights) != expected:
        raise RunError(
            f"{path / CHECKPOINT_WEIGHTS}: weights do not match the run's config "
            f"(missing {len(expected - set(weights))}, unexpected {len(set(weights) - expected)} tensors)"
        )
    if not (isinstance(extra, dict) and {"optimizer", "scheduler", "rng"} <= set(extra)):
        raise RunError(f"{path / OPTIMIZER}: not an lsllama checkpoint (optimizer, scheduler and rng state expected)")
    return Checkpoint(path, loaded[STATE], weights, extra["optimizer"], extra["scheduler"], extra["rng"])
