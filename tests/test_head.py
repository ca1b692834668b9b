"""The head that starts from the label words, and the template that puts the last token where a label follows."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from lsllama import Classifier, build_config
from lsllama.config import TEMPLATES, DataConfig, ModelConfig, RunConfig
from lsllama.data.dataset import Example
from lsllama.data.encoding import auto_template, encode_examples, template_ids
from lsllama.errors import UsageError
from lsllama.modeling.head import label_word_rows
from lsllama.modeling.model import build_model

from .conftest import toy_rows, write_jsonl


def build(tokenizer, head_init: str, words: list[str] | None):
    torch.manual_seed(0)
    cfg = ModelConfig(name="tiny-random", precision="fp32", head_init=head_init)
    return build_model(cfg, "sequence", 2, tokenizer, torch.device("cpu"), label_words=words).eval()


def test_the_untrained_head_is_the_language_models_choice_among_single_token_label_words(tokenizer):
    words = ["good", "bad"]
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    assert all(len(i) == 1 for i in ids)  # single-token words: the head rows are the output rows themselves
    model = build(tokenizer, "label_names", words)
    enc = tokenizer(["a wonderful story", "it was terrible"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(enc["input_ids"], enc["attention_mask"])
        hidden = model.backbone(**enc).last_hidden_state
        last = enc["attention_mask"].cumsum(1).argmax(1)  # the last real token, either padding side
        expected = hidden[torch.arange(2), last] @ model.backbone.get_input_embeddings().weight[[i[0] for i in ids]].T
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert model.head_from_words


def test_a_multi_token_label_starts_from_the_mean_of_its_tokens(tokenizer, make_model):
    model = make_model()
    rows = label_word_rows(model.backbone, tokenizer, ["Sci/Tech"])
    ids = tokenizer(" Sci/Tech", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    torch.testing.assert_close(rows[0], model.backbone.get_input_embeddings().weight[ids].float().mean(0))


def test_head_init_random_and_the_token_task_keep_a_random_head(tokenizer):
    random_head = build(tokenizer, "random", ["good", "bad"])
    assert not random_head.head_from_words
    assert random_head.score.weight.std() < 0.05  # normal(0, 0.02), not the embedding rows


def test_a_template_wraps_the_text_and_long_texts_are_cut_inside_it(tokenizer):
    cfg = DataConfig(template="{text}\nIs it {labels}?", labels=["good", "bad"], max_length=24)
    before, after = template_ids(cfg, tokenizer)
    assert before == [] and tokenizer.decode(after) == "\nIs it good or bad?"
    long = Example("x:1", text="word " * 100)
    items, cut = encode_examples([long, Example("x:2", text="short")], "sequence", tokenizer, cfg)
    assert cut == 1 and len(items[0].input_ids) == 24
    assert items[0].input_ids[-len(after) :] == after and items[1].input_ids[-len(after) :] == after


def test_a_named_template_is_its_text(tokenizer):
    cfg = DataConfig(template="labels", labels=["good", "bad"], max_length=128)
    items, _ = encode_examples([Example("x:1", text="a fine film")], "sequence", tokenizer, cfg)
    text = TEMPLATES["labels"].replace("{labels}", "good or bad").replace("{text}", "a fine film")
    assert tokenizer.decode(items[0].input_ids, skip_special_tokens=True) == text


@pytest.mark.parametrize(
    ("task", "data", "preset", "expected"),
    [
        ("sequence", {}, "default", "auto"),  # decided with the tokenizer and labels (below)
        ("sequence", {"template": "labels"}, "default", TEMPLATES["labels"]),
        ("sequence", {"template": "labels", "question": "Why?"}, "default", "Why? " + TEMPLATES["labels"]),
        ("sequence", {"question": "Why?"}, "default", "auto"),
        ("sequence", {"template": "none"}, "default", None),
        ("sequence", {"problem": "regression"}, "default", None),
        ("sequence", {"problem": "multi_label"}, "default", None),  # the question asks for one label
        ("sequence", {"text_pair_column": "b"}, "default", None),
        ("token", {}, "default", None),
        ("sequence", {}, "paper", None),
    ],
)
def test_the_default_template_asks_only_where_single_texts_are_classified(task, data, preset, expected):
    assert build_config(task=task, preset=preset, overrides={"data": data}).resolved().data.template == expected


@pytest.mark.parametrize(("given", "kept"), [(" Why? ", "Why?"), ("  ", None), (None, None)])
def test_an_auto_template_keeps_the_question_for_the_labels_to_follow(given, kept):
    assert build_config(overrides={"data": {"question": given}}).resolved().data.question == kept


def test_the_auto_template_is_the_labels_question_unless_the_labels_crowd_out_the_text(tokenizer):
    few = DataConfig(labels=["good", "bad"], max_length=128)
    assert auto_template(few, "sequence", tokenizer) == TEMPLATES["labels"]
    many = DataConfig(labels=[f"topic number {i}" for i in range(20)], max_length=128)
    assert auto_template(many, "sequence", tokenizer) is None  # over a quarter of max_length
    items, _ = encode_examples([Example("x:1", text="a fine film")], "sequence", tokenizer, many)
    assert tokenizer.decode(items[0].input_ids, skip_special_tokens=True) == "a fine film"


def test_a_question_goes_before_the_labels_and_must_leave_room_for_the_text(tokenizer):
    asked = DataConfig(labels=["good", "bad"], question="What is the mood of the review?", max_length=128)
    assert auto_template(asked, "sequence", tokenizer) == "What is the mood of the review? " + TEMPLATES["labels"]
    long = DataConfig(labels=["good", "bad"], question="Why? " * 20, max_length=128)
    with pytest.raises(UsageError, match="--question: the question and the labels take"):
        auto_template(long, "sequence", tokenizer)  # said, not dropped as the many-labels fallback would


def test_a_run_saved_before_templates_existed_reads_the_text_alone(tmp_path):
    saved = build_config(overrides={"data": {"template": "none"}}).resolved().to_dict()
    del saved["data"]["template"]  # as config.yaml was written before the setting existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert RunConfig.load(tmp_path / "config.yaml").data.template is None
    assert build_config().data.template == "auto"  # while a new run gets the default


@pytest.mark.parametrize("question", [None, "What is the mood?"])
def test_a_default_run_saves_the_template_it_read(tmp_path, question):
    write_jsonl(tmp_path / "data" / "train.jsonl", toy_rows(16, 1))
    write_jsonl(tmp_path / "data" / "validation.jsonl", toy_rows(8, 2))
    cfg = build_config(
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            "data": {"data": str(tmp_path / "data"), "question": question},
            "train": {"epochs": 1, "min_steps": 0, "batch_size": 8, "tensorboard": False},
        }
    )
    clf = Classifier.train(cfg, tmp_path / "run", progress=False)
    expected = TEMPLATES["labels"] if question is None else f"{question} {TEMPLATES['labels']}"
    assert clf.config.data.template == expected
    saved = RunConfig.load(tmp_path / "run" / "config.yaml")
    assert saved.data.template == expected and saved.data.question is None  # asked inside the template
    assert saved.resolved().data.template == expected  # and a resume or reload resolves it as it ran


def test_a_template_must_leave_room_for_the_text(tokenizer):
    cfg = DataConfig(template="{text}" + " and so on" * 20, labels=["a", "b"], max_length=32)
    with pytest.raises(UsageError, match="--template takes"):
        encode_examples([Example("x:1", text="hi")], "sequence", tokenizer, cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data": {"template": "no placeholder"}}, "must contain"),
        ({"data": {"template": "{text}?", "text_pair_column": "b"}}, "single texts"),
        ({"model": {"head_init": "zeros"}}, "--head-init"),
        ({"data": {"question": "Why?", "template": "{text}?"}}, "write it into your own --template"),
        ({"data": {"question": "Why?", "template": "none"}}, "--template none and --preset paper have none"),
        ({"data": {"question": "Why?", "problem": "multi_label"}}, "--question is for the sequence task"),
        ({"data": {"question": "Why?", "problem": "regression", "template": "labels"}}, "one label each"),
        ({"data": {"question": "Is {text} kind?"}}, "{text} belongs in a --template"),
    ],
)
def test_bad_head_and_template_settings_are_usage_errors(overrides, message):
    with pytest.raises(UsageError, match=message):
        build_config(overrides=overrides).resolved()


def test_a_label_word_head_is_scored_at_step_0_and_a_random_one_is_not(tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", toy_rows(16, 1))
    write_jsonl(tmp_path / "data" / "validation.jsonl", toy_rows(8, 2))
    steps = {}
    for head_init in ("label_names", "random"):
        cfg = build_config(
            overrides={
                "model": {"name": "tiny-random", "precision": "fp32", "head_init": head_init},
                "data": {"data": str(tmp_path / "data")},
                "train": {"epochs": 1, "min_steps": 0, "batch_size": 8, "tensorboard": False},
            }
        )
        Classifier.train(cfg, tmp_path / head_init, progress=False)
        log = (tmp_path / head_init / "metrics.jsonl").read_text().splitlines()
        steps[head_init] = [e["step"] for e in map(json.loads, log) if e["event"] == "eval"]
    assert steps == {"label_names": [0, 2], "random": [2]}


def test_an_untied_model_starts_the_head_from_its_lm_head_not_its_input_embeddings(tokenizer, tmp_path):
    from transformers import LlamaForCausalLM

    from lsllama.modeling.loading import tiny_random_config

    config = tiny_random_config(len(tokenizer), tokenizer.pad_token_id)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    lm = LlamaForCausalLM(config)
    lm.save_pretrained(tmp_path / "untied")
    tokenizer.save_pretrained(tmp_path / "untied")
    cfg = ModelConfig(name=str(tmp_path / "untied"), precision="fp32")
    model = build_model(cfg, "sequence", 2, tokenizer, torch.device("cpu"), label_words=["good", "bad"])
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("good", "bad")]
    torch.testing.assert_close(model.score.weight, lm.lm_head.weight[ids].detach())
    assert not torch.allclose(model.score.weight, lm.get_input_embeddings().weight[ids].detach())
