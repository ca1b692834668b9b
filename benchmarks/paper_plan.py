"""What `benchmarks/paper.py` compares, on which rows: data sets, methods, budgets, and the fixed splits.

Kept apart from the runner and the report so that both read one definition of the suite.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.baselines import LabelledTexts
from lsllama.config import TEMPLATES, DataConfig, with_question
from lsllama.data.dataset import Example, LabelSet, data_root, load_split, resolve_labels, sample
from lsllama.run_folder import atomic_folder, commit_folder

DATA_FORMAT = 1
"""Part of the prepared data's folder name: bump it when `prepare_data` changes which rows it keeps."""
FIRST_SEED = 42
CARVED_VALIDATION_ROWS = 1000
CARVE_SEED = 1
METRIC = {"sequence": "accuracy", "token": "f1"}


@dataclass(frozen=True)
class DatasetSpec:
    title: str
    task: str
    prompt_task: str = ""
    """How the zero-shot / SFT prompt names the task: "What is the {prompt_task}?"."""


DATASETS = {
    "sst2": DatasetSpec("SST-2", "sequence", "sentiment of the movie review below"),
    "sst5": DatasetSpec("SST-5", "sequence", "sentiment of the movie review below"),
    "ag_news": DatasetSpec("AG News", "sequence", "topic of the news article below"),
    "twitter_financial_news_sentiment": DatasetSpec(
        "Twitter Fin. News", "sequence", "sentiment of the financial news tweet below"
    ),
    "conll2003": DatasetSpec("CoNLL-2003", "token"),
}


def task_question(dataset: str) -> str:
    """lsllama's `labels` question after the words the zero-shot and SFT prompt use for the data set's task
    ("What is the sentiment of the movie review below? Possible labels: ..."): what `--question` asks, since
    it names the task, which no default can know."""
    return with_question(TEMPLATES["labels"], f"What is the {DATASETS[dataset].prompt_task}?")


@dataclass(frozen=True)
class Method:
    label: str
    kind: str
    task: str
    main: bool = False
    """Main rows run with every seed; ablations with the first seed only."""
    deterministic: bool = False
    """Nothing in it depends on a seed: one run stands for all of them."""
    ls: dict[str, Any] = field(default_factory=dict)
    """lsllama model settings; `unmask_from_layer: HALF` becomes half the backbone's layers."""


HALF = "half"
METHODS = {
    "ls-causal-last": Method(
        "LS-LLaMA: causal, last token", "ls", "sequence", main=True, ls={"bidirectional": False, "pooling": "last"}
    ),
    "ls-bidir-mean": Method(
        "LS-unLLaMA: bidirectional, mean", "ls", "sequence", main=True, ls={"bidirectional": True, "pooling": "mean"}
    ),
    "ls-bidir-max": Method(
        "LS-unLLaMA: bidirectional, max", "ls", "sequence", ls={"bidirectional": True, "pooling": "max"}
    ),
    "ls-causal": Method("LS-LLaMA: causal", "ls", "token", main=True, ls={"bidirectional": False}),
    "ls-bidir": Method("LS-unLLaMA: bidirectional", "ls", "token", main=True, ls={"bidirectional": True}),
    "ls-unmask-half": Method(
        "LS: bidirectional from layer L/2", "ls", "token", ls={"bidirectional": False, "unmask_from_layer": HALF}
    ),
    "zero-shot": Method("Zero-shot prompting, same model", "zero_shot", "sequence", main=True, deterministic=True),
    "sft": Method("Instruction SFT with LoRA (generates the label)", "sft", "sequence", main=True),
    "official": Method("Official LS-LLaMA recipe", "official", "sequence", main=True),
    "tfidf": Method("TF-IDF + logistic regression", "tfidf", "sequence", deterministic=True),
    "majority-tag": Method("Per-word majority tag", "majority_tag", "token", deterministic=True),
}
PRIMARY_LS = {"sequence": "ls-causal-last", "token": "ls-bidir"}
"""The LS row the findings speak for, fixed in advance (not the best one on the reported split)."""
NOT_RUN = {
    "zero-shot": "not run for NER: generating one tag per word needs an output format and a word alignment "
    "that the paper does not define",
    "sft": "not run for NER, for the same reason as zero-shot",
    "official": "not run for NER: benchmarks/official_recipe.py reproduces the sequence-classification script",
}


@dataclass(frozen=True)
class Budget:
    rows: int
    """Training rows per data set (sentences for CoNLL), a fixed seeded sample."""
    eval_rows: int
    """At most this many fixed rows of each evaluation split."""
    seeds: int
    datasets: tuple[str, ...]

    @property
    def seed_list(self) -> list[int]:
        return [FIRST_SEED + i for i in range(self.seeds)]


# Sized to fit two hours on 2 CPU cores with room to spare: 600 training and 500 evaluation rows measured
# 193 min (~160 min without other jobs on the machine), and 400 / 300 ran ~15% over the calibrated estimate
# of 104 min in its first runs (SFT most); 2,000 rows would take ~8 hours, mostly SFT. The quick preset is
# a subset of the full suite's runs, so the two share the cache.
FULL = Budget(rows=300, eval_rows=300, seeds=3, datasets=tuple(DATASETS))
QUICK = Budget(rows=300, eval_rows=300, seeds=1, datasets=("sst2", "conll2003"))


@dataclass(frozen=True)
class Run:
    dataset: str
    method: str
    seed: int


def build_plan(budget: Budget) -> list[Run]:
    """Seed by seed, so that an interrupted suite already has every row once."""
    plan = []
    for index, seed in enumerate(budget.seed_list):
        for name in budget.datasets:
            for key, method in METHODS.items():
                one_seed = method.deterministic or not method.main
                if method.task == DATASETS[name].task and (index == 0 or not one_seed):
                    plan.append(Run(name, key, seed))
    return plan


@dataclass(frozen=True)
class PreparedData:
    """The fixed splits of one data set, written once so that every method reads the same rows."""

    name: str
    folder: Path
    task: str
    labels: list[str]
    reported: str
    """`test` where the data set has one, else `validation`."""
    fingerprint: str

    def split_names(self) -> list[str]:
        return [s for s in ("validation", "test") if (self.folder / f"{s}.jsonl").is_file()]

    def examples(self, split: str) -> list[Example]:
        return load_split(DataConfig(data=str(self.folder)), split, self.task, LabelSet(self.labels), None)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    # Split on "\n" only: Twitter Financial News has U+0085 inside texts, which str.splitlines() (and
    # so lsllama's reader) takes for a line break. The files written from it escape that character.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def prepare_data(name: str, rows: int, eval_rows: int, cache: Path) -> PreparedData:
    """Sample the splits (lsllama's fixed `sample`, the one `--max-train-samples` uses) into the cache.

    A data set without a validation split (AG News) gets a fixed seeded carve of its training file,
    and the training rows are sampled from the rest, so the two never overlap.
    """
    source = data_root() / name
    folder = cache / "data" / f"{name}-train{rows}-eval{eval_rows}-v{DATA_FORMAT}"
    if not folder.is_dir():
        files = {split: source / f"{split}.jsonl" for split in ("train", "validation", "test")}
        splits = {split: _read_jsonl(path) for split, path in files.items() if path.is_file()}
        if "validation" not in splits:
            pool = splits["train"]
            carve = set(random.Random(CARVE_SEED).sample(range(len(pool)), CARVED_VALIDATION_ROWS))
            splits["validation"] = [row for i, row in enumerate(pool) if i in carve]
            splits["train"] = [row for i, row in enumerate(pool) if i not in carve]
        tmp = atomic_folder(folder)
        for split, split_rows in splits.items():
            kept = sample(split_rows, rows if split == "train" else eval_rows)
            (tmp / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept))
        shutil.copyfile(source / "labels.txt", tmp / "labels.txt")
        commit_folder(tmp, folder)
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    task = DATASETS[name].task
    labels = resolve_labels(DataConfig(data=str(folder)), task).names
    reported = "test" if (folder / "test.jsonl").is_file() else "validation"
    return PreparedData(name, folder, task, labels, reported, digest.hexdigest())


def texts(data: PreparedData, split: str) -> LabelledTexts:
    rows = data.examples(split)
    return LabelledTexts([e.text or "" for e in rows], [e.label or 0 for e in rows])


def sentences(data: PreparedData, split: str) -> tuple[list[list[str]], list[list[str]]]:
    """Words and gold IOB2 tag names per sentence."""
    rows = data.examples(split)
    return [e.words or [] for e in rows], [[data.labels[t] for t in e.tags or []] for e in rows]
