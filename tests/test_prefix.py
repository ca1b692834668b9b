"""The template's shared prefix, read once per evaluation: the same scores as reading it in every row, for
fewer tokens, in every family; never while training or where attention or pooling would see the difference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lsllama import Classifier
from lsllama.config import ModelConfig
from lsllama.modeling.loading import TINY_FAMILIES
from lsllama.modeling.model import build_model

from .conftest import toy_rows, train_tiny_run


def _backbone_tokens(model) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """Counts the tokens each backbone pass embeds."""
    seen: list[int] = []
    handle = model.backbone.get_input_embeddings().register_forward_hook(
        lambda m, args, out: seen.append(args[0].numel())
    )
    return seen, handle


@pytest.fixture(scope="module")
def template_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("prefix"), toy_rows(48, seed=3))  # the default template: labels


def test_a_template_run_reads_its_prefix_once_and_scores_as_if_every_row_had_read_it(template_run):
    clf = Classifier.load(template_run, merge=False)
    texts = [row["text"] for row in toy_rows(40, seed=9)]
    assert clf.model.shared_prefix is not None and len(clf.model.shared_prefix) > 4
    seen, handle = _backbone_tokens(clf.model)
    try:
        cached = clf.predict_proba(texts, batch_size=8)
        with_prefix_tokens = sum(seen)
        prefix, clf.model.shared_prefix = clf.model.shared_prefix, None
        seen.clear()
        uncached = clf.predict_proba(texts, batch_size=8)
    finally:
        handle.remove()
    np.testing.assert_allclose(cached, uncached, atol=1e-5)
    assert with_prefix_tokens == sum(seen) - len(texts) * len(prefix) + len(prefix)  # 5 batches, one prefix pass


def test_the_prefix_is_forgotten_when_training_resumes_and_never_used_with_gradients(make_model):
    model = make_model()
    model.share_prefix([1, 5, 6, 7])
    ids = torch.tensor([[1, 5, 6, 7, 20, 21], [1, 5, 6, 7, 30, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    model.eval()
    with torch.no_grad():
        model(ids, mask)
    assert model.shared_prefix.keys_values is not None
    model.train()
    assert model.shared_prefix.keys_values is None
    seen, handle = _backbone_tokens(model)
    try:
        model(ids, mask).sum().backward()
    finally:
        handle.remove()
    assert seen == [ids.numel()] and model.shared_prefix.keys_values is None


@pytest.mark.parametrize(
    ("overrides", "task", "pooling"),
    [
        ({"bidirectional": True}, "sequence", "last"),
        ({"unmask_from_layer": 1}, "sequence", "last"),
        ({}, "sequence", "mean"),
        ({}, "token", "last"),
    ],
)
def test_no_prefix_is_shared_where_a_row_would_see_it_differently(tokenizer, overrides, task, pooling):
    cfg = ModelConfig(name="tiny-random", precision="fp32", pooling=pooling, **overrides)
    model = build_model(cfg, task, 3, tokenizer, torch.device("cpu"))
    model.share_prefix([1, 5, 6, 7])
    assert model.shared_prefix is None


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_every_family_scores_the_same_with_the_prefix_cached(tokenizer, family):
    """Sliding-window layers included: the prefix here is longer than the tiny models' window."""
    torch.manual_seed(0)
    cfg = ModelConfig(name=f"tiny-random-{family}", precision="fp32")
    model = build_model(cfg, "sequence", 3, tokenizer, torch.device("cpu")).eval()
    prefix = tokenizer("Possible labels: good, bad or neutral. Text:", add_special_tokens=False)["input_ids"]
    texts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("fine", "not good at all, really bad")]
    rows = [prefix + t for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        plain = model(ids, mask)
        model.share_prefix(prefix)
        seen, handle = _backbone_tokens(model)
        try:
            cached = model(ids, mask)
        finally:
            handle.remove()
    assert seen == [len(prefix), ids.numel() - len(rows) * len(prefix)]  # the prefix alone, then the rest
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-4)


def test_the_prefix_is_forgotten_when_weights_or_device_change(make_model):
    model = make_model()
    model.share_prefix([1, 5, 6, 7])
    ids, mask = torch.tensor([[1, 5, 6, 7, 20]]), torch.ones(1, 5, dtype=torch.long)
    for change in (lambda: model.load_state_dict(model.state_dict()), lambda: model.to(torch.float32)):
        with torch.no_grad():
            model(ids, mask)
        assert model.shared_prefix.keys_values is not None
        change()
        assert model.shared_prefix.keys_values is None


def test_rotary_scaling_that_follows_the_call_length_shares_no_prefix():
    from transformers import LlamaConfig

    from lsllama.modeling.prefix import rescales_with_length

    assert not rescales_with_length(LlamaConfig())
    assert rescales_with_length(LlamaConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0}))


def test_an_unresolved_auto_template_shares_the_prefix_it_resolves_to(template_run, tokenizer):
    from lsllama.config import TEMPLATES, RunConfig
    from lsllama.data.encoding import shared_prefix_ids

    resolved = RunConfig.load(template_run / "config.yaml").data
    assert resolved.template == TEMPLATES["labels"]
    unresolved = dataclasses.replace(resolved, template="auto")  # as a config built in Python holds it
    assert len(shared_prefix_ids(resolved, "sequence", tokenizer)) > 4
    assert shared_prefix_ids(unresolved, "sequence", tokenizer) == shared_prefix_ids(resolved, "sequence", tokenizer)
    assert shared_prefix_ids(resolved, "token", tokenizer) == []  # token tasks read every row whole
