"""How every benchmark but the paper suite takes its options and leaves its figures.

Each benchmark module has `main(argv)`, run by `python -m benchmarks NAME [options]`, and writes one
record: NAME.json (the figures, with the command that made them, the machine and the date) and
NAME.md (the same as a Markdown table whose first line says command, machine and date; the README
includes some of these files verbatim). The record is printed too, as one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.hardware import machine

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
CACHE = BENCHMARKS / "cache"
"""Finished runs that an interrupted benchmark resumes from (ignored by git)."""


def parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The module's option parser, its docstring as help, with the `--out` folder every benchmark takes."""
    result = argparse.ArgumentParser(
        prog=f"python -m benchmarks {module.rsplit('.', 1)[-1]}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument("--out", type=Path, help=f"folder for the .json and .md (default: {RESULTS})")
    return result


@dataclass(frozen=True)
class Record:
    """The command, machine and date that every result carries, taken when the benchmark starts."""

    command: str
    machine: str = field(default_factory=machine)
    date: str = field(default_factory=lambda: date.today().isoformat())

    @classmethod
    def start(cls, module: str, argv: list[str]) -> Record:
        return cls("python -m benchmarks " + shlex.join([module.rsplit(".", 1)[-1], *argv]))

    def header(self, details: str) -> str:
        """A table's first line: how to make it again, where and when it was measured, then `details`."""
        return f"`{self.command}` — {self.machine}, {self.date}; {details}"

    def write(self, stem: str, figures: dict[str, Any], markdown: str, folder: Path | None = None) -> dict[str, Any]:
        """Write FOLDER/STEM.json and .md (default folder: benchmarks/results), each whole or not at all;
        print the table and then the record as one JSON line; return the record."""
        from lsllama.run_folder import atomic_write_text  # here, not at import: speed's workers import this module

        record = {**figures, "command": self.command, "machine": self.machine, "date": self.date}
        folder = folder or RESULTS
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"{stem}.json", json.dumps(record, indent=2) + "\n")
        atomic_write_text(folder / f"{stem}.md", markdown)
        print(markdown)
        print(json.dumps(record))
        return record
