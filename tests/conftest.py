"""Shared fixtures: a tiny random model (fast) and small data files written per test."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

from lsllama.config import ModelConfig
from lsllama.modeling.loading import load_tokenizer
from lsllama.modeling.model import build_model

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("LSLLAMA_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _data_root() -> None:
    os.environ.setdefault("LSLLAMA_DATA", str(DATA_ROOT))


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("tiny-random")


@pytest.fixture
def make_model(tokenizer):
    def make(task: str = "sequence", num_labels: int = 3, **model_kwargs):
        torch.manual_seed(0)
        cfg = ModelConfig(**{"name": "tiny-random", "precision": "fp32", **model_kwargs})
        return build_model(cfg, task, num_labels, tokenizer, torch.device("cpu")).eval()

    return make


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def toy_rows(n: int, seed: int) -> list[dict]:
    """A learnable task: the label is which of two cue words the text contains."""
    rng = random.Random(seed)
    fillers = ["the", "movie", "was", "really", "quite", "a", "story", "of", "people", "and", "time"]
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        words = rng.sample(fillers, rng.randint(2, 7))
        words.insert(rng.randint(0, len(words)), "wonderful" if label == "positive" else "terrible")
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture
def toy_data(tmp_path: Path) -> Path:
    folder = tmp_path / "toy"
    write_jsonl(folder / "train.jsonl", toy_rows(96, 1))
    write_jsonl(folder / "validation.jsonl", toy_rows(40, 2))
    return folder


def toy_ner_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    people, places = ["Peter", "Maria", "John"], ["Paris", "Berlin", "Rome"]
    rows = []
    for _ in range(n):
        person, place = rng.choice(people), rng.choice(places)
        tokens = [person, "Smith", "flew", "to", place, "today", "."]
        tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O"]
        rows.append({"tokens": tokens, "tags": tags})
    return rows


@pytest.fixture
def toy_ner_data(tmp_path: Path) -> Path:
    folder = tmp_path / "toyner"
    write_jsonl(folder / "train.jsonl", toy_ner_rows(64, 1))
    write_jsonl(folder / "validation.jsonl", toy_ner_rows(16, 2))
    return folder


def train_tiny_run(folder: Path, rows: list[dict], task: str = "sequence", **data: object) -> Path:
    """A one-epoch tiny-random run on `rows` (its first 16 as validation): what inference tests read."""
    from lsllama import Classifier, build_config

    write_jsonl(folder / "data" / "train.jsonl", rows)
    write_jsonl(folder / "data" / "validation.jsonl", rows[:16])
    cfg = build_config(
        task=task,
        overrides={
            "model": {"name": "tiny-random", "precision": "fp32"},
            "data": {"data": str(folder / "data"), **data},
            "train": {"epochs": 1, "min_steps": 0, "learning_rate": 3e-3, "batch_size": 8, "tensorboard": False},
        },
    )
    Classifier.train(cfg, folder / "run", progress=False)
    return folder / "run"
