"""Long texts (head, tail, head_tail, windows) and text pairs for the sequence task."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast
from typer.testing import CliRunner

from lsllama import Classifier, build_config
from lsllama.cli import app as cli
from lsllama.data.batching import collate
from lsllama.data.dataset import Example
from lsllama.data.encoding import encode_sequences, sequence_layout, split_budget, truncate_ids, window_starts
from lsllama.errors import UsageError
from lsllama.evaluation import predict
from lsllama.evaluation.predict import item_logits
from lsllama.modeling.pooling import pool

from .conftest import write_jsonl

runner = CliRunner()


# ---- cutting ----


def test_head_tail_and_head_tail_keep_what_they_say():
    ids = list(range(20))
    assert truncate_ids(ids, 8, "head") == list(range(8))
    assert truncate_ids(ids, 8, "tail") == list(range(12, 20))
    assert truncate_ids(ids, 8, "head_tail") == [0, 1, *range(14, 20)]  # the first quarter, the last three quarters
    assert truncate_ids(ids, 30, "tail") == ids


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(1, 200), st.integers(1, 200))
def test_windows_cover_every_token_and_end_at_the_end(length, window, stride):
    stride = min(stride, window)
    if length <= window:
        return
    starts = window_starts(length, window, stride)
    covered = set()
    for start in starts:
        covered.update(range(start, start + window))
    assert covered == set(range(length))
    assert starts[0] == 0 and starts[-1] == length - window and starts == sorted(set(starts))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 100), st.integers(0, 100), st.integers(2, 80))
def test_a_pair_shares_its_budget_longest_first(first, second, budget):
    keep_first, keep_second = split_budget(first, second, budget)
    assert keep_first <= first and keep_second <= second
    assert keep_first + keep_second == min(first + second, budget)
    assert keep_first >= min(first, budget // 2) and keep_second >= min(second, budget - budget // 2)


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=200), st.integers(8, 40))
def test_head_encoding_is_what_the_tokenizer_itself_truncates_to(tokenizer, text, max_length):
    """Runs trained before lsllama cut texts itself keep their exact inputs."""
    [item], _ = encode_sequences([Example("t", text=text)], tokenizer, max_length)
    expected = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    assert item.input_ids == expected


def test_truncated_texts_are_counted(tokenizer):
    examples = [Example("a", text="short"), Example("b", text="word " * 50)]
    items, too_long = encode_sequences(examples, tokenizer, 16, "tail")
    assert too_long == 1
    assert items[1].input_ids == tokenizer("word " * 50)["input_ids"][-16:]


# ---- windows ----


def test_windowed_prediction_averages_the_pooled_windows_before_the_head(make_model, tokenizer):
    model = make_model("sequence", pooling="mean", bidirectional=True)
    long_text, short_text = "the movie was long and " * 12, "a short one"
    items, too_long = encode_sequences(
        [Example("a", text=long_text), Example("b", text=short_text)], tokenizer, 16, "windows", stride=6
    )
    assert too_long == 1 and len(items[0].windows) > 2 and all(len(w) == 16 for w in items[0].windows)
    assert items[1].windows == []
    got = item_logits(model, items, tokenizer.pad_token_id, batch_size=8, device=torch.device("cpu"))
    with torch.no_grad():
        enc = collate(items[0].windows, tokenizer.pad_token_id)
        hidden = model.backbone(**enc, use_cache=False).last_hidden_state
        expected = model.score(pool(hidden, enc["attention_mask"], "mean").mean(dim=0))
        alone = item_logits(model, items[1:], tokenizer.pad_token_id, batch_size=8, device=torch.device("cpu"))
    np.testing.assert_allclose(got[0], expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], alone[0], atol=1e-5)  # a windowed neighbour changes nothing


def long_rows(n: int, seed: int) -> list[dict]:
    """The cue word sits anywhere in a text several windows long."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        words = [rng.choice(["the", "movie", "was", "a", "story", "of", "people", "and", "time"]) for _ in range(40)]
        words[rng.randrange(40)] = "wonderful" if label == "positive" else "terrible"
        rows.append({"text": " ".join(words), "label": label})
    return rows


def test_a_windows_run_trains_reloads_and_reports_its_long_texts(tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", long_rows(48, 1))
    write_jsonl(tmp_path / "data" / "validation.jsonl", long_rows(12, 2))
    cfg = build_config(
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32", "pooling": "max"},
            "data": {"data": str(tmp_path / "data"), "max_length": 16, "long_text": "windows"},
            "train": {"epochs": 2, "min_steps": 0, "learning_rate": 3e-3, "batch_size": 8, "tensorboard": False},
        },
    )
    clf = Classifier.train(cfg, tmp_path / "run", progress=False)
    metrics = clf.evaluate()
    assert metrics["truncated_texts"] == 12 and metrics["long_text"] == "windows"
    texts = [row["text"] for row in long_rows(5, 3)]
    np.testing.assert_array_equal(Classifier.load(tmp_path / "run").predict_proba(texts), clf.predict_proba(texts))
    np.testing.assert_allclose(clf.predict_proba(texts, batch_size=1), clf.predict_proba(texts), atol=1e-5)


def test_max_length_beyond_the_models_context_is_refused_before_anything_is_written(toy_data, tmp_path):
    args = ["train", "--data", str(toy_data), "--output", str(tmp_path / "run"), "--model", "tiny-random"]
    result = runner.invoke(cli, [*args, "--max-length", "4096", "--quiet"])
    assert result.exit_code == 2 and "--max-length 4096 is longer than tiny-random's context (2048" in result.output
    assert not (tmp_path / "run").exists()


def test_long_text_settings_are_checked():
    with pytest.raises(UsageError, match="--long-text must be one of"):
        build_config(overrides={"data": {"long_text": "middle"}}).resolved()
    with pytest.raises(UsageError, match="text pairs need head"):
        build_config(overrides={"data": {"long_text": "windows", "text_pair_column": "b"}}).resolved()
    with pytest.raises(UsageError, match="--long-text is for the sequence task"):
        build_config(task="token", overrides={"data": {"long_text": "tail"}}).resolved()


# ---- text pairs ----


def test_pairs_get_a_newline_between_them_when_the_tokenizer_puts_nothing_there(tokenizer):
    plain = (
        tokenizer("a cat", add_special_tokens=False)["input_ids"]
        + tokenizer("a dog", add_special_tokens=False)["input_ids"]
    )
    assert tokenizer("a cat", "a dog")["input_ids"] == plain  # SmolLM2: the two texts would run together
    layout = sequence_layout(tokenizer)
    assert not layout.has_own_separator
    [item], _ = encode_sequences([Example("t", text="a cat", text_pair="a dog")], tokenizer, 32)
    assert item.input_ids == tokenizer("a cat\na dog")["input_ids"]


def bert_like_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "cat", "dog", "sat"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def test_a_tokenizers_own_pair_template_is_kept_and_cut_longest_first():
    tokenizer = bert_like_tokenizer()
    layout = sequence_layout(tokenizer)
    assert layout.has_own_separator and layout.middle == [3]
    pair = [Example("t", text="a cat sat", text_pair="a dog")]
    [item], _ = encode_sequences(pair, tokenizer, 32)
    assert item.input_ids == tokenizer("a cat sat", "a dog")["input_ids"]
    long_pair = [Example("t", text="a cat sat " * 5, text_pair="a dog")]
    [item], too_long = encode_sequences(long_pair, tokenizer, 10, "tail")
    # budget 10 - 3 special tokens = 7: the long text keeps its last 5 tokens, the short one stays whole
    assert too_long == 1
    tokens = ["[CLS]", "cat", "sat", "a", "cat", "sat", "[SEP]", "a", "dog", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(item.input_ids) == tokens


def test_a_pair_run_predicts_from_both_texts(tmp_path):
    rng = random.Random(0)
    rows = []
    for _ in range(64):  # the label is whether the two texts carry the same cue
        first, second = rng.choice(["wonderful", "terrible"]), rng.choice(["wonderful", "terrible"])
        rows.append({"text": f"the {first} movie", "text_b": f"a {second} story", "label": str(first == second)})
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    write_jsonl(tmp_path / "data" / "validation.jsonl", rows[:16])
    cfg = build_config(
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32", "bidirectional": True, "pooling": "mean"},
            "data": {"data": str(tmp_path / "data"), "text_pair_column": "text_b"},
            "train": {"epochs": 5, "min_steps": 0, "learning_rate": 3e-3, "batch_size": 8, "tensorboard": False},
        },
    )
    Classifier.train(cfg, tmp_path / "run", progress=False)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["validation"]["accuracy"] >= 0.9


# ---- inference batches ----


def test_cpu_inference_batches_stop_at_the_token_budget_and_change_no_logit(make_model, tokenizer, monkeypatch):
    model = make_model("sequence", pooling="last")
    texts = ["a very long review " * 6, "fine", "it was good", "bad", "the plot and the cast " * 3, "ok then"]
    items, _ = encode_sequences([Example(str(i), text=t) for i, t in enumerate(texts)], tokenizer, 64, "head")
    cpu = torch.device("cpu")
    widths: list[int] = []
    hook = model.register_forward_pre_hook(lambda _module, args: widths.append(args[0].numel()))
    unlimited = item_logits(model, items, tokenizer.pad_token_id, batch_size=8, device=cpu, max_tokens=1 << 30)
    assert len(widths) == 1  # one batch of all six rows
    monkeypatch.setattr(predict, "CPU_BATCH_TOKENS", 24)
    widths.clear()
    capped = item_logits(model, items, tokenizer.pad_token_id, batch_size=8, device=cpu)
    hook.remove()
    longest = max(it.n_tokens for it in items)
    assert len(widths) > 1 and all(w <= 24 or w == longest for w in widths)  # a longer row goes alone
    for index in range(len(items)):
        np.testing.assert_allclose(capped[index], unlimited[index], atol=1e-5)
