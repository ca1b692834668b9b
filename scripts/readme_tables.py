"""Copy benchmark tables into the README and docs/, so that no figure there is typed by hand.

    python scripts/readme_tables.py [--check]

Every block of README.md and docs/*.md between `<!-- include: PATH -->` and `<!-- /include -->` is
replaced by the current contents of PATH (a Markdown file a benchmark wrote); `<!-- include: PATH
demote=N -->` adds N levels to each of its headings, so that a report's own title fits under the
page's. First, `benchmarks/results/headline.md` (the README's results table) and
`headline_paper.md` (the paper suite with today's defaults: LS against SFT and TF-IDF) are rendered
from the benchmarks' JSON records. `--check` changes nothing and exits 1 if a block or the headline table
differs from what the records say.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
HEADLINE = RESULTS / "headline.md"
PAPER_HEADLINE = RESULTS / "headline_paper.md"
PAPER_DEFAULTS = RESULTS / "paper_defaults.json"
PAPER_COLUMNS = {"ls-causal-last": "LS (defaults)", "sft": "instruction SFT", "tfidf": "TF-IDF"}
BLOCK = re.compile(
    r"(<!-- include: (?P<path>\S+)(?: demote=(?P<demote>\d))? -->\n)(?P<body>.*?)(<!-- /include -->)", re.DOTALL
)


def pages() -> list[Path]:
    """The files whose include blocks are filled: the README and every page of the manual."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def render(text: str, page: str = "README.md") -> str:
    def fill(match: re.Match[str]) -> str:
        source = REPO / match["path"]
        if not source.is_file():
            raise SystemExit(f"{page}: {match['path']} (named by an include block) does not exist")
        body = demote(source.read_text().strip(), int(match["demote"] or 0))
        return match.group(1) + "\n" + body + "\n\n" + match.group(5)

    return BLOCK.sub(fill, text)


def demote(markdown: str, levels: int) -> str:
    """`# Title` -> `### Title` for levels=2 (lines inside code fences are left alone)."""
    if not levels:
        return markdown
    lines, fenced = [], False
    for line in markdown.splitlines():
        fenced ^= line.startswith("```")
        lines.append("#" * levels + line if line.startswith("#") and not fenced else line)
    return "\n".join(lines)


DEFAULTS = "names+labels"
"""benchmarks/small_data.py's variant that is the package defaults (label-word head, `labels` template)."""


def small_data_row(record: dict) -> tuple[str, str, str, str]:
    """SST-2 at its smallest size in benchmarks/small_data.py's record: the defaults against the bare text,
    one epoch and the paper's random head, mean ± std over seeds."""
    runs = [r for r in record["runs"] if r["dataset"] == "sst2"]
    rows = min(r["rows"] for r in runs)

    def mean_std(variant: str) -> str:
        scores = [r["accuracy"] for r in runs if r["rows"] == rows and r["variant"] == variant]
        spread = f" ± {statistics.stdev(scores):.3f}" if len(scores) > 1 else ""
        return f"{statistics.mean(scores):.3f}{spread}"

    seeds = len({r["seed"] for r in runs})
    return (
        f"SST-2, {rows} training rows, {seeds} seeds: validation accuracy ({record['eval_rows']} sentences)",
        f"**{mean_std(DEFAULTS)}** (at least 100 steps); without the template {mean_std('names')}, "
        f"{mean_std('names-1epoch')} in 1 epoch (the paper's random head, 1 epoch: {mean_std('random')})",
        "–",
        "[small_data.md](benchmarks/results/small_data.md)",
    )


def seeds_mean_std(record: dict) -> str:
    """The default recipe's accuracy in a benchmarks/small_data.py record of one size: mean ± std over seeds."""
    runs = [r for r in record["runs"] if r["variant"] == DEFAULTS]
    scores, seeds = [r["accuracy"] for r in runs], ", ".join(str(r["seed"]) for r in runs)
    return f"seeds {seeds}: {statistics.mean(scores):.3f} ± {statistics.stdev(scores):.3f}"


def speed_head(speed: dict) -> str:
    """What the speed run's head started from: its record says so since the worker wrote `head_init`; the
    records before that were all made with the paper's random head (the default until 2026-12-03)."""
    head = speed["runs"]["lsllama"].get("head_init", "random")
    return "with the paper's random head, then the default" if head == "random" else f"head init {head}"


def ner_cell(entry: dict) -> str:
    """Validation / test span F1, mean ± std over the seeds the NER record ran."""

    def cell(key: str) -> str:
        std = entry[f"{key}_std"]
        return f"{entry[f'{key}_mean']:.3f}" + ("" if std is None else f" ± {std:.3f}")

    return f"{cell('validation_f1')} / {cell('test_f1')} ({len(entry['seeds'])} seeds)"


def headline() -> str:
    """The README's results table: the default model against the official recipe, from the JSON records
    of benchmarks/main_job.py, benchmarks/speed.py --quick and benchmarks/ner.py."""
    main = json.loads((RESULTS / "main_job.json").read_text())
    seeds = RESULTS / "sst2_2000" / "small_data.json"
    over_seeds = f"; {seeds_mean_std(json.loads(seeds.read_text()))}" if seeds.is_file() else ""
    speed = json.loads((RESULTS / "speed_quick.json").read_text())
    ner = {entry["variant"]: entry for entry in json.loads((RESULTS / "ner.json").read_text())["summary"]}
    bi, causal = ner["bidirectional"], ner["causal"]
    rows = [
        (
            "SST-2, 2,000 training rows, 1 epoch: validation accuracy (872 sentences)",
            f"**{main['validation_accuracy']:.3f}** in {main['wall_seconds_cold_cache'] / 60:.1f} min wall time"
            + over_seeds,
            "–",
            "[main_job.md](benchmarks/results/main_job.md)"
            + (", [sst2_2000](benchmarks/results/sst2_2000/small_data.md)" if over_seeds else ""),
        ),
        (
            f"SST-2, {speed['rows']} training rows, 1 epoch: validation accuracy (recorded {speed['date']}, "
            f"{speed_head(speed)})",
            f"**{speed['lsllama_accuracy']:.3f}**",
            f"{speed['official_accuracy']:.3f}",
            "[speed_quick.md](benchmarks/results/speed_quick.md)",
        ),
        (
            "the same run: training / inference samples per second",
            f"{speed['train_speedup']:.2f}x / {speed['eval_speedup']:.2f}x the official recipe's",
            "1x / 1x",
            "[speed_quick.md](benchmarks/results/speed_quick.md)",
        ),
        (
            "CoNLL-2003, 2,000 training sentences, 3 epochs: span F1, validation / test, mean ± std over seeds",
            f"**{ner_cell(bi)}** (LS-unLLaMA); causal {ner_cell(causal)}",
            "not run (the benchmark reproduces its sequence script)",
            "[ner.md](benchmarks/results/ner.md)",
        ),
    ]
    small = RESULTS / "small_data.json"
    if small.is_file():
        rows.insert(1, small_data_row(json.loads(small.read_text())))
    header = (
        "SmolLM2-135M-Instruct (the default model); each figure is from the record its benchmark wrote (last "
        "column, with the machine and date it names).\n\n"
        "| task | lsllama (defaults) | official LS-LLaMA recipe | record |\n| --- | ---: | ---: | --- |\n"
    )
    return header + "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def paper_cell(cell: dict | None) -> str:
    if cell is None:
        return "—"
    return f"{cell['mean']:.3f}" + (f" ± {cell['std']:.3f}" if cell["n"] > 1 else "") + f" ({cell['n']})"


def paper_headline(record: dict) -> str:
    """The paper suite with today's defaults (benchmarks/paper.py --recipe defaults): per data set, LS
    against instruction SFT and TF-IDF, mean ± std over seeds (whether a lead is beyond seed noise is the
    report's findings' to say, not a bold figure's)."""
    cells = {(c["dataset"], c["method"]): c for c in record["cells"]}
    partial = record["finished"] < record["planned"]
    lines = [
        f"`{record['command']}` — {record['machine']}, {record['date']}; {record['rows']:,} training rows per data "
        f"set; seeds {', '.join(map(str, record['seeds']))}"
        + (f"; **partial: {record['finished']} of {record['planned']} runs**" if partial else "")
        + ". The same rows, optimizer steps and LoRA for LS and SFT.",
        "",
        "| data set | " + " | ".join(PAPER_COLUMNS.values()) + " | majority class |",
        "| --- |" + " ---: |" * (len(PAPER_COLUMNS) + 1),
    ]
    for name, data in record["datasets"].items():
        found = {m: cells[name, m] for m in PAPER_COLUMNS if (name, m) in cells}
        if not found or data["majority_class"] is None:
            continue
        head = f"{data['title']} ({data['metric']}, {data['reported_split']}, n={data['n']})"
        row = [head, *(paper_cell(found.get(m)) for m in PAPER_COLUMNS), f"{data['majority_class']:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "(n): runs (seeds) behind each figure. Nothing is chosen on the rows a figure is scored on: where "
        "validation is reported, LS is scored with its last weights.",
    ]
    return "\n".join(lines) + "\n"


def generated() -> dict[Path, str]:
    """The tables this script renders from JSON records, by the file they go to."""
    files = {HEADLINE: headline()}
    if PAPER_DEFAULTS.is_file():
        files[PAPER_HEADLINE] = paper_headline(json.loads(PAPER_DEFAULTS.read_text()))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README or docs/ are out of date")
    args = parser.parse_args()
    stale = []
    for path, table in generated().items():
        if not path.is_file() or path.read_text() != table:
            stale.append(str(path.relative_to(REPO)))
            if not args.check:
                path.write_text(table)
    for path in pages():
        before = path.read_text()
        after = render(before, str(path.relative_to(REPO)))
        if after != before:
            stale.append(str(path.relative_to(REPO)))
            if not args.check:
                path.write_text(after)
    if args.check and stale:
        print(f"{', '.join(stale)}: differ from benchmarks/results; run python scripts/readme_tables.py")
        sys.exit(1)


if __name__ == "__main__":
    main()
