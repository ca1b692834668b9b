"""The Python API: train a run, load it, predict, evaluate.

from lsllama import Classifier, build_config
clf = Classifier.train(build_config(overrides={"data": {"data": "sst2"}}), "runs/sst2")
clf = Classifier.load("runs/sst2")
clf.predict(["a gorgeous film"])          # -> ["positive"]  (multi-label: [["positive", ...]]; regression: [4.2])
clf.predict_proba(["a gorgeous film"])    # -> array of shape (1, 2)
clf.predict("a gorgeous film")            # a string is one text: -> ["positive"]; [] -> []
Classifier.load("runs/sst2", precision="fp32")  # exact: probabilities do not depend on the batch (to 1e-4)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from lsllama.config import PRECISIONS, RunConfig
from lsllama.data.dataset import Example, LabelSet, load_split
from lsllama.data.encoding import encode_examples, shared_prefix_ids
from lsllama.errors import DataError, UsageError
from lsllama.evaluation.evaluate import predict_logits, softmax, split_metrics
from lsllama.evaluation.scoring import sigmoid
from lsllama.evaluation.spans import extract_entities
from lsllama.modeling.model import LabelSupervisedModel, build_model
from lsllama.run_folder import MODEL_WEIGHTS, TOKENIZER, RunFolder
from lsllama.training.loop import train_run

WORD_PATTERN = re.compile(r"\w+(?:['\-.]\w+)*|[^\w\s]")
"""Raw text -> words: runs of letters/digits (keeping inner ' - . as in "don't", "U.S", "1996-08-22"),
and every other non-space character as a word of its own (CoNLL-style punctuation)."""


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    matches = list(WORD_PATTERN.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


@dataclass
class Entity:
    type: str
    start_word: int
    end_word: int
    text: str
    start_char: int
    end_char: int


Texts = str | Sequence[str]
"""What the prediction methods take: a list of texts, or one text as a plain string."""


def as_texts(texts: Texts, name: str) -> list[str]:
    """A string is one text (iterating it would give one text per character); anything else must be a
    sequence of texts."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(texts).__name__}")
    return list(texts)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Classifier:
    """A trained label-supervised model with its tokenizer, label names and config."""

    def __init__(self, model: LabelSupervisedModel, tokenizer: Any, config: RunConfig, device: torch.device):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        model.share_prefix(shared_prefix_ids(config.data, config.task, tokenizer))
        self.labels = LabelSet(config.data.labels or [], config.data.problem)
        self.device = device

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def problem(self) -> str:
        """`single_label`, `multi_label` or `regression` (sequence task; the token task is single-label)."""
        return self.config.data.problem

    @classmethod
    def train(
        cls, config: RunConfig, output: str | Path, resume: bool | None = None, progress: bool = True
    ) -> Classifier:
        """Train a run into `output` and return it, ready to predict. A constructor rather than scikit-learn's
        `fit` (which returns the instance it trained): a Classifier exists only once it is trained."""
        model = train_run(config, output, resume=resume, progress=progress).model
        if model is None:  # finished before, trained in several processes or compiled: reload the run
            return cls.load(output)
        # The backbone in memory is the one a reload would read (its weights are frozen): only the best
        # LoRA and head weights are read back, which keeps peak memory at the training run's.
        return cls._with_best_weights(RunFolder.locate(Path(output)), model, next(model.parameters()).device)

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        device: str | torch.device | None = None,
        merge: bool = True,
        precision: str | None = None,
    ) -> Classifier:
        """A run for inference. `merge` folds LoRA into the frozen weights: no per-layer adapter overhead,
        at the cost of one rounding of the merged weights when they are bf16. `precision` (`auto`, `bf16`,
        `fp32`; default: the run's own) is how the backbone runs: bf16 is faster where the hardware has it,
        but a text's probabilities then move by up to ~0.02 with the batch it shares (other lengths, other
        kernel blocking); `fp32` makes them agree to 1e-4 whatever the batch."""
        run = RunFolder.locate(Path(run_dir))
        run.check_complete()
        config = run.config()
        if precision is not None:
            if precision not in PRECISIONS:
                raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
            config.model.precision = precision
        device = torch.device(device) if device is not None else default_device()
        tokenizer = AutoTokenizer.from_pretrained(run.file(TOKENIZER))
        labels = run.labels()
        # Building draws the head's and LoRA's initial values (overwritten by the run's weights) from the
        # global RNG: on a forked state, so loading leaves the caller's random stream where it was.
        forked = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            model = build_model(config.model, config.task, len(labels), tokenizer, device, config.data.problem)
        return cls._with_best_weights(run, model, device, merge, tokenizer, config)

    @classmethod
    def _with_best_weights(
        cls,
        run: RunFolder,
        model: LabelSupervisedModel,
        device: torch.device,
        merge: bool = True,
        tokenizer: Any = None,
        config: RunConfig | None = None,
    ) -> Classifier:
        config = config or run.config()
        config.data.labels = run.labels()
        model.load_weights(run.file(MODEL_WEIGHTS))
        if merge:
            model.merge_adapters()
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(run.file(TOKENIZER))
        return cls(model, tokenizer, config, device)

    # ---- sequence task ----
    def _text_examples(self, texts: Texts, pairs: Texts | None = None) -> list[Example]:
        """Examples from the caller's texts. A string is one text (not a sequence of one-character texts);
        a run trained on text pairs needs `pairs`, and one trained on single texts refuses them."""
        texts, pairs = as_texts(texts, "texts"), as_texts(pairs, "pairs") if pairs is not None else None
        pair_column = self.config.data.text_pair_column
        if pair_column and pairs is None:
            raise UsageError(f"this run was trained on text pairs (column {pair_column!r}): pass `pairs`")
        if pairs is not None and not pair_column:
            raise UsageError("this run was trained on single texts: it takes no `pairs`")
        if pairs is not None and len(pairs) != len(texts):
            raise UsageError(f"{len(texts)} texts but {len(pairs)} pairs")
        examples = []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"text {i} is empty or not a string")
            if pairs is not None and (not isinstance(pairs[i], str) or not pairs[i].strip()):
                raise DataError(f"pair {i} is empty or not a string")
            examples.append(Example(source=f"input:{i + 1}", text=text, text_pair=pairs[i] if pairs else None))
        return examples

    def predict_proba(self, texts: Texts, pairs: Texts | None = None, batch_size: int = 64) -> np.ndarray:
        """Probability of every label, shape (texts, labels), in `self.labels.names` order: a softmax over
        the labels, or (multi-label) each label's own sigmoid. A string is one text: shape (1, labels)."""
        self._require("sequence")
        if self.problem == "regression":
            raise UsageError("a regression run predicts values, not probabilities: use predict")
        outputs = np.asarray(self._logits(self._text_examples(texts, pairs), batch_size))
        return sigmoid(outputs) if self.problem == "multi_label" else softmax(outputs)

    def predict(
        self, texts: Texts, pairs: Texts | None = None, batch_size: int = 64
    ) -> list[str] | list[list[str]] | list[float]:
        """One label per text; multi-label: the labels whose probability reaches their tuned threshold;
        regression: the predicted value. Always a list: a string is one text, and gives a list of one."""
        key = {"single_label": "label", "multi_label": "labels", "regression": "value"}[self.problem]
        return [record[key] for record in self.records(texts, pairs, batch_size)]

    def records(self, texts: Texts, pairs: Texts | None = None, batch_size: int = 64) -> list[dict[str, Any]]:
        """The JSON records `lsllama predict` and `lsllama serve` answer with, one per text."""
        self._require("sequence")
        texts = as_texts(texts, "texts")
        names = self.labels.names
        if self.problem == "regression":
            values = np.asarray(self._logits(self._text_examples(texts, pairs), batch_size)).reshape(-1)
            return [{"text": text, "value": float(v)} for text, v in zip(texts, values, strict=True)]
        probs = self.predict_proba(texts, pairs, batch_size)
        records = []
        for text, p in zip(texts, probs, strict=True):
            record: dict[str, Any] = {"text": text}
            if self.problem == "multi_label":
                chosen = p >= self.thresholds
                record["labels"] = [name for name, keep in zip(names, chosen, strict=True) if keep]
            else:
                best = int(p.argmax())
                record.update(label=names[best], score=float(p[best]))
            record["probabilities"] = dict(zip(names, map(float, p), strict=True))
            records.append(record)
        return records

    @property
    def thresholds(self) -> np.ndarray:
        """Multi-label: each label's decision threshold, tuned on validation when the model was kept."""
        return self.model.thresholds.detach().cpu().numpy()

    # ---- token task ----
    def predict_tags(self, sentences: list[list[str]], batch_size: int = 64) -> list[list[str]]:
        """One tag per word for pre-tokenized sentences."""
        self._require("token")
        examples = []
        for i, words in enumerate(sentences):
            if not words or any(not isinstance(w, str) or not w.strip() for w in words):
                raise DataError(f"sentence {i} is empty or has an empty word")
            examples.append(Example(source=f"input:{i + 1}", words=list(words)))
        logits = self._logits(examples, batch_size)
        return [[self.labels.names[t] for t in sentence.argmax(axis=-1)] for sentence in logits]

    def predict_entities(self, texts: str | Sequence[str | list[str]], batch_size: int = 64) -> list[list[Entity]]:
        """Entities with type, word span and character offsets. A string is split into words by
        `WORD_PATTERN`; a list of words is taken as is (offsets then refer to the words joined by spaces).
        A string alone is one text (a list of one result)."""
        self._require("token")
        texts = [texts] if isinstance(texts, str) else list(texts)
        words_list, spans_list = [], []
        for i, text in enumerate(texts):
            if isinstance(text, str):
                words, spans = split_words(text)
                if not words:
                    raise DataError(f"text {i} has no words")
            else:
                words, spans, position = list(text), [], 0
                for word in words:
                    spans.append((position, position + len(word)))
                    position += len(word) + 1
            words_list.append(words)
            spans_list.append(spans)
        all_tags = self.predict_tags(words_list, batch_size)
        results = []
        for text, words, spans, tags in zip(texts, words_list, spans_list, all_tags, strict=True):
            source = text if isinstance(text, str) else " ".join(words)
            entities = []
            for kind, start, end in extract_entities(tags):
                begin, finish = spans[start][0], spans[end - 1][1]
                entities.append(Entity(kind, start, end, source[begin:finish], begin, finish))
            results.append(entities)
        return results

    # ---- both ----
    def evaluate(
        self,
        data: str | None = None,
        split: str = "validation",
        batch_size: int = 64,
        max_samples: int | None = None,
        file: str | None = None,
    ) -> dict[str, Any]:
        """Metrics on a labelled split (the run's own data unless `data` / `file` is given)."""
        cfg = self.config.data
        if data is not None or file is not None:  # labels are read by name: data naming others is refused
            cfg = type(cfg)(
                **{**cfg.__dict__, "data": data, "train_file": None, "validation_file": None, "test_file": None}
            )
            if file is not None:  # the whole file, whichever split is asked for
                if not Path(file).is_file():
                    raise UsageError(f"--file {file}: no such file")
                cfg.data, cfg.train_file, cfg.validation_file, cfg.test_file = None, file, file, file
        examples = load_split(cfg, split, self.task, self.labels, max_samples)
        items, altered = encode_examples(examples, self.task, self.tokenizer, cfg)
        logits = predict_logits(
            self.model, self.task, examples, items, self.tokenizer.pad_token_id, batch_size, self.device, progress=True
        )
        thresholds = self.thresholds if self.problem == "multi_label" else None
        metrics = split_metrics(self.task, examples, logits, self.labels, thresholds)
        if self.task == "token":
            metrics["windowed_sentences"] = altered
        else:  # texts longer than --max-length: cut, or read in windows (long_text says which)
            metrics["truncated_texts"], metrics["long_text"] = altered, cfg.long_text
        return metrics

    def _logits(self, examples: list[Example], batch_size: int) -> np.ndarray | list[np.ndarray]:
        if not examples:  # nothing to run: an empty result of the right shape
            width = 1 if self.problem == "regression" else len(self.labels.names)
            return [] if self.task == "token" else np.zeros((0, width), dtype=np.float32)
        items, _ = encode_examples(examples, self.task, self.tokenizer, self.config.data)
        return predict_logits(
            self.model, self.task, examples, items, self.tokenizer.pad_token_id, batch_size, self.device
        )

    def _require(self, task: str) -> None:
        if self.task != task:
            raise UsageError(f"this run is a {self.task}-task model; that call needs a {task}-task model")
