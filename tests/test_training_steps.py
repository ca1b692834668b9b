"""How many optimizer steps a run makes, what it keeps to resume exactly, and what it says about its data."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lsllama import build_config
from lsllama.training import loop

from .conftest import toy_rows, write_jsonl


def toy_config(folder, **train):
    return build_config(
        task="sequence",
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32", "head_init": "random"},  # no step-0 evaluation
            "data": {"data": str(folder), "template": "none", **train.pop("data", {})},  # the rows' own lengths
            # The steps these tests count are the epochs' (test_the_default_step_floor tests the floor).
            "train": {
                "epochs": 1,
                "min_steps": 0,
                "learning_rate": 3e-3,
                "batch_size": 8,
                "tensorboard": False,
                **train,
            },
        },
    )


def events(out, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (out / "metrics.jsonl").open()) if e["event"] == kind]


def test_gradients_synchronise_once_per_optimizer_step_with_accumulation(toy_data, tmp_path, monkeypatch):
    """DeepSpeed's engine steps after every backward that accelerate runs with `sync_gradients` set: only a
    batch's last micro-batch may have it, or one "step" makes as many optimizer steps as micro-batches."""
    from accelerate import Accelerator

    flags: list[bool] = []
    backward = Accelerator.backward

    def spy(self, loss, **kwargs):
        flags.append(self.sync_gradients)
        return backward(self, loss, **kwargs)

    monkeypatch.setattr(Accelerator, "backward", spy)
    out = tmp_path / "run"
    loop.train_run(toy_config(toy_data, micro_batches=2), out, progress=False)
    steps = len(events(out, "train"))
    assert steps == 12 and len(flags) == 2 * steps  # 96 rows in batches of 8, each in 2 micro-batches
    assert flags == [False, True] * steps


def test_total_steps_count_every_epochs_own_plan(tmp_path, monkeypatch):
    """With a token budget each epoch's shuffle packs its own number of batches: the run is every epoch's."""
    data = tmp_path / "data"
    rows = [{**row, "text": row["text"] + " the movie" * (i % 13)} for i, row in enumerate(toy_rows(80, 1))]
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "validation.jsonl", toy_rows(20, 2))
    plans: dict[int, int] = {}
    batches = loop.train_batches

    def recording(lengths, batch_size, seed, epoch, max_tokens=None):
        plan = batches(lengths, batch_size, seed, epoch, max_tokens)
        plans[epoch] = len(plan)
        return plan

    monkeypatch.setattr(loop, "train_batches", recording)
    out = tmp_path / "run"
    loop.train_run(toy_config(data, epochs=2, batch_size=1, max_tokens=128), out, progress=False)
    assert plans[0] != plans[1]  # the case this test is about (pools of 64 rows, shuffled per epoch)
    train = events(out, "train")
    assert [sum(e["epoch"] == epoch for e in train) for epoch in (0, 1)] == [plans[0], plans[1]]
    assert len(train) == plans[0] + plans[1]
    assert [e["step"] for e in events(out, "eval")] == [plans[0], plans[0] + plans[1]]  # each epoch's end


def test_min_steps_reads_a_small_set_for_more_epochs_evaluating_each(toy_data, tmp_path):
    out = tmp_path / "run"
    results = loop.train_run(toy_config(toy_data, min_steps=27), out, progress=False).results
    train = events(out, "train")
    assert len(train) == results["global_step"] == 27  # 12 steps per epoch: two epochs and 3 steps
    assert [e["epoch"] for e in train] == [0] * 12 + [1] * 12 + [2] * 3
    evals = events(out, "eval")
    assert [e["step"] for e in evals] == [12, 24, 27]
    assert results["validation"]["accuracy"] == max(e["accuracy"] for e in evals)


def test_the_default_step_floor_reads_a_small_set_for_100_steps_evaluating_every_other_epoch(toy_data, tmp_path):
    """By default a small set is read until the run has made 100 steps (96 rows in batches of 12: 8 steps an
    epoch, 12 epochs and 4 steps), evaluated before training (the label-word head), at the end of every
    second epoch (13 epochs read: more than 8) and at the last step; the best evaluation's weights are kept."""
    from lsllama.config import TrainConfig

    assert TrainConfig().min_steps == 100
    cfg = build_config(
        task="sequence",
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            "data": {"data": str(toy_data)},
            "train": {"learning_rate": 3e-3, "batch_size": 12, "tensorboard": False},
        },
    )
    out = tmp_path / "run"
    results = loop.train_run(cfg, out, progress=False).results
    train = events(out, "train")
    assert len(train) == results["global_step"] == 100
    assert [e["epoch"] for e in train] == [step // 8 for step in range(100)]
    evals = events(out, "eval")
    assert [e["step"] for e in evals] == [0, *range(16, 97, 16), 100]
    best = max(evals, key=lambda e: e["accuracy"])  # the first of equals is kept
    assert (results["best_step"], results["validation"]["accuracy"]) == (best["step"], best["accuracy"])


def test_epochs_the_floor_adds_are_evaluated_at_most_eight_times_and_asked_for_epochs_each():
    def plan(epoch: int) -> list[list[int]]:
        return [[0]] * 7  # 100 rows in batches of 16

    assert loop.FLOOR_EPOCH_EVALUATIONS == 8
    assert loop.epochs_per_evaluation(plan, 1.0, 100) == 2  # 15 epochs to the floor: every second
    assert loop.epochs_per_evaluation(plan, 1.0, 56) == 1  # 8 epochs: each
    assert loop.epochs_per_evaluation(plan, 1.0, 57) == 2  # a ninth, begun
    assert loop.epochs_per_evaluation(plan, 20.0, 140) == 1  # epochs the user asked for: each, however many
    assert loop.epochs_per_evaluation(plan, 20.0, 300) == 6  # the floor beyond them: 43 epochs read


def test_min_steps_below_the_epochs_steps_changes_nothing():
    plan = {0: 12, 1: 10, 2: 11}
    assert loop.planned_steps(lambda epoch: [[0]] * plan[epoch], 2.0, 5) == 22
    assert loop.planned_steps(lambda epoch: [[0]] * plan[epoch], 1.5, 0) == 12 + 5
    assert loop.planned_steps(lambda epoch: [[0]] * plan[epoch], 1.0, 30) == 30


def test_head_learning_rate_is_its_own_param_group(make_model):
    model = make_model().train()
    optimizer = loop._optimizer(model, lr=1e-3, weight_decay=0.1, head_lr=2e-2)
    head = {id(p) for p in model.score.parameters()}
    for group in (g for g in optimizer.param_groups if g["params"]):
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1 and group["lr"] == (2e-2 if in_head == {True} else 1e-3)
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert head <= set(grouped)


def test_head_learning_rate_flag_reaches_the_config(toy_data):
    from typer.testing import CliRunner

    from lsllama.cli import app

    data = str(toy_data)
    result = CliRunner().invoke(app, ["train", "--output", "x", "--data", data, "--head-lr", "0", "--min-steps", "3"])
    assert result.exit_code == 2 and "--head-lr must be positive, got 0.0" in result.output
    result = CliRunner().invoke(app, ["train", "--output", "x", "--data", data, "--min-steps", "-1"])
    assert result.exit_code == 2 and "--min-steps must be >= 0" in result.output


def test_truncated_training_texts_are_counted_and_measured(toy_data, tokenizer, tmp_path, capsys):
    from lsllama.data.encoding import sequence_layout

    out = tmp_path / "run"
    results = loop.train_run(toy_config(toy_data, data={"max_length": 8}), out, progress=False).results
    layout = sequence_layout(tokenizer)
    budget = 8 - len(layout.prefix) - len(layout.suffix)
    texts = [json.loads(line)["text"] for line in (toy_data / "train.jsonl").open()]
    over = [n - budget for n in map(len, tokenizer(texts, add_special_tokens=False)["input_ids"]) if n > budget]
    assert over  # the case this test is about
    truncated = results["truncated"]
    assert (truncated["examples"], truncated["of"], truncated["tokens_cut_max"]) == (len(over), 96, max(over))
    assert truncated["tokens_cut_mean"] == pytest.approx(sum(over) / len(over), abs=0.06)
    said = capsys.readouterr()
    assert f"{len(over)} of 96 training texts are longer than --max-length 8 and were cut" in said.out + said.err
    assert json.loads((out / "results.json").read_text())["truncated"] == truncated


def test_checkpoints_keep_every_process_rng_state(tmp_path):
    from lsllama.run_folder import RunFolder
    from lsllama.training.checkpoint import TrainerState, load_checkpoint, rng_state, save_checkpoint

    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(rng_state())
    weights = {"w": torch.ones(2)}
    path = save_checkpoint(RunFolder(tmp_path), TrainerState(global_step=3), weights, {}, {}, 2, states)
    checkpoint = load_checkpoint(path, {"w"})
    for rank, seed in ((0, 1), (1, 2)):
        checkpoint.restore_rng(rank)
        drawn = torch.rand(3)
        torch.manual_seed(seed)
        torch.testing.assert_close(drawn, torch.rand(3))


class Crash(Exception):
    pass


def test_a_resumed_run_decides_compilation_from_the_whole_run(toy_data, tmp_path, monkeypatch):
    asked: list[int] = []
    monkeypatch.setattr(loop, "worth_compiling", lambda cfg, model, steps, device, world: asked.append(steps) or False)
    save = loop.save_checkpoint

    def crash_after_first(*args, **kwargs):
        save(*args, **kwargs)
        raise Crash

    cfg, out = toy_config(toy_data, epochs=2, checkpoint_every=5), tmp_path / "run"
    monkeypatch.setattr(loop, "save_checkpoint", crash_after_first)
    with pytest.raises(Crash):
        loop.train_run(cfg, out, progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", save)
    results = loop.train_run(cfg, out, progress=False).results
    assert results["global_step"] == 24 and asked == [24, 24]


def test_resuming_puts_back_the_best_weights_of_the_checkpoint(toy_data, tmp_path):
    """A run killed after writing new best weights but before its checkpoint resumes with the checkpoint's
    best weights, which match the best step it resumes with."""
    out = tmp_path / "run"
    cfg = toy_config(toy_data, epochs=2, keep_checkpoints_after=True)
    loop.train_run(cfg, out, progress=False)
    best = (out / "model.safetensors").read_bytes()
    (out / "results.json").unlink()  # killed before the end, after its last checkpoint ...
    orphan = {k: torch.zeros_like(v) for k, v in load_file(str(out / "model.safetensors")).items()}
    save_file(orphan, str(out / "model.safetensors"))  # ... having written weights that checkpoint never saw
    loop.train_run(cfg, out, progress=False)
    assert (out / "model.safetensors").read_bytes() == best
    assert len(events(out, "eval")) == 2  # the checkpoint's evaluation is not run (and logged) again


def test_a_finished_run_says_so_and_keeps_no_checkpoints(toy_data, tmp_path):
    from typer.testing import CliRunner

    from lsllama.cli import app

    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        "tiny-random",
        "--precision",
        "fp32",
        "--quiet",
        "--min-steps",  # epochs alone: 96 rows are 6 steps of 16
        "0",
        "--data",
        str(toy_data),
        "-o",
        str(out),
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads((out / "results.json").read_text())["global_step"] == 6
    assert (out / "model.safetensors").is_file() and not (out / "checkpoints").exists()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "finished" in again.stderr and "--no-resume" in again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1]) == json.loads(first.stdout.strip().splitlines()[-1])


def test_every_event_carries_its_wall_time_so_time_to_accuracy_can_be_read(toy_data, tmp_path):
    import time

    start = time.time()
    out = tmp_path / "run"
    loop.train_run(toy_config(toy_data, epochs=2), out, progress=False)
    logged = [e for e in map(json.loads, (out / "metrics.jsonl").open())]
    times = [e["wall_time"] for e in logged]
    assert start <= times[0] and times == sorted(times) and times[-1] <= time.time()
    assert {e["event"] for e in logged} == {"train", "eval"}
