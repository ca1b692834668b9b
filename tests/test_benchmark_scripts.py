"""Benchmarks (`python -m benchmarks NAME`) that need hardware or hours we lack in CI still run, on tiny
configurations, and leave their records as benchmarks/record.py writes them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from benchmarks.profile_step import BREAKDOWN_ORDER, INFERENCE_SWEEP, SHAPES, SWEEP, half_peak_bound, op_category

from lsllama.config import ModelConfig

from .conftest import DATA_ROOT, REPO


def benchmark(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m benchmarks ARGS` from the repository root; asserts it succeeded."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_the_entry_point_lists_every_benchmark_and_refuses_an_unknown_one():
    from benchmarks.__main__ import COMMANDS

    listing = benchmark("--help").stdout
    assert all(f"  {name} " in listing for name in COMMANDS)
    unknown = subprocess.run([sys.executable, "-m", "benchmarks", "nope"], capture_output=True, text=True, cwd=REPO)
    assert unknown.returncode == 2 and "no benchmark 'nope'" in unknown.stderr


def test_gpu_benchmark_runs_on_a_tiny_config_on_cpu_and_writes_its_record(tmp_path: Path):
    args = ["gpu", "--tiny", "--steps", "1", "--batches", "2x8", "4x16", "--out", str(tmp_path)]
    summary = json.loads(benchmark(*args).stdout.strip().splitlines()[-1])
    assert [r["batch"] for r in summary["rows"]] == [2, 4]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in summary["rows"])
    assert json.loads((tmp_path / "gpu.json").read_text()) == summary
    assert summary["command"] == "python -m benchmarks " + " ".join(args)
    assert summary["machine"] and re.fullmatch(r"\d{4}-\d\d-\d\d", summary["date"])
    table = (tmp_path / "gpu.md").read_text()
    assert table.startswith(f"`{summary['command']}` — {summary['machine']}, {summary['date']}; tiny shapes")
    assert "| 4 x 16 |" in table


def profile_step(mode: str, rows: int, tmp_path: Path) -> tuple[str, list[list[str]]]:
    """`profile_step --MODE` on the tiny model: the text it wrote and its tables' rows (headers too)."""
    benchmark("profile_step", f"--{mode}", "--model", "tiny-random", "--rows", str(rows), "--out", str(tmp_path))
    text = (tmp_path / f"profile_{mode}.md").read_text()
    assert json.loads((tmp_path / f"profile_{mode}.json").read_text())["model"] == "tiny-random"
    lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    return text, [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines]


@pytest.mark.slow  # compiles the model for its torch.compile row: over a minute of CI on two cores
@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_profile_sweep_times_every_setting_on_the_same_rows(tmp_path: Path):
    _, table = profile_step("sweep", 48, tmp_path)
    rows = [r for r in table if len(r) == 8][1:]  # training: one row per setting, after the header
    inference = [r for r in table if len(r) == 4][1:]
    assert [(r[0].split(", after")[0], r[1], r[2]) for r in rows] == [
        (s.name, str(s.batch_size), str(s.pad_multiple)) for s in SWEEP
    ]
    assert re.fullmatch(r"torch\.compile \(train\.compile\), after \d+ s compiling", rows[-1][0])
    defaults = ModelConfig()
    assert rows[0][3] == f"{defaults.lora_r}, {defaults.lora_dropout:g}, all-linear"
    assert rows[-2][3] == "12, 0.1, q_proj,v_proj"
    assert len(inference) == len(INFERENCE_SWEEP) and inference[0][0] == "no limit"
    assert sum("(CPU default)" in r[0] for r in inference) == 1
    assert all(float(r[1]) > 0 and float(r[3]) > 0 for r in inference)
    assert all(float(r[4]) > 0 and float(r[7]) > 0 for r in rows)
    padding = {m: {float(r[6]) for r in rows if r[1] == "16" and r[2] == m} for m in ("1", "8")}
    assert len(padding["1"]) == len(padding["8"]) == 1  # the same batches in every batch-16 setting
    assert 1.0 <= padding["1"].pop() < padding["8"].pop()  # exact widths compute fewer tokens than rounding


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_profile_shapes_times_each_batch_shape_and_fits_a_line(tmp_path: Path):
    text, table = profile_step("shapes", 3000, tmp_path)  # enough rows for 16 of each width
    table = table[1:]  # after the header
    assert [(r[0], int(r[1])) for r in table] == [(f"{n} x {w}", n * w) for n, w in SHAPES]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in table)
    assert re.search(r"a step costs -?[\d.]+ s plus -?[\d.]+ ms per computed token", text)
    ceiling = r"With no fixed cost at all that step would be -?[\d.]+x as fast, .* \(([\d.]+) tokens\) -?[\d.]+x"
    found = re.search(ceiling, text)
    assert found and float(found.group(1)) > 16  # the `labels` question lengthens every row
    # Activations grow with the tokens of a pass: twice the rows of one width keep more for backward.
    saved = {r[0]: float(r[4]) for r in table}
    assert 0 < saved["1 x 16"] < saved["2 x 16"] < saved["4 x 16"] < saved["8 x 16"] < saved["16 x 16"]
    assert re.search(r"Half the matmul peak needs .* of at least \d+ computed tokens|no step size reaches half", text)


def test_the_matmul_peak_is_measured_within_its_time_budget():
    """On a CPU without bf16 matmul units one 2048 x 2048 product takes tens of seconds: the measurement
    shrinks its products rather than spending minutes before a tiny-model run even starts."""
    from benchmarks.hardware import bf16_matmul_gflops

    start = time.perf_counter()
    assert bf16_matmul_gflops(seconds=0.5) > 0
    assert time.perf_counter() - start < 15


def test_half_peak_bound_solves_the_fitted_line():
    # 0.3 s fixed + 1 ms per token, 0.8 ms of useful work per token at the peak: N x 0.8 = 0.5 (0.3 + N x 1).
    text = half_peak_bound(0.3, 1e-3, 0.8e-3, 0.5)
    assert "at least 500 computed tokens" in text and "about 250 MB" in text
    assert "no step size" in half_peak_bound(0.3, 1e-3, 0.4e-3, 0.5)


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_profile_optimizer_times_fused_and_foreach_adamw(tmp_path: Path):
    text, table = profile_step("optimizer", 16, tmp_path)
    assert [r[0] for r in table[1:]] == ["fused (lsllama)", "foreach"]
    assert all(float(r[1]) > 0 for r in table[1:])
    assert re.search(r"AdamW over the \d+ trainable tensors", text)


def test_readme_and_docs_tables_are_the_files_the_benchmarks_wrote():
    proc = subprocess.run(
        [sys.executable, "scripts/readme_tables.py", "--check"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_tables_replace_an_include_block_with_its_file(tmp_path: Path):
    sys.path.insert(0, str(REPO / "scripts"))
    from readme_tables import render

    text = "intro\n<!-- include: benchmarks/results/speed_quick.md -->\nstale figures\n<!-- /include -->\nafter\n"
    rendered = render(text)
    table = (REPO / "benchmarks" / "results" / "speed_quick.md").read_text().strip()
    assert "stale figures" not in rendered and table in rendered
    assert rendered.startswith("intro\n") and rendered.endswith("<!-- /include -->\nafter\n")
    assert render(rendered) == rendered


def test_readme_tables_fill_the_docs_pages_and_demote_included_headings():
    sys.path.insert(0, str(REPO / "scripts"))
    from readme_tables import pages, render

    assert REPO / "docs" / "results.md" in pages() and REPO / "README.md" in pages()
    text = "<!-- include: benchmarks/results/paper.md demote=2 -->\n<!-- /include -->\n"
    rendered = render(text, "docs/results.md")
    assert "\n### Label-supervised finetuning at small scale" in rendered and "\n#### Findings" in rendered
    assert "\n# Label" not in rendered
    docs_blocks = sum(
        (REPO / "docs" / name).read_text().count("<!-- include: ") for name in ("results.md", "performance.md")
    )
    assert docs_blocks >= 10  # the benchmark tables moved out of the README stay generated


def test_headline_table_is_computed_from_the_benchmark_records():
    sys.path.insert(0, str(REPO / "scripts"))
    from readme_tables import HEADLINE, headline

    records = REPO / "benchmarks" / "results"
    main = json.loads((records / "main_job.json").read_text())
    speed = json.loads((records / "speed_quick.json").read_text())
    table = headline()
    assert f"**{main['validation_accuracy']:.3f}**" in table
    assert f"{speed['official_accuracy']:.3f}" in table
    assert HEADLINE.read_text() == table
    assert "<!-- include: benchmarks/results/headline.md -->" in (REPO / "README.md").read_text()


def test_paper_comparison_table_shows_each_methods_runs_and_says_when_some_are_missing():
    sys.path.insert(0, str(REPO / "scripts"))
    from readme_tables import paper_headline

    def cell(dataset: str, method: str, mean: float, n: int) -> dict:
        return {"dataset": dataset, "method": method, "mean": mean, "std": 0.01 if n > 1 else 0.0, "n": n}

    sst2 = {"title": "SST-2", "metric": "accuracy", "reported_split": "validation", "n": 300, "majority_class": 0.55}
    conll = {**sst2, "title": "CoNLL-2003", "metric": "f1", "majority_class": None}
    record = {
        "command": "python benchmarks/paper.py --recipe defaults", "machine": "m", "date": "d", "rows": 300,
        "seeds": [42, 43, 44], "planned": 9, "finished": 8, "datasets": {"sst2": sst2, "conll2003": conll},
        "cells": [cell("sst2", "ls-causal-last", 0.86, 3), cell("sst2", "sft", 0.85, 2),
                  cell("sst2", "tfidf", 0.59, 1), cell("conll2003", "ls-bidir", 0.8, 3)],
    }  # fmt: skip
    table = paper_headline(record)
    row = "| SST-2 (accuracy, validation, n=300) | 0.860 ± 0.010 (3) | 0.850 ± 0.010 (2) | 0.590 (1) | 0.550 |"
    assert row in table
    assert "partial: 8 of 9 runs" in table
    assert "CoNLL" not in table  # the token task has no row in a sentence comparison
    del record["cells"][1]
    assert "| 0.590 (1) |" in paper_headline(record) and "| — |" in paper_headline(record)


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_small_data_scores_the_label_word_head_at_step_0_and_resumes_from_its_cache(tmp_path: Path):
    command = [sys.executable, "-m", "benchmarks", "small_data", "--model", "tiny-random", "--datasets", "sst2"]
    command += ["--rows", "24", "--eval-rows", "16", "--seeds", "1", "--variants", "names-1epoch", "random", "codes"]
    command += ["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = {r["variant"]: r for r in json.loads((tmp_path / "out" / "small_data.json").read_text())["runs"]}
    names, random = runs["names-1epoch"], runs["random"]
    assert names["step0"] is not None and [step for step, _ in names["curve"]] == [0, 2]  # 24 rows: 2 steps
    assert random["step0"] is None and [step for step, _ in random["curve"]] == [2]  # 1 epoch: --min-steps 0
    assert "label-word head, 1 epoch" in (tmp_path / "out" / "small_data.md").read_text()
    # codes: the head starts from the words "0" and "1", as it would for a data set of integer labels
    codes_run = tmp_path / "cache" / "tiny-random" / "sst2-24-codes-s1"
    assert yaml.safe_load((codes_run / "config.yaml").read_text())["data"]["label_descriptions"] == {
        "negative": "0",
        "positive": "1",
    }
    assert runs["codes"]["step0"] is not None and runs["codes"]["steps"] == 100  # the default step floor
    assert "label-word head on codes at step 0" in (tmp_path / "out" / "small_data.md").read_text()
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0
    assert (
        json.loads(again.stdout.strip().splitlines()[-1])["runs"]
        == json.loads((tmp_path / "out" / "small_data.json").read_text())["runs"]
    )


def test_small_data_shows_each_starting_points_step_0_score_once():
    """The step floor and the head's learning rate do not change the model before training: variants that
    differ only in them share one step-0 row; a template starts elsewhere and gets its own."""
    from benchmarks.small_data import VARIANTS, table

    runs = [
        {"dataset": "sst2", "rows": 300, "variant": variant, "seed": seed, "accuracy": 0.8, "step0": step0}
        for variant, step0 in (
            ("random", None),
            ("names-1epoch", 0.6),
            ("names", 0.6),
            ("names+headlr", 0.6),
            ("names+template", 0.7),
            ("names+labels", 0.65),
            ("codes", 0.5),
            ("task+labels", 0.75),
        )
        for seed in (0, 1)
    ]
    lines = table(runs, ["sst2"], [300], list(VARIANTS)).splitlines()
    step0 = [line for line in lines if "at step 0" in line]
    assert step0 == [
        "|   label-word head at step 0, before training | 0.600 ± 0.000 (2 seeds) |",
        "|   label-word head, generic template at step 0, before training | 0.700 ± 0.000 (2 seeds) |",
        "|   label-word head, `labels` template at step 0, before training | 0.650 ± 0.000 (2 seeds) |",
        "|   label-word head on codes at step 0, before training | 0.500 ± 0.000 (2 seeds) |",
        "|   label-word head, `labels` question with the task's words at step 0, before training"
        " | 0.750 ± 0.000 (2 seeds) |",
    ]
    assert lines.index(step0[0]) == lines.index(f"| {VARIANTS['names-1epoch'][0]} | 0.800 ± 0.000 (2 seeds) |") + 1
    assert f"| {VARIANTS['random+template'][0]} | — |" in lines  # not run: shown as missing


def test_small_data_task_question_names_each_data_sets_task_as_the_sft_prompt_does():
    from benchmarks.small_data import variant_flags

    [flag, template] = variant_flags("task+labels", "ag_news")
    assert flag == "--template" and template.startswith("What is the topic of the news article below? Possible labels:")
    assert variant_flags("task+labels", "sst2")[1].endswith("\\nText: {text}\\nLabel:")


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_ablation_compares_each_value_over_seeds_and_resumes_from_its_cache(tmp_path: Path):
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "ablation",
        "--model",
        "tiny-random",
        "--setting",
        "model.lora_r",
        "--values",
        "2",
        "4",
        "--data",
        "sst2",
        "--seeds",
        "1",
        "2",
        "--train-rows",
        "24",
        "--eval-rows",
        "16",
        "--out",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "cache"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "ablation_lora_r.json").read_text())
    assert [(row["value"], row["metric"]) for row in summary["table"]] == [(2, "accuracy"), (4, "accuracy")]
    assert sorted((r["value"], r["seed"]) for r in summary["runs"]) == [(2, 1), (2, 2), (4, 1), (4, 2)]
    assert all(0 <= r["score"] <= 1 and r["train_samples_per_s"] > 0 for r in summary["runs"])
    assert len(list((tmp_path / "cache").iterdir())) == 4  # one run folder per value and seed
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["table"] == summary["table"]


@pytest.mark.slow  # compiles the model cold: over a minute of CI on two cores
@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_compile_payoff_times_both_runs_and_resumes_from_its_cache(tmp_path: Path):
    command = [sys.executable, "-m", "benchmarks", "compile_payoff", "--model", "tiny-random", "--steps", "2"]
    command += ["--out", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "compile_payoff.json").read_text())
    assert (summary["eager"]["compiled"], summary["compiled"]["compiled"]) == (False, True)
    assert summary["eager"]["steps"] == summary["compiled"]["steps"] == 2
    assert summary["speedup_including_compilation"] == summary["eager"]["seconds"] / summary["compiled"]["seconds"]
    assert (
        f"`python -m benchmarks compile_payoff --model tiny-random --steps 2 --out {tmp_path}` — "
        in (tmp_path / "compile_payoff.md").read_text()
    )
    cached = tmp_path / "cache" / "tiny-random-2-compile.json"
    cached.write_text(json.dumps({**summary["compiled"], "seconds": 1234.0}))
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["compiled"]["seconds"] == 1234.0


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_ablation_of_a_package_constant_sets_it_per_run_and_keys_the_cache_on_it(tmp_path: Path, monkeypatch):
    from benchmarks import ablation

    from lsllama.data import batching

    before = batching.PAD_MULTIPLE
    seen: list[int] = []
    real_train = ablation.train_run

    def spy(cfg, run_dir, **kwargs):
        seen.append(batching.PAD_MULTIPLE)  # what the run's code reads
        return real_train(cfg, run_dir, **kwargs)

    monkeypatch.setattr(ablation, "train_run", spy)
    runs = [
        ablation.run("tiny-random", "sst2", "lsllama.data.batching.PAD_MULTIPLE", value, 1, 16, 8, tmp_path)
        for value in (1, 8)
    ]
    assert seen == [1, 8] and before == batching.PAD_MULTIPLE
    assert [r["value"] for r in runs] == [1, 8]
    assert len(list(tmp_path.iterdir())) == 2  # same config, different constant: two cached runs
    with pytest.raises(SystemExit, match="has no constant NOT_THERE"):
        ablation.constant_owner("lsllama.data.batching.NOT_THERE")


def test_speed_benchmark_workers_import_only_what_their_own_recipe_needs():
    """Peak RSS counts every library a process imports: the lsllama workers read the official recipe's
    adapter settings, and must not load its training stack (datasets, Trainer) with them."""
    script = (
        "import sys; sys.path.insert(0, '.')\n"
        "import benchmarks.speed\n"
        "from benchmarks.official_recipe import ADAPTER\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'datasets', 'sklearn', 'pandas'}))\n"
        "print('transformers.trainer' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[]", "False"]


def test_breakdown_tells_frozen_weight_matmuls_from_lora_ones():
    frozen = {(1536, 576), (576, 1536)}
    assert op_category("aten::mm", [[8, 576], [576, 1536]], frozen, 16) == "matmuls with frozen weights"
    assert op_category("aten::mm", [[8, 1536], [1536, 576]], frozen, 16) == "matmuls with frozen weights"
    assert op_category("aten::mm", [[8, 576], [576, 16]], frozen, 16) == "LoRA matmuls"
    assert op_category("aten::mm", [[8, 576], [576, 2]], frozen, 16) == "other"  # the head
    assert op_category("aten::bmm", [[9, 8, 64], [9, 64, 8]], frozen, 16) == "attention"
    assert op_category("aten::_fused_adamw_", [], frozen, 16) == "optimizer and clipping"
    assert op_category("MmBackward0", [], frozen, 16) == "autograd bookkeeping"
    assert op_category("aten::_to_copy", [[8, 576]], frozen, 16) == "copies and dtype casts"
    assert op_category("aten::transpose", [[8, 576]], frozen, 16) == "views, transposes and allocation"


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_profile_breakdown_sums_a_step_by_category(tmp_path: Path):
    _, table = profile_step("breakdown", 300, tmp_path)
    rows = {r[0]: r[1:] for r in table[1:]}
    assert list(rows) == [*BREAKDOWN_ORDER, "whole step"]
    for column in (0, 2):  # seconds of the one-row step, then of the 16-row step
        parts = sum(float(rows[c][column]) for c in BREAKDOWN_ORDER)
        assert parts == pytest.approx(float(rows["whole step"][column]), abs=0.005)  # cells rounded to ms
    assert int(rows["matmuls with frozen weights"][1]) > 0 and int(rows["LoRA matmuls"][1]) > 0  # calls
    assert float(rows["whole step"][2]) > float(rows["whole step"][0]) * 0.9  # 16 rows cost no less than one


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_onednn_log_counts_primitives_created_once_and_run_every_call():
    from benchmarks.profile_step import count_primitives, onednn_verbose

    images, weight = torch.randn(8, 3, 64, 64), torch.randn(16, 3, 3, 3)  # a convolution oneDNN runs on CPU
    first = count_primitives(onednn_verbose(lambda: torch.nn.functional.conv2d(images, weight)))
    again = count_primitives(onednn_verbose(lambda: torch.nn.functional.conv2d(images, weight)))
    assert first["convolution"]["created"] == 1 and first["convolution"]["executed"] == 1
    assert again["convolution"] == {**again["convolution"], "created": 0, "executed": 1}  # cached primitive
    assert again["convolution"]["ms"] > 0


@pytest.mark.skipif(not (DATA_ROOT / "sst2").is_dir(), reason=f"no data under {DATA_ROOT}")
def test_profile_onednn_records_each_steps_primitives_or_says_none_ran(tmp_path: Path):
    text, table = profile_step("onednn", 300, tmp_path)
    steps = json.loads((tmp_path / "profile_onednn.json").read_text())["steps"]
    assert [(s["rows"], s["width"]) for s in steps] == [(1, 8), (16, 8)]
    shown = table[1:]  # after the header: one row per step and primitive kind
    assert len(shown) == sum(len(s["kinds"]) for s in steps)
    assert bool(shown) != ("No oneDNN primitive ran" in text)


def test_speed_report_states_the_memory_rule_from_the_measured_peaks():
    from benchmarks import record, speed

    def measured(rss_mb: float) -> dict:
        return {
            **dict.fromkeys(["train_seconds", "eval_seconds", "train_samples", "eval_samples"], 1.0),
            **dict.fromkeys(["train_real_tokens", "train_computed_tokens", "eval_real_tokens"], 10.0),
            "accuracy": 0.5,
            "peak_rss_mb": rss_mb,
        }

    for ours, verdict in ((1400.0, "within"), (1600.0, "above")):
        runs = {"official": measured(1000.0), "lsllama": measured(ours), "lsllama_adapter": measured(900.0)}
        summary = {**speed.compare(runs, 1000, 1.0), "rows": 8, "epochs": 1.0, "runs": runs}
        assert summary["peak_rss_ratio"] == ours / 1000.0
        text = speed.markdown(summary, record.Record.start("benchmarks.speed", []))
        assert f"{ours / 1000:.2f}x the official recipe's: {verdict} the 1.5x rule" in text


def test_time_to_accuracy_reports_the_first_evaluation_at_the_target_and_says_when_one_never_gets_there():
    from benchmarks import record
    from benchmarks.time_to_accuracy import report

    evals = [{"step": 25, "accuracy": 0.80, "seconds": 100.0}, {"step": 50, "accuracy": 0.86, "seconds": 170.0}]
    summary = {"target": 0.85, "rows": 2000, "eval_every": 25, "official_rows": 2000}
    summary |= {"lsllama": {"evals": evals, "seconds": 300.0}, "official": {"accuracy": 0.52, "seconds": 900.0}}
    text = report(summary, record.Record.start("benchmarks.time_to_accuracy", []))
    assert "| lsllama (defaults) | 170 (step 50) | 0.860 | 300 |" in text
    assert "| official recipe | not reached | 0.520 | 900 |" in text
    assert "does not get there" in text
    summary["official"]["accuracy"] = 0.9
    assert "| official recipe | 900 | 0.900 | 900 |" in report(
        summary, record.Record.start("benchmarks.time_to_accuracy", [])
    )


def test_ner_summary_gives_each_variant_its_mean_and_spread_over_seeds():
    from benchmarks.ner import summarize, table

    def run(variant: str, seed: int, validation: float, test: float) -> dict:
        per_type = {"PER": test, "ORG": test, "LOC": test, "MISC": test}
        return {"variant": variant, "seed": seed, "validation_f1": validation, "test_f1": test,
                "test_per_type_f1": per_type, "train_seconds": 100.0 + seed}  # fmt: skip

    rows = [run("bidirectional", 42, 0.86, 0.83), run("bidirectional", 43, 0.74, 0.71), run("causal", 42, 0.64, 0.62)]
    summary = summarize(rows, ["bidirectional", "causal", "layerwise"])
    assert [s["variant"] for s in summary] == ["bidirectional", "causal"]  # no runs, no row
    bi, causal = summary
    assert bi["seeds"] == [42, 43] and bi["validation_f1_mean"] == pytest.approx(0.80)
    assert bi["validation_f1_std"] == pytest.approx(0.0848528, abs=1e-6) and causal["validation_f1_std"] is None
    lines = table(summary)
    assert lines[2].startswith("| bidirectional | 42, 43 | 0.800 ± 0.085 | 0.770 ± 0.085 |")
    assert lines[3].startswith("| causal | 42 | 0.640 | 0.620 |")


def test_an_ablation_of_one_seed_gives_no_spread_and_of_several_gives_theirs():
    from benchmarks.ablation import markdown, table
    from benchmarks.record import Record

    runs = [{"dataset": "sst2", "value": v, "seed": s, "metric": "accuracy", "score": v / 10 + s / 100,
             "train_samples_per_s": 1.0} for v in (1, 2) for s in (1, 3)]  # fmt: skip
    summary = {"model": "m", "train_rows": 8, "eval_rows": 8, "setting": "model.lora_r", "seeds": [1, 3]}
    both = markdown({**summary, "table": table(runs, ["sst2"], [1, 2])}, Record("cmd"))
    assert "| sst2 | 2 | accuracy | 0.220 ± 0.014 | 1.0 |" in both
    first = [r for r in runs if r["seed"] == 1]
    one = markdown({**summary, "seeds": [1], "table": table(first, ["sst2"], [1, 2])}, Record("cmd"))
    assert "| sst2 | 2 | accuracy | 0.210 (1 seed) | 1.0 |" in one and "±" not in one.split("\n", 1)[1]


def test_ablation_values_are_yaml_scalars_and_exponents_are_numbers():
    from benchmarks.ablation import scalar

    assert scalar("1e-3") == 0.001 and scalar("5e-4") == 0.0005  # YAML 1.1 alone reads these as strings
    assert scalar("0.05") == 0.05 and scalar("16") == 16 and scalar("true") is True
    assert scalar("all-linear") == "all-linear" and scalar("null") is None and scalar("nan") == "nan"
