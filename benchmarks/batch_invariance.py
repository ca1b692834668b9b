"""How much a text's probabilities depend on the batch it is predicted in, and what exact inference costs.

    python benchmarks/batch_invariance.py RUN DATA [--rows 64] [--precisions default fp32]

For each precision (`default`: the run's own, bf16 where the hardware has it; `fp32`: lsllama's exact
mode, `--precision fp32`), the run is loaded and the first `--rows` texts of DATA (a .txt file, one
text per line, or a CSV / JSONL file with the run's text column) are predicted with batch size 1 and
with batch size 32. Reported: the largest absolute difference of any probability between the two, and
the inference rate (rows/s) at each batch size, timed after one warm-up pass. Sequence-task runs only.
Writes benchmarks/results/batch_invariance.json and .md (or under --results); the last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from benchmarks.hardware import machine  # noqa: E402

BATCH_SIZES = (1, 32)


def timed_probabilities(clf, texts: list[str], pairs: list[str] | None, batch_size: int) -> tuple[np.ndarray, float]:
    """Probabilities and rows/s: one untimed pass first (allocations, kernel choice), then one timed pass."""
    clf.predict_proba(texts[:batch_size], pairs[:batch_size] if pairs else None, batch_size=batch_size)
    start = time.perf_counter()
    probs = clf.predict_proba(texts, pairs, batch_size=batch_size)
    return probs, len(texts) / (time.perf_counter() - start)


def measure(run: Path, texts: list[str], pairs: list[str] | None, precision: str) -> dict:
    import torch

    from lsllama import Classifier

    clf = Classifier.load(run, device="cpu", precision=None if precision == "default" else precision)
    if clf.task != "sequence" or clf.problem == "regression":
        raise SystemExit(
            f"{run}: a single- or multi-label sequence run is needed (this one: {clf.task}, {clf.problem})"
        )
    by_size = {size: timed_probabilities(clf, texts, pairs, size) for size in BATCH_SIZES}
    (small, small_rate), (large, large_rate) = by_size[BATCH_SIZES[0]], by_size[BATCH_SIZES[-1]]
    return {
        "precision": precision,
        "dtype": str(clf.model.compute_dtype).removeprefix("torch."),
        "max_abs_difference": float(np.abs(small - large).max()),
        "labels_changed": int((small.argmax(axis=1) != large.argmax(axis=1)).sum()),
        "rows_per_s_batch_1": small_rate,
        "rows_per_s_batch_32": large_rate,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a trained sequence-task run (or export) folder")
    parser.add_argument("data", type=Path, help=".txt (one text per line), .csv or .jsonl with the run's text column")
    parser.add_argument("--rows", type=int, default=64, help="texts measured (the first N of DATA)")
    parser.add_argument("--precisions", nargs="+", default=["default", "fp32"], help="default (the run's), bf16, fp32")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="folder for the JSON and Markdown")
    args = parser.parse_args()

    from lsllama.run_folder import RunFolder
    from lsllama.serving.files import read_inputs

    inputs = read_inputs(args.data, RunFolder.locate(args.run).config())
    texts = inputs.texts[: args.rows]
    pairs = inputs.pairs[: args.rows] if inputs.pairs else None
    rows = [measure(args.run, texts, pairs, precision) for precision in args.precisions]
    summary = {
        "run": str(args.run),
        "data": str(args.data),
        "rows": len(texts),
        "results": rows,
        "command": "python benchmarks/batch_invariance.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "date": date.today().isoformat(),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "batch_invariance.json").write_text(json.dumps(summary, indent=2))
    (args.results / "batch_invariance.md").write_text(markdown(summary))
    print(markdown(summary))
    print(json.dumps(summary))


def markdown(s: dict) -> str:
    lines = [
        f"`{s['command'].strip()}` — {s['machine']}, {s['date']}; run `{s['run']}`, the first {s['rows']} texts "
        f"of `{s['data']}`; probabilities with batch size 1 against batch size 32.",
        "",
        "| precision | backbone dtype | max abs probability difference | labels changed "
        "| rows/s (batch 1) | rows/s (batch 32) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in s["results"]:
        lines.append(
            f"| {r['precision']} | {r['dtype']} | {r['max_abs_difference']:.2e} | {r['labels_changed']} "
            f"| {r['rows_per_s_batch_1']:.1f} | {r['rows_per_s_batch_32']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
