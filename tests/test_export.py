"""`lsllama export` and model cards: transformers reproduces lsllama where it can, and says so where not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers.processors import TemplateProcessing
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    pipeline,
)
from typer.testing import CliRunner

from lsllama import Classifier, build_config
from lsllama.cli import app as cli
from lsllama.data.dataset import Example
from lsllama.evaluation.evaluate import softmax
from lsllama.serving.export import export_run

from .conftest import toy_ner_rows, toy_rows, write_jsonl

runner = CliRunner()
TEXTS = ["a wonderful story", "terrible people and time", "the movie was really quite terrible", "time"]


def train(folder: Path, task: str, rows: list[dict], epochs: float, lr: float, **model: object) -> Path:
    write_jsonl(folder / "data" / "train.jsonl", rows)
    write_jsonl(folder / "data" / "validation.jsonl", rows[:16])
    cfg = build_config(
        task=task,
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32", **model},
            "data": {"data": str(folder / "data")},
            "train": {"epochs": epochs, "min_steps": 0, "learning_rate": lr, "batch_size": 8, "tensorboard": False},
        },
    )
    Classifier.train(cfg, folder / "run", progress=False)
    return folder / "run"


@pytest.fixture(scope="module")
def last_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("last"), "sequence", toy_rows(64, 1), 2, 3e-3)


@pytest.fixture(scope="module")
def bidirectional_last_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("bidirectional"), "sequence", toy_rows(64, 1), 2, 3e-3, bidirectional=True)


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("ner"), "token", toy_ner_rows(48, 1), 4, 5e-3)


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("mean"), "sequence", toy_rows(32, 1), 1, 3e-3, pooling="mean")


def pipeline_probs(results: list[list[dict]], names: list[str]) -> np.ndarray:
    return np.array([[{r["label"]: r["score"] for r in row}[name] for name in names] for row in results])


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_last_token_export_is_the_stock_class_and_gives_lsllama_predictions(attention, request, tmp_path, capfd):
    last_run = request.getfixturevalue({"causal": "last_run", "bidirectional": "bidirectional_last_run"}[attention])
    out = export_run(last_run, tmp_path / "export").path
    config = json.loads((out / "config.json").read_text())
    assert config["is_causal"] is (attention == "causal")
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["label2id"]["positive"] == 1
    assert "auto_map" not in config and not list(out.glob("*.py"))  # no remote code
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["pad_token_id"] == 2
    clf = Classifier.load(last_run, device="cpu", precision="fp32")
    expected = clf.predict_proba(TEXTS)
    capfd.readouterr()
    pipe = pipeline("text-classification", model=str(out), device="cpu")  # no trust_remote_code
    for batch_size in (1, 4):  # 4: padded batches, pooled by transformers' own pad-id rule
        got = pipe(TEXTS, top_k=None, truncation=True, batch_size=batch_size)
        np.testing.assert_allclose(pipeline_probs(got, clf.labels.names), expected, atol=1e-4, rtol=0)
        assert [row[0]["label"] for row in got] == clf.predict(TEXTS)
    printed = capfd.readouterr()
    assert "not supported" not in printed.err + printed.out and "UNEXPECTED" not in printed.err + printed.out
    np.testing.assert_array_equal(Classifier.load(out, device="cpu", precision="fp32").predict_proba(TEXTS), expected)


def test_the_export_card_loads_without_remote_code_and_says_where_pooling_can_differ(last_run, tmp_path):
    out = export_run(last_run, tmp_path / "export").path
    readme = (out / "README.md").read_text()
    assert "trust_remote_code=True" not in readme and 'pipeline("text-classification", model="export")' in readme
    assert "whose last token is `<|im_end|>` (id 2)" in readme
    stock = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert stock.score.bias is None


def test_bidirectional_token_export_gives_lsllama_tags_and_scores(ner_run, tmp_path):
    out = export_run(ner_run, tmp_path / "export").path
    assert json.loads((out / "config.json").read_text())["is_causal"] is False
    clf = Classifier.load(ner_run, device="cpu")
    sentences = [["Maria", "Smith", "flew", "to", "Berlin", "today", "."], ["John", "Smith", "flew", "to", "Rome"]]
    tags = clf.predict_tags(sentences)
    scores = [softmax(s).max(axis=-1) for s in clf._logits([Example("t", words=w) for w in sentences], 8)]

    def first_subtokens(ner) -> list[tuple[list[str], np.ndarray]]:
        found = []
        for words in sentences:
            text, tokens = " ".join(words), ner(" ".join(words), ignore_labels=[])
            starts = [text.index(w, sum(len(x) + 1 for x in words[:i])) for i, w in enumerate(words)]
            firsts = [next(t for t in tokens if t["end"] > start) for start in starts]
            found.append(([t["entity"] for t in firsts], np.array([t["score"] for t in firsts])))
        return found

    for (got_tags, got_scores), want_tags, want_scores in zip(
        first_subtokens(pipeline("token-classification", model=str(out), device="cpu")), tags, scores, strict=True
    ):
        assert got_tags == want_tags
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-4)
    # Control: the same weights with the causal mask give other scores, so the flag is what matched.
    causal = AutoModelForTokenClassification.from_pretrained(out, is_causal=True)
    causal_pipe = pipeline("token-classification", model=causal, tokenizer=clf.tokenizer, device="cpu")
    differences = [np.abs(c[1] - w).max() for c, w in zip(first_subtokens(causal_pipe), scores, strict=True)]
    assert max(differences) > 1e-3


def test_mean_pooling_export_is_for_lsllama_only_and_reloads_exactly(mean_run, tmp_path):
    result = export_run(mean_run, tmp_path / "export")
    out = result.path
    assert result.transformers_class is None and "mean pooling" in result.needs_lsllama
    readme = (out / "README.md").read_text()
    assert "This export needs lsllama" in readme and "mean pooling" in readme and "Classifier.load" in readme
    assert not (out / "config.json").exists()
    with pytest.raises((OSError, ValueError)):  # transformers refuses the folder instead of guessing
        AutoConfig.from_pretrained(out)
    np.testing.assert_array_equal(
        Classifier.load(out, device="cpu").predict_proba(TEXTS),
        Classifier.load(mean_run, device="cpu").predict_proba(TEXTS),
    )


def test_export_command(last_run, tmp_path):
    out = tmp_path / "export"
    result = runner.invoke(cli, ["export", str(last_run), "--output", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout is the JSON alone (progress bars go to stderr)
    assert summary["transformers_class"] == "LlamaForSequenceClassification" and "trust_remote_code" not in summary
    again = runner.invoke(cli, ["export", str(last_run), "--output", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    assert runner.invoke(cli, ["export", str(last_run), "--output", str(out), "--overwrite"]).exit_code == 0
    inside = runner.invoke(cli, ["export", str(last_run), "--output", str(last_run.parent), "--overwrite"])
    assert inside.exit_code == 2 and "holds the run" in inside.output
    missing = runner.invoke(cli, ["export", str(tmp_path / "nope"), "--output", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "not found" in missing.output
    assert not (tmp_path / "x").exists()


def test_model_card_after_evaluate_and_in_the_export(last_run, tmp_path):
    result = runner.invoke(cli, ["evaluate", str(last_run)])
    assert result.exit_code == 0, result.output
    accuracy = json.loads(result.stdout.strip().splitlines()[-1])["accuracy"]
    card = (last_run / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: lsllama\npipeline_tag: text-classification\n")
    assert "`tiny-random`" in card and str(last_run.parent / "data") in card  # base model and data
    assert f"| accuracy | {accuracy:.4g} |" in card and "### validation (`lsllama evaluate`)" in card
    assert "![learning curves](report/learning_curves.png)" in card
    assert "![validation confusion](report/validation_confusion.png)" in card
    assert "learning_rate: 0.003" in card  # the full config
    export_card = (export_run(last_run, tmp_path / "export").path / "README.md").read_text()
    assert "library_name: transformers" in export_card
    assert "](lsllama/report/learning_curves.png)" in export_card
    assert (tmp_path / "export" / "lsllama" / "report" / "learning_curves.png").is_file()


@pytest.mark.parametrize(
    ("template", "with_bos"), [("{text}\nIs it {labels}?", False), ("labels", False), ("labels", True)]
)
def test_a_template_run_exports_to_the_stock_class_with_the_template_in_its_tokenizer(tmp_path, template, with_bos):
    folder = tmp_path / "tpl"
    write_jsonl(folder / "data" / "train.jsonl", toy_rows(32, 1))
    write_jsonl(folder / "data" / "validation.jsonl", toy_rows(8, 2))
    cfg = build_config(
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            "data": {"data": str(folder / "data"), "template": template},
            "train": {"epochs": 1, "min_steps": 0, "batch_size": 8, "tensorboard": False},
        },
    )
    Classifier.train(cfg, folder / "run", progress=False)
    if with_bos:  # a tokenizer that puts its own BOS before each text, as Llama's and Gemma's do
        tokenizer = AutoTokenizer.from_pretrained(folder / "run" / "tokenizer")
        bos = (tokenizer.bos_token, tokenizer.bos_token_id)
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos[0]} $A", special_tokens=[bos])
        tokenizer.save_pretrained(folder / "run" / "tokenizer")
        assert Classifier.load(folder / "run", device="cpu").tokenizer("a")["input_ids"][0] == bos[1]
    result = export_run(folder / "run", tmp_path / "export")
    assert result.transformers_class == "LlamaForSequenceClassification" and result.needs_lsllama is None
    assert not (result.path / "template-check").exists()
    assert "is in the tokenizer (its post-processor)" in (result.path / "README.md").read_text()
    clf = Classifier.load(folder / "run", device="cpu")
    texts = [*TEXTS, "a wonderful story " * 60]  # over max_length: both cut inside the template
    expected = clf.predict_proba(texts)
    pipe = pipeline("text-classification", model=str(result.path), device="cpu")
    got = pipe(texts, top_k=None, truncation=True, batch_size=4)
    np.testing.assert_allclose(pipeline_probs(got, clf.labels.names), expected, atol=1e-4, rtol=0)
    # Control: the same model reading the texts alone gives other probabilities, so the template is what matched.
    bare = pipeline("text-classification", model=str(result.path), tokenizer=clf.tokenizer, device="cpu")
    assert np.abs(pipeline_probs(bare(texts, top_k=None, batch_size=4), clf.labels.names) - expected).max() > 1e-3
    np.testing.assert_array_equal(Classifier.load(result.path, device="cpu").predict_proba(texts), expected)
