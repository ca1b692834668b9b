"""benchmarks/learning_curve.py on the tiny random model: the record it writes, its resumable cache, a
report from a partial cache, and SFT trained for the step count of the LS run beside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.learning_curve import plan, sft_recipe

from lsllama.config import TrainConfig
from lsllama.training.loop import planned_steps

from .conftest import DATA_ROOT, REPO

needs_data = pytest.mark.skipif(not (DATA_ROOT / "ag_news").is_dir(), reason=f"no data under {DATA_ROOT}")


def learning_curve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks", "learning_curve", "--model", "tiny-random", "--eval-rows", "16"]
    command += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def cache_files(tmp_path: Path) -> dict[str, int]:
    """Every file under the cache with its modification time: a run that trains adds or rewrites some."""
    return {str(p.relative_to(tmp_path)): p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}


def test_sft_is_given_a_recipe_that_makes_exactly_the_ls_run_steps():
    ls_recipe = TrainConfig(epochs=1.0, min_steps=100)
    for steps in range(1, 300):
        for batches in (1, 3, 7, 19, 63, 125):
            recipe = sft_recipe(ls_recipe, steps)
            assert planned_steps(lambda epoch, n=batches: [None] * n, recipe.epochs, recipe.min_steps) == steps
    assert sft_recipe(ls_recipe, 5).learning_rate == ls_recipe.learning_rate


def test_the_plan_goes_seed_by_seed_cheapest_first_with_ls_before_its_sft_and_fits_tfidf_once():
    runs = plan(["sst2", "ag_news"], [1000, 100], [2, 0], ["sft", "ls", "tfidf"])
    assert [(r.seed, r.rows, r.method) for r in runs[:6]] == [
        (2, 100, "tfidf"), (2, 100, "tfidf"), (2, 1000, "tfidf"), (2, 1000, "tfidf"), (2, 100, "ls"), (2, 100, "sft")
    ]  # fmt: skip
    assert [r.seed for r in runs] == [2] * 12 + [0] * 8
    assert {r.seed for r in runs if r.method == "tfidf"} == {2}  # deterministic: once, at the first seed asked


@needs_data
def test_a_run_writes_its_record_then_resumes_and_reports_a_partial_cache_with_seed_counts(tmp_path: Path):
    first = learning_curve(tmp_path, "--datasets", "sst2", "--rows", "16", "--seeds", "0")
    assert "4 runs, 0 cached, 4 to run" in first.stdout
    record = json.loads((tmp_path / "out" / "learning_curve.json").read_text())
    runs = {r["method"]: r for r in record["runs"]}
    assert set(runs) == {"tfidf", "ls", "ls-paper", "sft"}
    assert runs["ls"]["step0"] is not None and runs["ls-paper"]["step0"] is None
    assert runs["ls"]["last"] == runs["ls"]["curve"][-1][1] and runs["ls"]["curve"][-1][0] == runs["ls"]["steps"]
    assert runs["sft"]["steps"] == runs["ls"]["steps"]
    assert all(run["seconds"] > 0 for run in runs.values())  # LS: the wall time kept beside its run folder
    markdown = (tmp_path / "out" / "learning_curve.md").read_text()
    assert "| ls at step 0 (zero-shot through the head) | " in markdown and "(1 run)" in markdown
    assert (tmp_path / "out" / "learning_curve.png").read_bytes().startswith(b"\x89PNG")

    before = cache_files(tmp_path)
    again = learning_curve(tmp_path, "--datasets", "sst2", "--rows", "16", "--seeds", "0")
    assert "4 runs, 4 cached, 0 to run" in again.stdout and cache_files(tmp_path) == before
    assert json.loads((tmp_path / "out" / "learning_curve.json").read_text())["runs"] == record["runs"]

    tfidf = learning_curve(tmp_path, "--datasets", "sst2", "--rows", "16", "--seeds", "0", "1", "--methods", "tfidf")
    assert "1 runs, 1 cached, 0 to run" in tfidf.stdout  # fitted once, at seed 0, whatever the seeds
    before = cache_files(tmp_path)
    report = learning_curve(tmp_path, "--datasets", "sst2", "--rows", "16", "--seeds", "0", "1", "--report-only")
    assert "7 runs, 4 cached, 0 to run" in report.stdout and cache_files(tmp_path) == before  # TF-IDF: once
    lines = (tmp_path / "out" / "learning_curve.md").read_text().splitlines()
    assert "(1 run) |" in next(line for line in lines if line.startswith("| LS, lsllama defaults"))
    cells = json.loads((tmp_path / "out" / "learning_curve.json").read_text())["cells"]
    assert {(c["method"], c["figure"]): c["seeds"] for c in cells} == {
        ("tfidf", "accuracy"): 1, ("ls", "accuracy"): 1, ("ls", "step0"): 1, ("ls", "last"): 1,
        ("ls-paper", "accuracy"): 1, ("sft", "accuracy"): 1,
    }  # fmt: skip


@needs_data
def test_sft_trains_for_the_steps_that_the_ls_run_of_its_cell_made(tmp_path: Path):
    """The step count comes from the ls run's record (a step floor makes it more than one epoch's)."""
    common = ["--datasets", "ag_news", "--rows", "24", "--seeds", "0"]
    learning_curve(tmp_path, *common, "--methods", "ls")
    (ls_folder,) = (tmp_path / "cache" / "tiny-random").glob("ag_news-n24-e16-ls-s0")
    results = json.loads((ls_folder / "results.json").read_text())
    assert results["global_step"] == 100  # the default step floor (one epoch of 24 rows is 2 steps)
    (ls_folder / "results.json").write_text(json.dumps({**results, "global_step": 5}))
    learning_curve(tmp_path, *common, "--methods", "sft")
    sft = json.loads((tmp_path / "cache" / "tiny-random" / "ag_news-n24-e16-sft-s0.json").read_text())
    assert (sft["steps"], sft["ls_steps"]) == (5, 5)
