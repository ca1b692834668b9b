"""Copy benchmark tables into the README, so that no figure there is typed by hand.

    python scripts/readme_tables.py [--check]

Every block of the README between `<!-- include: PATH -->` and `<!-- /include -->` is replaced by the
current contents of PATH (a Markdown file a benchmark wrote). `--check` changes nothing and exits 1 if
a block differs from its file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- include: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /include -->)", re.DOTALL)


def render(readme: str) -> str:
    def fill(match: re.Match[str]) -> str:
        source = REPO / match["path"]
        if not source.is_file():
            raise SystemExit(f"README.md: {match['path']} (named by an include block) does not exist")
        return match.group(1) + "\n" + source.read_text().strip() + "\n\n" + match.group(4)

    return BLOCK.sub(fill, readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is out of date")
    args = parser.parse_args()
    path = REPO / "README.md"
    before = path.read_text()
    after = render(before)
    if args.check:
        if after != before:
            print("README.md: benchmark tables differ from benchmarks/results; run python scripts/readme_tables.py")
            sys.exit(1)
        return
    path.write_text(after)


if __name__ == "__main__":
    main()
