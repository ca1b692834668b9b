"""Time `lsllama --help` and `lsllama train --help`; exit 1 if either takes longer than the limit.

    python scripts/cli_startup.py [--limit 1.0] [--repeat 5]

A check script rather than a unit test: wall time on a shared machine is too noisy for the test suite,
which checks the cause instead (tests/test_cli.py: importing the CLI loads no torch). Each command
runs in a fresh interpreter, as a user's shell would; the best of `--repeat` runs is compared with the
limit, so that a moment of load on the machine does not fail the check.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = (["--help"], ["train", "--help"])


def best_seconds(args: list[str], repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lsllama.cli", *args], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=1.0, help="seconds allowed per command (default 1.0)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the fastest counts (default 5)")
    args = parser.parse_args()
    slow = False
    for command in COMMANDS:
        seconds = best_seconds(list(command), args.repeat)
        slow |= seconds > args.limit
        verdict = "ok" if seconds <= args.limit else f"over the {args.limit:g} s limit"
        print(f"lsllama {' '.join(command)}: {seconds:.2f} s ({verdict})")
    sys.exit(1 if slow else 0)


if __name__ == "__main__":
    main()
