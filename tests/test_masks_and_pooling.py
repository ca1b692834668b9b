"""Masks and pooling: padding never changes a result, and attention sees what the mode says it sees."""

from __future__ import annotations

import contextlib

import pytest
import torch
import yaml

from lsllama.modeling import model as modeling
from lsllama.modeling.pooling import last_token_index, pool

TEXTS = ["a short one", "this text is quite a lot longer than the first one in the batch"]
MODES = [
    pytest.param({"bidirectional": False}, id="causal"),
    pytest.param({"bidirectional": True}, id="bidirectional"),
    pytest.param({"bidirectional": False, "unmask_from_layer": 1}, id="layerwise"),
]


# sdpa on CPU trains short batches with PyTorch's math kernel, wide ones with the flash kernel: both.
KERNELS = [pytest.param(modeling.CPU_MATH_ATTENTION_MAX_LENGTH, id="math"), pytest.param(0, id="flash")]


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    monkeypatch.setattr(modeling, "CPU_MATH_ATTENTION_MAX_LENGTH", request.param)
    return request.param


def _logits(model, tokenizer, texts, side):
    tokenizer.padding_side = side
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    # With gradients on, as in training: short CPU batches then run the math kernel (see `kernel`).
    return model(batch["input_ids"], batch["attention_mask"]).detach(), batch["attention_mask"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_sequence_logits_do_not_depend_on_padding(make_model, tokenizer, mode, pooling, side, kernel):
    model = make_model("sequence", pooling=pooling, **mode)
    alone, _ = _logits(model, tokenizer, TEXTS[:1], side)
    batched, _ = _logits(model, tokenizer, TEXTS, side)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_token_logits_do_not_depend_on_padding(make_model, tokenizer, mode, impl, side, kernel):
    from lsllama.modeling.masks import configure_attention

    model = make_model("token", **mode)
    model.backbone.base_model.model.set_attn_implementation(impl)
    configure_attention(model.backbone.base_model.model, mode["bidirectional"], mode.get("unmask_from_layer"))
    alone, _ = _logits(model, tokenizer, TEXTS[:1], side)
    batched, mask = _logits(model, tokenizer, TEXTS, side)
    real = batched[0][mask[0].bool()]
    assert not torch.isnan(batched).any()
    torch.testing.assert_close(real, alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_math_and_flash_attention_kernels_give_the_same_logits(make_model, tokenizer, mode, monkeypatch):
    model = make_model("token", **mode)
    math, mask = _logits(model, tokenizer, TEXTS, "right")
    assert not isinstance(modeling.attention_kernels(mask), contextlib.nullcontext)  # the math kernel ran
    monkeypatch.setattr(modeling, "CPU_MATH_ATTENTION_MAX_LENGTH", 0)
    assert isinstance(modeling.attention_kernels(mask), contextlib.nullcontext)
    flash, _ = _logits(model, tokenizer, TEXTS, "right")
    real = mask.bool()
    torch.testing.assert_close(math[real], flash[real], atol=1e-5, rtol=1e-5)


def _hidden_states(model, ids):
    out = model.backbone(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    return out.hidden_states


def _first_token_change_per_layer(model, tokenizer):
    ids = tokenizer("the first token should not see the last one", return_tensors="pt")["input_ids"]
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 7) % len(tokenizer)
    with torch.no_grad():
        before, after = _hidden_states(model, ids), _hidden_states(model, changed)
    # hidden_states[i + 1] is the output of layer i
    return [float((b[0, 0] - a[0, 0]).abs().max()) for b, a in zip(before[1:], after[1:], strict=True)]


def test_causal_model_does_not_see_later_tokens(make_model, tokenizer):
    changes = _first_token_change_per_layer(make_model("token", bidirectional=False), tokenizer)
    assert max(changes) == 0.0


def test_bidirectional_model_sees_later_tokens(make_model, tokenizer):
    changes = _first_token_change_per_layer(make_model("token", bidirectional=True), tokenizer)
    assert all(c > 1e-4 for c in changes)


def test_layerwise_model_is_causal_below_k_and_bidirectional_from_k(make_model, tokenizer):
    changes = _first_token_change_per_layer(make_model("token", bidirectional=False, unmask_from_layer=1), tokenizer)
    assert changes[0] == 0.0
    assert changes[1] > 1e-4


def test_last_token_pooling_reads_the_mask_even_when_pad_equals_eos():
    # Row 0 contains the pad/eos id (2) inside the text; an input_ids-based search would stop early.
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [3, 5]


def test_mean_and_max_pooling_ignore_padded_positions():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[-100.0], [2.0], [4.0]]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert pool(hidden, mask, "mean").squeeze(-1).tolist() == [2.0, 3.0]
    assert pool(hidden, mask, "max").squeeze(-1).tolist() == [3.0, 4.0]
    assert pool(hidden, mask, "last").squeeze(-1).tolist() == [3.0, 4.0]


@pytest.mark.parametrize("task", ["sequence", "token"])
@pytest.mark.parametrize("bidirectional", [None, True, False])
def test_layerwise_run_saves_bidirectional_false(task, bidirectional):
    from lsllama.config import RunConfig, build_config

    overrides = {"model": {"bidirectional": bidirectional, "unmask_from_layer": 1}}
    saved = RunConfig.from_dict(yaml.safe_load(build_config(task, overrides=overrides).resolved().to_yaml()))
    assert saved.model.bidirectional is False
    assert saved.model.unmask_from_layer == 1


def test_old_layerwise_config_with_bidirectional_true_runs_the_same_attention(make_model, tokenizer):
    """Run folders from before the resolution saved `bidirectional: true` beside `unmask_from_layer`."""
    old = _first_token_change_per_layer(make_model("token", bidirectional=True, unmask_from_layer=1), tokenizer)
    new = _first_token_change_per_layer(make_model("token", bidirectional=False, unmask_from_layer=1), tokenizer)
    assert old == new
    assert old[0] == 0.0
