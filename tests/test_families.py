"""Every decoder family through lsllama's normal path (`--model tiny-random-<family>`): padding never changes a
result, each attention mode sees what it says, LoRA finds each family's projections, and runs reload exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lsllama import Classifier, build_config
from lsllama.config import ModelConfig
from lsllama.errors import UsageError
from lsllama.modeling.loading import TINY_FAMILIES, TINY_SLIDING_WINDOW
from lsllama.modeling.model import build_model

from .conftest import toy_ner_rows, toy_rows, write_jsonl

FAMILIES = list(TINY_FAMILIES)
MODES = {
    "causal": {"bidirectional": False},
    "bidirectional": {"bidirectional": True},
    "layerwise": {"bidirectional": False, "unmask_from_layer": 1},
}
SLIDING_FIRST_LAYER = {"mistral", "gemma2", "gemma3"}
"""Families whose tiny model has a sliding-window first layer (a window of TINY_SLIDING_WINDOW tokens)."""
TEXTS = ["a short one", "this text is longer than the sliding window of the tiny models, by quite a few tokens"]


@pytest.fixture(scope="module")
def model_for(tokenizer):
    built: dict[tuple[str, str], torch.nn.Module] = {}

    def get(family: str, mode: str):
        if (family, mode) not in built:
            torch.manual_seed(0)
            cfg = ModelConfig(name=f"tiny-random-{family}", precision="fp32", **MODES[mode])
            built[family, mode] = build_model(cfg, "sequence", 3, tokenizer, torch.device("cpu")).eval()
        return built[family, mode]

    return get


def _encode(tokenizer, texts: list[str], side: str) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = side
    try:
        return tokenizer(texts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "right"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_padding_changes_no_pooled_prediction_and_no_token_state(model_for, tokenizer, family, mode):
    model = model_for(family, mode)
    for side in ("right", "left"):
        alone = [_encode(tokenizer, [text], side) for text in TEXTS]
        batch = _encode(tokenizer, TEXTS, side)
        with torch.no_grad():
            hidden = model.backbone(**batch, use_cache=False).last_hidden_state
            for row, single in enumerate(alone):
                real = batch["attention_mask"][row].bool()
                expected = model.backbone(**single, use_cache=False).last_hidden_state[0]
                torch.testing.assert_close(hidden[row][real], expected, atol=1e-5, rtol=1e-5)  # token task
            for pooling in ("last", "mean", "max"):
                model.pooling = pooling
                batched = model(batch["input_ids"], batch["attention_mask"])
                for row, single in enumerate(alone):
                    expected = model(single["input_ids"], single["attention_mask"])[0]
                    torch.testing.assert_close(batched[row], expected, atol=1e-5, rtol=1e-5)
    model.pooling = "last"


def _first_token_change_per_layer(model, tokenizer, position: int) -> list[float]:
    """How much token 0's output of each layer moves when the token at `position` changes."""
    ids = tokenizer(TEXTS[1], return_tensors="pt")["input_ids"]
    changed = ids.clone()
    changed[0, position] = (changed[0, position] + 7) % len(tokenizer)
    with torch.no_grad():
        before = model.backbone(input_ids=ids, output_hidden_states=True).hidden_states
        after = model.backbone(input_ids=changed, output_hidden_states=True).hidden_states
    return [float((b[0, 0] - a[0, 0]).abs().max()) for b, a in zip(before[1:], after[1:], strict=True)]


@pytest.mark.parametrize("family", FAMILIES)
def test_causal_never_sees_later_tokens_and_bidirectional_does(model_for, tokenizer, family):
    assert max(_first_token_change_per_layer(model_for(family, "causal"), tokenizer, 1)) == 0.0
    assert max(_first_token_change_per_layer(model_for(family, "causal"), tokenizer, -1)) == 0.0
    assert all(c > 1e-4 for c in _first_token_change_per_layer(model_for(family, "bidirectional"), tokenizer, 1))


@pytest.mark.parametrize("family", FAMILIES)
def test_layerwise_stays_causal_below_k(model_for, tokenizer, family):
    below, above = _first_token_change_per_layer(model_for(family, "layerwise"), tokenizer, 1)
    assert below == 0.0
    assert above > 1e-4


@pytest.mark.parametrize("family", sorted(SLIDING_FIRST_LAYER))
def test_bidirectional_sliding_window_layers_keep_their_window_on_both_sides(model_for, tokenizer, family):
    assert len(tokenizer(TEXTS[1])["input_ids"]) > TINY_SLIDING_WINDOW + 2
    first_layer = _first_token_change_per_layer(model_for(family, "bidirectional"), tokenizer, -1)[0]
    assert first_layer == 0.0


def _train(folder, task: str, rows: list[dict], model: dict) -> Classifier:
    write_jsonl(folder / "data" / "train.jsonl", rows)
    write_jsonl(folder / "data" / "validation.jsonl", rows[:4])
    cfg = build_config(
        task=task,
        overrides={
            "model": {"precision": "fp32", **model},
            "data": {"data": str(folder / "data")},
            "train": {"epochs": 1, "min_steps": 0, "learning_rate": 3e-3, "batch_size": 8, "tensorboard": False},
        },
    )
    return Classifier.train(cfg, folder / "run", progress=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_sequence_run_with_the_papers_q_v_targets_reloads_identically(tmp_path, family):
    model = {"name": f"tiny-random-{family}", "unmask_from_layer": 1, "lora_targets": ["q_proj", "v_proj"]}
    clf = _train(tmp_path, "sequence", toy_rows(16, 1), model)
    texts = ["a wonderful story", "terrible people and time"]
    np.testing.assert_array_equal(Classifier.load(tmp_path / "run").predict_proba(texts), clf.predict_proba(texts))
    adapters = Classifier.load(tmp_path / "run", merge=False).model.backbone
    adapted = {name.rsplit(".", 2)[-2] for name, _ in adapters.named_modules() if name.endswith("lora_A")}
    assert adapted == ({"qkv_proj"} if family == "phi3" else {"q_proj", "v_proj"})


@pytest.mark.parametrize("family", FAMILIES)
def test_token_run_reloads_identically(tmp_path, family):
    clf = _train(tmp_path, "token", toy_ner_rows(16, 1), {"name": f"tiny-random-{family}"})
    assert clf.config.model.bidirectional
    sentences = [["Maria", "Smith", "flew", "to", "Rome", "."]]
    reloaded = Classifier.load(tmp_path / "run")
    assert reloaded.predict_tags(sentences) == clf.predict_tags(sentences)


@pytest.mark.slow  # a cold compilation per family and mode: several minutes on two cores
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_layers_give_the_eager_outputs_and_gradients_in_every_family(tokenizer, family, mode):
    """Long CPU runs compile by default, whatever the family: each must compile, with and without padding,
    into one graph per kind of layer and batch (more would mean a graph per layer, and dynamo giving up)."""
    from torch._dynamo.utils import counters

    from lsllama.modeling.compilation import compile_decoder_layers

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    cfg = ModelConfig(name=f"tiny-random-{family}", precision="fp32", **MODES[mode])
    model = build_model(cfg, "sequence", 3, tokenizer, torch.device("cpu")).train()
    batches = [_encode(tokenizer, TEXTS, "right"), _encode(tokenizer, TEXTS[:1], "right")]  # padded, then not
    runs = []
    for compiled in (False, True):
        if compiled:
            compile_decoder_layers(model)
        for batch in batches:
            model.zero_grad()
            logits = model(batch["input_ids"], batch["attention_mask"])
            logits.square().sum().backward()
            grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            runs.append((logits.detach(), grads))
    kinds = 2 if mode == "layerwise" or family == "smollm3" else 1  # SmolLM3: layers with and without RoPE
    assert counters["stats"]["unique_graphs"] <= 2 * kinds  # x padded / unpadded batches
    for (eager, eager_grads), (compiled, grads) in zip(runs[:2], runs[2:], strict=True):
        torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
        assert len(grads) == len(eager_grads) > 0
        for grad, eager_grad in zip(grads, eager_grads, strict=True):
            torch.testing.assert_close(grad, eager_grad, atol=1e-4, rtol=1e-3)


def test_a_target_no_family_has_is_an_error_naming_the_linear_layers(tokenizer):
    cfg = ModelConfig(name="tiny-random-phi3", precision="fp32", lora_targets=["c_attn"])
    with pytest.raises(UsageError, match=r"c_attn.*qkv_proj"):
        build_model(cfg, "sequence", 2, tokenizer, torch.device("cpu"))


def test_unknown_tiny_family_is_a_usage_error(tokenizer):
    with pytest.raises(UsageError, match="unknown tiny family"):
        build_model(ModelConfig(name="tiny-random-gpt2"), "sequence", 2, tokenizer, torch.device("cpu"))


def test_a_family_whose_mask_ignores_is_causal_is_refused(tokenizer, monkeypatch):
    """A model that builds its own causal mask would stay causal (with padding) while claiming not to."""
    import transformers.models.llama.modeling_llama as llama

    original = llama.create_causal_mask

    def always_causal(**kwargs):
        config = kwargs["config"]
        config.is_causal = True
        try:
            return original(**kwargs)
        finally:
            config.is_causal = False

    monkeypatch.setattr(llama, "create_causal_mask", always_causal)
    with pytest.raises(UsageError, match="stays causal"):
        build_model(ModelConfig(name="tiny-random", bidirectional=True), "sequence", 2, tokenizer, torch.device("cpu"))


def test_a_family_that_drops_the_padding_mask_is_refused(tokenizer, monkeypatch):
    """What the official code did: no mask at all once unmasked, so every token attends to padding."""
    import transformers.models.llama.modeling_llama as llama

    monkeypatch.setattr(llama, "create_causal_mask", lambda **kwargs: None)
    with pytest.raises(UsageError, match="attends to padding"):
        build_model(ModelConfig(name="tiny-random", bidirectional=True), "sequence", 2, tokenizer, torch.device("cpu"))
