"""Training end to end on the tiny random model: it learns, it saves, it reloads identically."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lsllama import Classifier, build_config
from lsllama.run_folder import RunFolder


def toy_config(data, **train):
    return build_config(
        task="sequence",
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            "data": {"data": str(data)},
            "train": {
                "epochs": 4,
                "min_steps": 0,
                "learning_rate": 3e-3,
                "batch_size": 8,
                "tensorboard": False,
                **train,
            },
        },
    )


@pytest.fixture
def trained(toy_data, tmp_path):
    out = tmp_path / "run"
    clf = Classifier.train(toy_config(toy_data), out, progress=False)
    return clf, out


def test_loss_falls_on_a_learnable_toy_task(trained):
    _, out = trained
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.5 * first


def test_saved_run_reloads_to_identical_predictions(trained):
    clf, out = trained
    texts = ["a wonderful story", "terrible people and time", "the movie was really quite terrible"]
    reloaded = Classifier.load(out)
    np.testing.assert_array_equal(clf.predict_proba(texts), reloaded.predict_proba(texts))
    assert reloaded.labels.names == ["negative", "positive"]


def test_predictions_do_not_depend_on_batch_size(trained):
    clf, _ = trained
    texts = [f"{'wonderful' if i % 3 else 'terrible'} " + "the movie was " * (i % 9) for i in range(40)]
    one = clf.predict_proba(texts, batch_size=1)
    many = clf.predict_proba(texts, batch_size=32)
    assert clf.predict(texts, batch_size=1) == clf.predict(texts, batch_size=32)
    np.testing.assert_allclose(one, many, atol=1e-4)


def test_finished_run_is_not_retrained(trained, toy_data):
    _, out = trained
    before = (out / "model.safetensors").stat().st_mtime_ns
    Classifier.train(toy_config(toy_data), out, progress=False)
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert RunFolder(out).finished


def test_best_checkpoint_is_selected_on_validation(trained):
    _, out = trained
    results = json.loads((out / "results.json").read_text())
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals][:1] == [0]  # the head starts from the label words: scored before training
    assert len(evals) == 5
    assert results["validation"]["accuracy"] == max(e["accuracy"] for e in evals)
    assert results["validation"]["accuracy"] >= 0.9


def test_merged_inference_model_predicts_like_the_adapter_model(trained):
    _, out = trained
    texts = ["a wonderful story", "terrible people and time"]
    merged, adapters = Classifier.load(out), Classifier.load(out, merge=False)
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    np.testing.assert_allclose(merged.predict_proba(texts), adapters.predict_proba(texts), atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_adapters_take_bf16_activations_without_copies_and_still_get_gradients(make_model, precision):
    """Under bf16 autocast PEFT's cast of each adapted layer's input to the fp32 LoRA dtype is switched
    off (autocast decides the matmul dtype); LoRA weights stay fp32 and receive gradients either way."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = make_model(precision=precision).train()
    layers = [m for m in model.backbone.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and all(m.cast_input_dtype_enabled == (precision == "fp32") for m in layers)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    model(ids, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])).sum().backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert all(p.dtype == torch.float32 and p.grad is not None for p in lora.values())
    # B starts at zero, so only B's first gradient is non-zero
    assert all(p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)


def test_compiled_layers_train_like_eager_ones_and_save_the_same_weights(toy_data, tmp_path, monkeypatch):
    """`train.compile` unset: the toy run is too short to compile, unless the threshold is lowered to it."""
    from safetensors import safe_open

    from lsllama.modeling import compilation
    from lsllama.modeling.compilation import decoder_layers
    from lsllama.training.loop import train_run

    runs = {}
    for compiled in (False, True):
        if compiled:
            monkeypatch.setattr(compilation, "COMPILE_AFTER_STEPS", 2)
        trained = train_run(toy_config(toy_data, epochs=1), tmp_path / f"compiled-{compiled}", progress=False)
        results, model = trained.results, trained.model
        assert results["throughput"]["compiled"] is compiled
        events = [json.loads(line) for line in (tmp_path / f"compiled-{compiled}" / "metrics.jsonl").open()]
        runs[compiled] = ([e["loss"] for e in events if e["event"] == "train"], results, model)
    (eager_losses, eager_results, eager_model), (losses, results, model) = runs[False], runs[True]
    assert len(losses) == len(eager_losses) > 1
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-3)  # same steps, same updates
    assert results["validation"]["accuracy"] == eager_results["validation"]["accuracy"]
    assert model is None  # compiled layers are not handed back for inference: callers reload the run
    assert len(decoder_layers(eager_model.backbone)) == eager_model.backbone.config.num_hidden_layers
    names = {}
    for compiled in (False, True):
        with safe_open(tmp_path / f"compiled-{compiled}" / "model.safetensors", "pt") as f:
            names[compiled] = set(f.keys())
    assert names[True] == names[False]


def test_wide_cpu_batches_split_into_micro_batches_train_exactly_like_whole_ones(toy_data, tmp_path, monkeypatch):
    from lsllama.training import loop

    losses = {}
    for cap in (1 << 30, 8):  # 8 padded tokens: every batch of the toy data is split, most into 8 parts
        monkeypatch.setattr(loop, "CPU_MICRO_BATCH_TOKENS", cap)
        out = tmp_path / f"cap-{cap}"
        loop.train_run(toy_config(toy_data, epochs=1), out, progress=False)
        events = [json.loads(line) for line in (out / "metrics.jsonl").open()]
        losses[cap] = [e["loss"] for e in events if e["event"] == "train"]
    assert len(losses[8]) == len(losses[1 << 30]) > 1  # the same optimizer steps
    np.testing.assert_allclose(losses[8], losses[1 << 30], rtol=1e-4)


def test_micro_batch_count_follows_padded_tokens_per_process():
    import torch

    from lsllama.data.batching import PAD_MULTIPLE, padded_length
    from lsllama.data.encoding import Item
    from lsllama.training.loop import CPU_MICRO_BATCH_TOKENS, _parts_to_fit

    wide = [Item(input_ids=[1] * 100, example_index=i) for i in range(16)]
    padded = 16 * padded_length(100, PAD_MULTIPLE)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert _parts_to_fit(wide, 1, cpu) == -(-padded // CPU_MICRO_BATCH_TOKENS) > 1
    assert _parts_to_fit(wide, 4, cpu) == -(-padded // 4 // CPU_MICRO_BATCH_TOKENS)  # a quarter per process
    assert _parts_to_fit(wide[:2], 1, cpu) == 1
    assert _parts_to_fit(wide, 1, gpu) == 1


def test_optimizer_is_fused_on_cpu_and_steps_like_the_reference_adamw(make_model):
    """The fused kernel must take the same AdamW step (decay on matrices only) as the reference implementation."""
    import torch

    from lsllama.training.loop import _optimizer

    models = [make_model().train() for _ in range(2)]
    fused = _optimizer(models[0], lr=1e-2, weight_decay=0.1)
    assert all(group["fused"] for group in fused.param_groups)
    assert [group["weight_decay"] for group in fused.param_groups] == [0.1, 0.0]
    decay = [p for p in models[1].parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in models[1].parameters() if p.requires_grad and p.dim() < 2]
    reference = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2, foreach=False
    )
    ids, mask = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    for model, optimizer in zip(models, (fused, reference), strict=True):
        for _ in range(3):
            model(ids, mask).logsumexp(-1).sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_compilation_is_on_by_default_for_long_single_process_cpu_runs_only(make_model):
    import torch

    from lsllama.modeling.compilation import COMPILE_AFTER_STEPS, worth_compiling

    cfg, model = build_config(), make_model()
    cpu, cuda, long = torch.device("cpu"), torch.device("cuda"), COMPILE_AFTER_STEPS
    assert worth_compiling(cfg, model, long, cpu, 1)  # inductor builds kernels on this machine
    assert not worth_compiling(cfg, model, long - 1, cpu, 1)
    assert not worth_compiling(cfg, model, long, cpu, 2)  # several processes: only when asked
    assert not worth_compiling(cfg, model, long, cuda, 1)  # no GPU measurement backs a default
    assert not worth_compiling(cfg, torch.nn.Linear(2, 2), long, cpu, 1)  # no decoder layers named
    checkpointing = build_config(overrides={"model": {"gradient_checkpointing": True}})
    assert not worth_compiling(checkpointing, model, long, cpu, 1)
    for asked in (True, False):  # the user's word
        assert worth_compiling(build_config(overrides={"train": {"compile": asked}}), model, 1, cpu, 2) is asked


def test_without_a_cxx_compiler_runs_stay_eager_by_default(tmp_path):
    """Inductor's CPU kernels need a C++ compiler: the test compile finds out before training, not the first step."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    probe = "import torch\nfrom lsllama.modeling.compilation import inductor_works\n"
    probe += "print(inductor_works(torch.device('cpu')))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_compile_where_inductor_cannot_build_kernels_is_a_usage_error_before_the_run_folder(
    toy_data, tmp_path, monkeypatch
):
    from lsllama.errors import UsageError
    from lsllama.modeling import compilation
    from lsllama.training.loop import train_run

    monkeypatch.setattr(compilation, "inductor_works", lambda device: False)
    with pytest.raises(UsageError, match=r"--compile: torch\.compile cannot build kernels"):
        train_run(toy_config(toy_data, compile=True), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "mode,graphs",
    [
        ({"bidirectional": False}, 1),
        ({"bidirectional": True}, 1),
        ({"unmask_from_layer": 2}, 1),  # layer-wise, both layers below K: causal alike
        ({"unmask_from_layer": 1}, 2),  # one causal layer, one bidirectional
    ],
)
def test_compiled_decoder_layers_share_one_graph_per_kind_of_layer(make_model, mode, graphs):
    """Every layer's input and flags must look alike to dynamo (requires_grad included; no layer index read
    in the forward pass), or it compiles a graph per layer: the cost that decides whether compiling pays."""
    import torch
    from torch._dynamo.utils import counters

    from lsllama.modeling.compilation import compile_decoder_layers

    torch._dynamo.reset()
    counters.clear()
    model = make_model(**mode).train()
    compile_decoder_layers(model)
    ids, mask = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    for _ in range(2):
        model(ids, mask).sum().backward()
    assert counters["stats"]["unique_graphs"] == graphs
