"""The official LS-LLaMA recipe, as the reference implementation that benchmarks compare against.

Reproduces what the authors' `unllama_seq_clf.py`-style scripts do, with transformers' own classes:
AutoModelForSequenceClassification, the whole model cast to bf16, PEFT LoRA (r 12, alpha 32, dropout
0.1) on q_proj / v_proj, texts tokenized by `datasets.map(batched=True)` with `padding="longest"`
(so every 1,000-row chunk is padded to its longest text, max length 64), DataCollatorWithPadding,
and Trainer with batch 8, lr 1e-4, weight decay 0.01, linear decay without warmup. Model selection
here is on validation (the official scripts used test in three of four cases; we do not copy that).

`datasets` and transformers' Trainer are imported by `run_official` only: the lsllama workers of
`benchmarks/speed.py` read `ADAPTER` from here, and whatever a process imports counts in its peak RSS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lsllama.modeling.loading import model_source

if TYPE_CHECKING:
    from datasets import Dataset

MAX_LENGTH = 64
ADAPTER = {"lora_r": 12, "lora_alpha": 32, "lora_dropout": 0.1, "lora_targets": ["q_proj", "v_proj"]}
"""The recipe's LoRA in lsllama's ModelConfig terms (PEFT's default targets for Llama are q and v), so
that a benchmark can train lsllama with the same adaptation and compare the engineering alone."""


@dataclass
class OfficialResult:
    train_seconds: float
    train_samples: int
    train_real_tokens: int
    train_computed_tokens: int
    eval_seconds: float
    eval_samples: int
    eval_real_tokens: int
    accuracy: float


def _dataset(tokenizer, texts: list[str], labels: list[int]) -> Dataset:
    from datasets import Dataset

    ds = Dataset.from_dict({"text": texts, "label": labels})

    def preprocess(batch):
        return tokenizer(batch["text"], padding="longest", max_length=MAX_LENGTH, truncation=True)

    return ds.map(preprocess, batched=True, remove_columns=["text"])


def run_official(
    model_name: str,
    train_texts: list[str],
    train_labels: list[int],
    eval_texts: list[str],
    eval_labels: list[int],
    num_labels: int,
    output_dir: Path,
    epochs: float = 1.0,
    seed: int = 42,
    speed_texts: list[str] | None = None,
) -> OfficialResult:
    """Train with the official recipe; time training, and inference on `speed_texts` (default: train)."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    source = model_source(model_name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels).bfloat16()
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        inference_mode=False,
        r=ADAPTER["lora_r"],
        lora_alpha=ADAPTER["lora_alpha"],
        lora_dropout=ADAPTER["lora_dropout"],
    )
    model = get_peft_model(model, peft_config)

    train_ds = _dataset(tokenizer, train_texts, train_labels)
    eval_ds = _dataset(tokenizer, eval_texts, eval_labels)
    speed_texts = speed_texts if speed_texts is not None else train_texts
    speed_ds = _dataset(tokenizer, speed_texts, [0] * len(speed_texts))
    args = TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=1e-4,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        num_train_epochs=epochs,
        weight_decay=0.01,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
        logging_steps=50,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer=tokenizer),
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    trainer.predict(speed_ds)
    eval_seconds = time.perf_counter() - start
    predictions = trainer.predict(eval_ds).predictions
    logits = predictions[0] if isinstance(predictions, tuple) else predictions
    accuracy = float((np.asarray(logits).argmax(-1) == np.asarray(eval_labels)).mean())

    def real(texts: list[str]) -> int:
        return sum(len(ids) for ids in tokenizer(texts, max_length=MAX_LENGTH, truncation=True)["input_ids"])

    return OfficialResult(
        train_seconds=train_seconds,
        train_samples=len(train_texts),
        train_real_tokens=real(train_texts),
        train_computed_tokens=sum(len(ids) for ids in train_ds["input_ids"]),
        eval_seconds=eval_seconds,
        eval_samples=len(speed_texts),
        eval_real_tokens=real(speed_texts),
        accuracy=accuracy,
    )
