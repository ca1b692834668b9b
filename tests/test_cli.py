"""The command line itself: quick to start, consistent options, one-line errors, fast failure offline.

Startup time is not timed here (a shared machine makes timings flaky): scripts/cli_startup.py times it.
What makes it fast is checked instead: importing the CLI loads neither torch nor transformers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from lsllama.cli import app
from lsllama.config import DataConfig, ModelConfig, TrainConfig

from .conftest import REPO, toy_rows, write_jsonl

runner = CliRunner()


def test_importing_the_cli_loads_no_torch_transformers_or_peft():
    code = "import sys, lsllama.cli; print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["train", "-h"], ["predict", "-h"]])
def test_short_and_long_help(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("lsllama "), result.output


def test_train_help_names_every_option_in_full_with_help_text_and_config_defaults():
    help_text = runner.invoke(app, ["train", "--help"], terminal_width=80).output
    click_command = typer.main.get_command(app).commands["train"]
    for param in click_command.params:
        if getattr(param, "hidden", False):  # an old name kept working
            continue
        for name in param.opts:
            assert name in help_text, f"{name} missing or cut off in the help"
        assert param.help, f"{param.opts[0]} has no help text"
    # the defaults shown come from config.py, not from numbers typed into the CLI
    assert f"default {TrainConfig().learning_rate:g}" in help_text
    assert f"default {ModelConfig().lora_r})" in help_text
    assert f"(default {DataConfig().text_column})" in help_text
    min_steps = help_text[help_text.index("--min-steps") : help_text.index("--head-lr")]
    assert f"(default {TrainConfig().min_steps})" in min_steps
    assert "<last|mean|max>" in help_text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["evaluate", "runs/none", "--split", "testing"], ["--split", "testing", "validation"]),
        (["train", "-o", "x", "--pooling", "median"], ["--pooling", "median"]),
        (["predict", "runs/none", "-i", "a.txt", "-o", "b.jsonl", "--format", "xml"], ["--format", "xml"]),
    ],
)
def test_unknown_choices_are_rejected_by_the_parser_in_one_line(args, words):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    for word in words:
        assert word in errors[0]


def test_a_question_with_no_template_to_ask_it_is_a_one_line_error_that_writes_nothing(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", toy_rows(8, 1))
    args = ["train", "--data", str(tmp_path / "train.jsonl"), "-o", str(tmp_path / "run"), "--preset", "paper"]
    result = runner.invoke(app, [*args, "--question", "Why?"])
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(errors) == 1, result.stderr
    assert "--question" in errors[0] and "--preset paper" in errors[0]
    assert not (tmp_path / "run").exists()


def test_debug_works_after_the_subcommand(tmp_path):
    args = ["train", "--model", "tiny-random", "--quiet", "--data", str(tmp_path / "none.jsonl"), "-o", str(tmp_path)]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 2 and "error: --data" in plain.stderr
    debug = runner.invoke(app, [*args, "--debug"])
    assert type(debug.exception).__name__ == "UsageError"


def test_evaluate_takes_max_eval_samples_as_train_does_and_keeps_the_old_name_hidden():
    help_text = runner.invoke(app, ["evaluate", "--help"]).output
    assert "--max-eval-samples" in help_text and "--max-samples" not in help_text
    result = runner.invoke(app, ["evaluate", "no/such/run", "--max-samples", "5"])
    assert "No such option" not in result.output and "run folder not found" in result.stderr


def test_unknown_model_name_fails_at_once_offline_with_the_closest_built_in_name(monkeypatch):
    from huggingface_hub import constants

    from lsllama.errors import UsageError
    from lsllama.modeling.loading import model_source

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError, match="Did you mean 'tiny-random'") as info:
        model_source("tiny_random")
    assert "offline" in str(info.value) and "smollm2-135m" in str(info.value)


def test_hub_probe_reports_an_unreachable_host_instead_of_retrying(monkeypatch):
    from huggingface_hub import constants

    from lsllama.hub import offline_reason

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://no-such-host.invalid")
    assert "no-such-host.invalid" in offline_reason()


def test_unknown_data_name_offline_suggests_a_local_data_set_and_lists_the_data_root(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from lsllama.data.dataset import resolve_location
    from lsllama.errors import UsageError

    (tmp_path / "sst2").mkdir()
    (tmp_path / "conll2003").mkdir()
    monkeypatch.setenv("LSLLAMA_DATA", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError) as info:
        resolve_location(DataConfig(data="sst3"))
    message = str(info.value)
    assert "Did you mean 'sst2'?" in message and str(tmp_path) in message and "conll2003" in message


def test_the_default_data_root_is_beside_the_repository_from_any_working_folder(tmp_path):
    shared = REPO.parent / "shared" / "data"
    if not shared.is_dir():
        pytest.skip(f"no {shared}")
    env = {k: v for k, v in os.environ.items() if k != "LSLLAMA_DATA"}
    env["PYTHONPATH"] = str(REPO / "src")
    code = "from lsllama.data.dataset import data_root; print(data_root())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert Path(out.stdout.strip()) == shared, out.stderr
    env["LSLLAMA_DATA"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert Path(out.stdout.strip()) == tmp_path


def test_transformers_progress_bars_are_hidden_while_loading_and_restored_after():
    from transformers.utils import logging as transformers_logging

    from lsllama.modeling.loading import no_transformers_progress

    for before in (True, False):
        (transformers_logging.enable_progress_bar if before else transformers_logging.disable_progress_bar)()
        with no_transformers_progress():
            assert not transformers_logging.is_progress_bar_enabled()
        assert transformers_logging.is_progress_bar_enabled() is before
    transformers_logging.enable_progress_bar()


def test_loading_a_model_folder_shows_no_transformers_progress_bar(tmp_path, tokenizer, capfd):
    from transformers import AutoModel

    from lsllama.modeling.loading import load_backbone, tiny_random_config

    AutoModel.from_config(tiny_random_config(len(tokenizer), tokenizer.pad_token_id)).save_pretrained(tmp_path)
    capfd.readouterr()
    load_backbone(str(tmp_path), tokenizer)
    assert "Loading weights" not in capfd.readouterr().err


def test_set_reaches_any_setting_checked_against_its_dataclass():
    from lsllama.cli import parse_settings

    assert parse_settings(["model.lora_r=8", "train.learning_rate=1e-4", "model.lora_targets=[q_proj, v_proj]"]) == {
        "model": {"lora_r": 8, "lora_targets": ["q_proj", "v_proj"]},
        "train": {"learning_rate": 1e-4},
    }


@pytest.mark.parametrize(
    ("setting", "message"),
    [("lora_r=8", "SECTION.KEY=VALUE"), ("model.lora_rank=8", "unknown key"), ("model.lora_r=eight", "expected int")],
)
def test_a_bad_set_is_a_one_line_usage_error(setting, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lsllama.cli", "train", "--data", "sst2", "-o", str(tmp_path / "run"), "--set", setting],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_micro_batches_is_read_under_its_old_name_from_config_files_run_folders_and_set(tmp_path):
    """`train.micro_batches` was `gradient_accumulation` in 0.1, with the same meaning (it splits the batch)."""
    from lsllama.cli import parse_settings
    from lsllama.config import RunConfig, build_config
    from lsllama.run_folder import RunFolder

    (tmp_path / "config.yaml").write_text("train:\n  gradient_accumulation: 3\n")
    assert build_config(config_file=tmp_path / "config.yaml").train.micro_batches == 3
    assert RunFolder(tmp_path).config().train.micro_batches == 3
    assert parse_settings(["train.gradient_accumulation=2"]) == {"train": {"micro_batches": 2}}
    saved = RunConfig().resolved().to_yaml()
    assert "micro_batches: 1" in saved and "gradient_accumulation" not in saved


def test_the_paper_preset_is_the_official_scripts_recipe_and_flags_still_override_it():
    """Besides the official scripts' LoRA and optimiser settings, their random head and their epochs (no step
    floor): the package defaults that start from the label words would make it a different recipe."""
    from lsllama.config import build_config

    paper = build_config("sequence", preset="paper")
    assert (paper.model.head_init, paper.train.min_steps, paper.model.lora_r) == ("random", 0, 12)
    assert paper.model.lora_targets == ["q_proj", "v_proj"] and paper.train.learning_rate == 1e-4
    default = build_config("sequence")
    assert (default.model.head_init, default.train.min_steps) == (ModelConfig.head_init, TrainConfig.min_steps)
    chosen = build_config("sequence", preset="paper", overrides={"train": {"min_steps": 50}})
    assert chosen.train.min_steps == 50


def test_micro_batches_under_both_names_is_a_usage_error_naming_the_file(tmp_path):
    from lsllama.config import build_config
    from lsllama.errors import UsageError

    (tmp_path / "config.yaml").write_text("train:\n  gradient_accumulation: 3\n  micro_batches: 2\n")
    with pytest.raises(UsageError, match=r"config\.yaml: train\.gradient_accumulation is the old name of"):
        build_config(config_file=tmp_path / "config.yaml")


def test_the_old_gradient_accumulation_flag_is_hidden_and_sets_micro_batches(tmp_path):
    help_text = runner.invoke(app, ["train", "--help"], terminal_width=200).output
    assert "--micro-batches" in help_text and "--gradient-accumulation" not in help_text
    write_jsonl(tmp_path / "data" / "train.jsonl", toy_rows(8, 0))
    args = ["train", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "run"), "--gradient-accumulation", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--micro-batches must be positive, got 0" in result.stderr


def test_a_checkpoint_from_before_the_rename_resumes_with_its_micro_batches():
    from lsllama.training.checkpoint import TrainerState

    assert TrainerState.from_json({"global_step": 4, "gradient_accumulation": 4}).micro_batches == 4


def test_every_train_flag_sets_one_config_setting_of_the_dataclasses():
    """`train` derives its overrides from the config dataclasses: a new flag must name a field (or be converted)."""
    from lsllama.cli_options import COMMAND_ONLY, train_overrides

    click_command = typer.main.get_command(app).commands["train"]
    unset = {param.name: None for param in click_command.params}
    for param in click_command.params:
        if param.name in COMMAND_ONLY:
            continue
        given = "x" if param.name in ("lora_targets", "template", "labels") else True if param.is_flag else 2
        overrides = train_overrides({**unset, param.name: given})
        settings = [(section, key) for section, values in overrides.items() for key, v in values.items() if v]
        assert len(settings) == 1, f"--{param.name}: sets {settings}"


def test_train_flags_set_the_settings_they_name():
    from lsllama.cli_options import train_overrides

    click_command = typer.main.get_command(app).commands["train"]
    unset = {param.name: None for param in click_command.params}
    given = {"model": "tiny-random", "head_lr": 0.1, "keep_checkpoints": True, "load_in_8bit": True}
    given |= {"lora_targets": "q, v", "template": "{text}\\nLabel:", "gradient_accumulation": 2}
    overrides = train_overrides({**unset, **given})
    assert overrides["model"]["name"] == "tiny-random" and overrides["model"]["quantization"] == "8bit"
    assert overrides["model"]["lora_targets"] == ["q", "v"] and overrides["data"]["template"] == "{text}\nLabel:"
    assert overrides["train"]["head_learning_rate"] == 0.1 and overrides["train"]["keep_checkpoints_after"] is True
    assert overrides["train"]["micro_batches"] == 2 and "keep_checkpoints" not in overrides["train"]
