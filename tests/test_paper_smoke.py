"""benchmarks/paper.py end to end on a tiny random model, the answer parser its baselines rely on, and the
fit of its time estimate."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmarks.baselines.generative import parse_label
from benchmarks.paper import calibrate, estimate_seconds
from benchmarks.paper_plan import Run

from lsllama.config import TrainConfig

from .conftest import DATA_ROOT, REPO

SMOKE = ["--model", "tiny-random", "--rows", "24", "--eval-rows", "16", "--seeds", "1"]
SMOKE += ["--datasets", "sst2", "conll2003"]
EXPECTED_RUNS = {
    "sst2": {"ls-causal-last", "ls-bidir-mean", "ls-bidir-max", "zero-shot", "sft", "official", "tfidf"},
    "conll2003": {"ls-causal", "ls-bidir", "ls-unmask-half", "majority-tag"},
}


def test_parse_label_reads_the_first_label_named_and_prefers_the_longer_name():
    labels = ["very negative", "negative", "neutral", "positive", "very positive"]
    assert parse_label("Very negative.", labels) == 0
    assert parse_label(" negative", labels) == 1
    assert parse_label("Positive, not negative", labels) == 3
    assert parse_label("nonnegative", labels) is None
    assert parse_label("I cannot tell", labels) is None
    assert parse_label("Sci/Tech", ["World", "Sports", "Business", "Sci/Tech"]) == 3


def test_findings_call_a_lead_noise_only_against_rows_whose_spread_is_known():
    """A stochastic row with one run has no seed-noise estimate (its spread is unknown, not zero); a
    deterministic row's single run is its whole spread."""
    from benchmarks.paper_report import Stats, _compare

    ls = Stats(0.857, 0.0, 2, 1.0)
    verdict, numbers = _compare(ls, [("SFT", Stats(0.850, 0.0, 1, 1.0))])
    assert verdict == "**yes** (single runs: no noise estimate against SFT)"
    assert "within seed noise" not in numbers and "beyond seed noise" not in numbers
    verdict, numbers = _compare(ls, [("TF-IDF", Stats(0.590, 0.0, 1, 1.0, deterministic=True))])
    assert verdict == "**yes**" and "beyond seed noise" in numbers
    noisy = Stats(0.86, 0.02, 3, 1.0)
    verdict, _ = _compare(noisy, [("SFT", Stats(0.85, 0.02, 3, 1.0))])
    assert verdict == "**yes, but not beyond seed noise**"
    verdict, _ = _compare(noisy, [("SFT", Stats(0.90, 0.01, 3, 1.0))])
    assert verdict == "**no**"
    verdict, _ = _compare(noisy, [("SFT", Stats(0.87, 0.02, 3, 1.0))])
    assert verdict == "**no, but not beyond seed noise**"


def test_a_report_of_some_methods_shows_and_compares_only_those():
    from benchmarks.paper_plan import FULL
    from benchmarks.paper_report import Report, Stats, _claim, _rows

    report = Report("cmd", "machine", "day", "model", FULL, {}, [], 0.0, 0, 15, ("ls-causal-last", "sft", "tfidf"))
    assert set(_rows(report)) == {"ls-causal-last", "sft", "tfidf"}
    ls, sft = Stats(0.86, 0.01, 3, 1.0), Stats(0.80, 0.01, 3, 1.0)
    claim = _claim("1", ls, [("zero-shot", "zero-shot", None), ("SFT", "SFT", sft)])
    assert claim.startswith("(1) LS beats SFT: **yes**")
    assert _claim("3", ls, [("TF-IDF", "TF-IDF", None)]) == "(3): none of its rows has run."


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_report_figures_reach_the_readme_table_and_findings_need_the_ls_row(tmp_path: Path):
    """summary() is what scripts/readme_tables.py reads; findings compare only rows that have run."""
    sys.path.insert(0, str(REPO / "scripts"))
    from benchmarks.paper_plan import Budget, prepare_data
    from benchmarks.paper_report import Report, aggregate, findings, summary
    from readme_tables import paper_headline

    budget = Budget(rows=24, eval_rows=16, seeds=3, datasets=("sst2",))
    data = {"sst2": prepare_data("sst2", budget.rows, budget.eval_rows, tmp_path)}

    def record(method: str, seed: int, accuracy: float) -> dict:
        key = {"dataset": "sst2", "method": method, "seed": seed}
        return {"key": key, "reported_split": "validation", "splits": {"validation": {"accuracy": accuracy}},
                "seconds": 1.0}  # fmt: skip

    records = [record("ls-causal-last", s, a) for s, a in ((42, 0.85), (43, 0.87), (44, 0.86))]
    records += [record("sft", 42, 0.80), record("tfidf", 42, 0.60)]
    methods = ("ls-causal-last", "sft", "tfidf")
    report = Report("cmd", "m", "d", "tiny-random", budget, data, records, 0.0, 7, 1, methods)
    stats = aggregate(records)
    (line,) = findings(report, stats)
    assert "(1) LS beats SFT: **yes** (single runs: no noise estimate against SFT)" in line
    assert "(3) LS beats TF-IDF: **yes** — TF-IDF 0.600 (1 run) (+26.0 points, beyond seed noise)" in line
    table = paper_headline(json.loads(json.dumps(summary(report, stats))))
    assert "| 0.860 ± 0.010 (3) | 0.800 (1) | 0.600 (1) |" in table and "partial: 5 of 7 runs" in table
    without_ls = Report("cmd", "m", "d", "tiny-random", budget, data, records[3:], 0.0, 2, 1, ("sft", "tfidf"))
    assert findings(without_ls, aggregate(records[3:])) == [
        "- **SST-2**: LS-LLaMA: causal, last token has not run; no finding."
    ]


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_paper_smoke_run_writes_table_chart_and_one_json_per_run_then_resumes(tmp_path: Path):
    results = tmp_path / "results"
    command = [sys.executable, "benchmarks/paper.py", *SMOKE, "--results-dir", str(results)]
    command += ["--cache-dir", str(tmp_path / "cache")]
    subprocess.run(command, cwd=REPO, check=True, timeout=900)

    records = [json.loads(path.read_text()) for path in (results / "paper" / "runs").glob("*.json")]
    found: dict[str, set[str]] = {}
    for record in records:
        found.setdefault(record["key"]["dataset"], set()).add(record["key"]["method"])
        assert record["reported_split"] in record["splits"]
    assert found == EXPECTED_RUNS

    table = (results / "paper.md").read_text()
    assert "`python benchmarks/paper.py --model tiny-random" in table
    for label in ("LS-LLaMA: causal, last token", "Zero-shot prompting", "Instruction SFT", "TF-IDF", "Official"):
        assert label in table
    assert "LS: bidirectional from layer 1 (L/2)" in table  # the tiny model has 2 layers
    assert "SST-2<br>accuracy, validation, n=16" in table
    assert "CoNLL-2003<br>span F1, test, n=16" in table
    assert "(2) bidirectional beats causal: **" in table
    assert (results / "paper.png").stat().st_size > 10_000

    again = subprocess.run(command, cwd=REPO, check=True, timeout=300, capture_output=True, text=True)
    assert "11 runs, 11 cached" in again.stdout


def test_calibrate_recovers_the_rates_and_ignores_a_seed_slowed_by_a_shared_cpu():
    true = {"load": 5.0, "train_tokens": 0.003, "decode_tokens": 0.02}
    workloads, seconds = {}, {}
    for index, (train, decode) in enumerate([(1e4, 0), (3e4, 0), (2e4, 500), (5e4, 2000), (4e4, 1000), (1e4, 3000)]):
        for seed in (42, 43):
            run = Run(f"data{index}", "method", seed)
            workloads[run] = {"load": 1, "train_tokens": train, "decode_tokens": decode}
            seconds[run] = estimate_seconds(workloads[run], true) * (3.0 if (index, seed) == (3, 42) else 1.0)
    fitted = calibrate(workloads, seconds)
    assert fitted == pytest.approx(true, rel=0.02)


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_the_recorded_paper_suite_is_still_the_plan_so_reports_need_no_rerun():
    """A setting added to the run config changes every cache key unless it is kept out of them
    (`NOT_IN_KEY`): the committed records would silently stop counting."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/paper.py", "--dry-run"], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    planned, cached = map(int, re.search(r"(\d+) runs, (\d+) cached", proc.stdout).groups())
    assert planned > 0 and cached == planned


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_the_defaults_recipe_reruns_ls_and_sft_only_under_their_own_keys(tmp_path: Path):
    """`--recipe defaults` trains LS with today's defaults and SFT for as many steps; zero-shot, TF-IDF,
    the majority tag and the official recipe compute what they did and keep their cached runs."""
    from benchmarks.paper import RECIPES, Context, ls_config, model_folder, run_file, sequence_defaults
    from benchmarks.paper_plan import METHODS, Budget, build_plan, prepare_data

    budget = Budget(rows=24, eval_rows=16, seeds=1, datasets=("sst2", "conll2003"))
    data = {name: prepare_data(name, budget.rows, budget.eval_rows, tmp_path) for name in budget.datasets}
    path = model_folder("tiny-random", tmp_path)
    recorded = Context("tiny-random", path, tmp_path, data, pinned=RECIPES["recorded"])
    defaults = Context("tiny-random", path, tmp_path, data, pinned=RECIPES["defaults"])
    changed = set()
    for run in build_plan(budget):
        (before, _), (after, key) = run_file(run, recorded, tmp_path), run_file(run, defaults, tmp_path)
        if before != after:
            changed.add(METHODS[run.method].kind)
            assert key["recipe"]["train"]["min_steps"] == 100
    assert changed == {"ls", "sft"}
    ls = ls_config(next(r for r in build_plan(budget) if r.method == "ls-causal-last"), defaults)
    assert (ls.model.head_init, ls.train.min_steps) == ("label_names", 100)
    assert sequence_defaults(recorded).train.min_steps == 0 and sequence_defaults(defaults).train.min_steps == 100


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_ls_is_scored_with_its_last_weights_where_the_reported_split_also_selects(tmp_path: Path):
    """SST-2 reports validation, the split LS chooses its best evaluation on: choosing there would flatter
    LS against SFT and TF-IDF, which choose nothing on it, so the record holds the final evaluation."""
    from benchmarks.paper import SCORED_ON_VALIDATION, Context, execute, model_folder, run_file
    from benchmarks.paper_plan import Budget, Run, prepare_data

    budget = Budget(rows=24, eval_rows=16, seeds=1, datasets=("sst2",))
    data = {"sst2": prepare_data("sst2", budget.rows, budget.eval_rows, tmp_path)}
    path = model_folder("tiny-random", tmp_path)
    ctx = Context("tiny-random", path, tmp_path, data, pinned={"train": {"min_steps": 6}})
    run = Run("sst2", "ls-causal-last", 42)
    assert run_file(run, ctx, tmp_path)[1]["recipe"]["scored"] == SCORED_ON_VALIDATION
    outcome = execute(run, ctx, tmp_path / "run")
    assert outcome["global_step"] == 6  # 24 rows are 2 steps an epoch: evaluations at steps 0, 2, 4 and 6
    assert outcome["best_step"] < 6  # an earlier evaluation was the best: the case this test is about
    assert outcome["splits"]["validation"]["step"] == 6 and outcome["splits"]["validation"]["n"] == 16


def tiny_suite(tmp_path: Path, *datasets: str, **options: Any):
    """The tiny-random suite's plan on these data sets, a context with today's defaults and one with `options`."""
    from benchmarks.paper import RECIPES, Context, model_folder
    from benchmarks.paper_plan import Budget, build_plan, prepare_data

    budget = Budget(rows=24, eval_rows=16, seeds=1, datasets=datasets)
    data = {name: prepare_data(name, budget.rows, budget.eval_rows, tmp_path) for name in datasets}
    path = model_folder("tiny-random", tmp_path)
    pinned = options.pop("pinned", RECIPES["defaults"])
    default = Context("tiny-random", path, tmp_path, data, pinned=RECIPES["defaults"])
    return build_plan(budget), default, Context("tiny-random", path, tmp_path, data, pinned=pinned, **options)


def rekeyed(runs: list, before: Any, after: Any, tmp_path: Path) -> set:
    """The runs whose cache key differs between the two contexts."""
    from benchmarks.paper import run_file

    return {run for run in runs if run_file(run, before, tmp_path)[0] != run_file(run, after, tmp_path)[0]}


@pytest.mark.skipif(not (DATA_ROOT / "conll2003").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_learning_rate_keys_the_sentence_sets_ls_and_sft_runs_not_the_token_tasks(tmp_path: Path):
    from benchmarks.paper import METHODS, pinned_settings, sft_train

    runs, default, raised = tiny_suite(tmp_path, "sst2", "conll2003", pinned=pinned_settings("defaults", 2e-3))
    assert sft_train(raised).learning_rate == 2e-3 and sft_train(default).learning_rate == TrainConfig.learning_rate
    sentence_ls = {name for name, method in METHODS.items() if method.kind == "ls" and method.task == "sequence"}
    assert {run.method for run in rekeyed(runs, default, raised, tmp_path)} == sentence_ls | {"sft"}


@pytest.mark.skipif(not (DATA_ROOT / "conll2003").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_ls_task_words_put_the_sft_prompts_task_before_the_labels_question_of_sentence_sets_only(tmp_path: Path):
    from benchmarks.paper import ls_config

    runs, default, worded = tiny_suite(tmp_path, "sst2", "conll2003", ls_task_words=True)
    moved = rekeyed(runs, default, worded, tmp_path)
    assert {(run.dataset, run.method.startswith("ls-")) for run in moved} == {("sst2", True)}
    [ls] = [run for run in moved if run.method == "ls-causal-last"]
    template = ls_config(ls, worded).data.template
    assert template.startswith("What is the sentiment of the movie review below? Possible labels: {labels}.")


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_generic_prompt_keys_only_the_prompted_runs_and_names_the_labels_not_the_task(tmp_path: Path):
    from benchmarks.baselines.generative import prompt_ids
    from benchmarks.paper import Context, prompt_task

    from lsllama.modeling.loading import load_tokenizer

    runs, told, generic = tiny_suite(tmp_path, "sst2", generic_prompt=True)
    assert {run.method for run in rekeyed(runs, told, generic, tmp_path)} == {"zero-shot", "sft"}
    tokenizer = load_tokenizer(told.model_path)
    [sft] = [run for run in runs if run.method == "sft"]

    def prompt(ctx: Context) -> str:
        return tokenizer.decode(prompt_ids(tokenizer, prompt_task(sft, ctx), "a fine film"))

    assert "movie review" in prompt(told) and "movie review" not in prompt(generic)
    assert "Possible labels: negative, positive. Answer with the label only." in prompt(generic)


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_sfts_own_learning_rate_keys_only_the_sft_runs_and_the_protocol_names_it(tmp_path: Path):
    from benchmarks.paper import RECIPES, Context, model_folder, run_file, sft_train
    from benchmarks.paper_plan import Budget, build_plan, prepare_data
    from benchmarks.paper_report import Report, protocol

    budget = Budget(rows=24, eval_rows=16, seeds=1, datasets=("sst2",))
    data = {"sst2": prepare_data("sst2", budget.rows, budget.eval_rows, tmp_path)}
    path = model_folder("tiny-random", tmp_path)
    shared = Context("tiny-random", path, tmp_path, data, pinned=RECIPES["defaults"])
    own = Context("tiny-random", path, tmp_path, data, pinned=RECIPES["defaults"], sft_learning_rate=2e-4)
    assert sft_train(shared).learning_rate == TrainConfig.learning_rate and sft_train(own).learning_rate == 2e-4
    records = []
    for run in build_plan(budget):
        (before, _), (after, key) = run_file(run, shared, tmp_path), run_file(run, own, tmp_path)
        assert (before != after) == (run.method == "sft"), run.method
        records.append({"key": key})
    report = Report("cmd", "m", "d", "tiny-random", budget, data, records, 0.0, len(records), 1)
    own_lr = f"SFT: same LoRA, epochs, optimizer steps, its own lr 0.0002 (LS: {TrainConfig.learning_rate:g}), batch"
    assert own_lr in "\n".join(protocol(report))


def test_sft_makes_as_many_optimizer_steps_as_an_lsllama_run_of_its_rows(tmp_path: Path):
    """A fair race: with a step floor, SFT reads the rows for more epochs, as lsllama does."""
    import torch
    from benchmarks.baselines import LabelledTexts
    from benchmarks.baselines.generative import PromptTask, instruction_sft
    from benchmarks.paper import model_folder

    from lsllama.config import ModelConfig, TrainConfig

    rows = LabelledTexts([f"text number {i} is {'good' if i % 2 else 'bad'}" for i in range(24)], [0, 1] * 12)
    task = PromptTask("sentiment", ["bad", "good"], 32)
    path = model_folder("tiny-random", tmp_path)
    lora = ModelConfig(name=path, precision="fp32")
    for min_steps, steps in ((0, 2), (5, 5)):  # 24 rows are 2 batches of 16
        recipe = TrainConfig(min_steps=min_steps)
        result = instruction_sft(
            path, task, rows, LabelledTexts(rows.texts[:2], [0, 1]), lora, recipe, 0, torch.device("cpu")
        )
        assert result["train_steps"] == steps


def test_the_protocol_names_a_runs_template_as_it_was_configured():
    from benchmarks.paper_report import template_name

    from lsllama.config import TEMPLATES

    assert [template_name(t) for t in (None, "auto", TEMPLATES["labels"], "{text}\nSentiment:")] == [
        "none",
        "auto",
        "labels",
        "custom",
    ]
