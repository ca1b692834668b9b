"""One entry point for the benchmarks that measure lsllama (the paper suite keeps benchmarks/paper.py).

    python -m benchmarks NAME [options]
    python -m benchmarks NAME --help

NAME is a module of this folder with a `main(argv)`. Only that module is imported, so that a benchmark's
child processes (speed's workers) load what their own measurement needs and nothing else.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

COMMANDS = (
    "speed",
    "profile_step",
    "compile_payoff",
    "ablation",
    "main_job",
    "serve",
    "ner",
    "breadth",
    "gpu",
    "small_data",
    "time_to_accuracy",
    "learning_curve",
)


def summary(name: str) -> str:
    """The first line of a benchmark's docstring, read without importing it."""
    source = (Path(__file__).parent / f"{name}.py").read_text()
    return (ast.get_docstring(ast.parse(source)) or "").splitlines()[0]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.split("\n\n")[0] + "\n\n    python -m benchmarks NAME [options]\n\nNAME is one of:\n")
        print("\n".join(f"  {name:15} {summary(name)}" for name in COMMANDS))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: no benchmark {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    importlib.import_module(f"benchmarks.{argv[0]}").main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
