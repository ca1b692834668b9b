"""The run folder: everything needed to rebuild a trained model, and nothing written half-way.

config.yaml         the fully resolved RunConfig
labels.json         label names in id order
tokenizer/          the tokenizer used in training (so reloading tokenizes identically)
model.safetensors   LoRA + head weights of the best validation checkpoint (safetensors only)
metrics.jsonl       one JSON event per line: train steps and evaluations
results.json        written last: marks the run finished, holds the best validation metrics
checkpoints/        resumable state (see training/checkpoint.py)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsllama.config import RunConfig
from lsllama.errors import RunError

CONFIG = "config.yaml"
LABELS = "labels.json"
TOKENIZER = "tokenizer"
MODEL_WEIGHTS = "model.safetensors"
LOG = "metrics.jsonl"
RESULTS = "results.json"
CHECKPOINTS = "checkpoints"
EXPORTED_RUN = "lsllama"
"""Inside an `lsllama export` folder (a transformers model at its top level): the run it was made from."""


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (/proc/self/status), else by
    the set-and-restore that is the only portable way to read it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Temporary file in the same folder, then rename: readers see the old file or the new one. The file gets
    the permissions a plain `open` would give it (0666 less the umask; mkstemp's own 0600 would keep a run
    or an export from being shared)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_folder(target: Path) -> Path:
    """A fresh temporary sibling folder; `commit_folder` renames it into place once complete. It gets the
    permissions `mkdir` would give it (0777 less the umask), not mkdtemp's 0700."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o777 & ~current_umask())
    return tmp


def commit_folder(tmp: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@dataclass
class RunFolder:
    path: Path

    @classmethod
    def locate(cls, path: Path) -> RunFolder:
        """The run at `path`, or the run an `lsllama export` folder keeps, so both load the same way."""
        inner = path / EXPORTED_RUN
        return cls(inner if not (path / CONFIG).exists() and (inner / CONFIG).is_file() else path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def finished(self) -> bool:
        return self.file(RESULTS).is_file()

    def results(self) -> dict[str, Any]:
        return json.loads(self.file(RESULTS).read_text())

    def check_complete(self) -> None:
        """A run is loadable only with all of its files: say which one is missing."""
        if not self.path.is_dir():
            raise RunError(f"run folder not found: {self.path}")
        for name in (CONFIG, LABELS, TOKENIZER, MODEL_WEIGHTS):
            if not self.file(name).exists():
                raise RunError(f"{self.path}: not a complete lsllama run ({name} is missing)")

    def config(self) -> RunConfig:
        try:
            return RunConfig.load(self.file(CONFIG))
        except Exception as exc:
            raise RunError(f"{self.file(CONFIG)}: unreadable run config ({exc})") from None

    def labels(self) -> list[str]:
        try:
            names = json.loads(self.file(LABELS).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{self.file(LABELS)}: unreadable label map ({exc})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RunError(f"{self.file(LABELS)}: expected a JSON list of label names")
        return names

    def log(self, event: dict[str, Any]) -> None:
        with self.file(LOG).open("a") as handle:
            handle.write(json.dumps(event) + "\n")
