"""Where a training step and an inference batch spend their time and memory, on the default model.

    python benchmarks/profile_step.py [--rows 200] [--batch-size 16] [--steps 10] [--lora-dropout 0.05]

Builds the model as `lsllama train` does (same config, precision and LoRA), takes length-grouped
SST-2 batches, and prints: seconds per optimizer step (forward, backward, clip, AdamW), RSS after each
step next to the bytes held by live tensors, and torch.profiler's top operators for three training
steps and for one inference batch of the merged model. Use it before and after a change to the model
or loop; the speed benchmark (benchmarks/speed.py) is what compares with the official recipe.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from lsllama import build_config
from lsllama.data.batching import collate_items, train_batches
from lsllama.data.dataset import load_split, resolve_labels
from lsllama.data.encoding import encode_examples
from lsllama.modeling.loading import load_tokenizer
from lsllama.modeling.model import build_model
from lsllama.training.loop import _optimizer


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_tensor_mb() -> float:
    seen, total = set(), 0
    for obj in gc.get_objects():
        if torch.is_tensor(obj):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lora-dropout", type=float, default=None, help="default: the package default")
    args = parser.parse_args()

    model_overrides = {} if args.lora_dropout is None else {"lora_dropout": args.lora_dropout}
    cfg = build_config(overrides={"model": model_overrides, "data": {"data": "sst2"}}).resolved()
    tokenizer = load_tokenizer(cfg.model.name)
    labels = resolve_labels(cfg.data, "sequence")
    examples = load_split(cfg.data, "train", "sequence", labels, args.rows)
    items, _ = encode_examples(examples, "sequence", tokenizer, cfg.data)
    print(f"before the model: RSS {rss_mb():.0f} MB")
    model = build_model(cfg.model, "sequence", len(labels), tokenizer, torch.device("cpu")).train()
    print(f"model built ({cfg.model.precision}, LoRA dropout {cfg.model.lora_dropout}): RSS {rss_mb():.0f} MB")
    optimizer = _optimizer(model, cfg.train.learning_rate, cfg.train.weight_decay)
    batches = train_batches([it.n_tokens for it in items], args.batch_size, 0, 0)

    def step(batch: list[int]) -> tuple[float, float, float, float]:
        enc = collate_items([items[i] for i in batch], tokenizer.pad_token_id)
        marks = [time.perf_counter()]
        logits = model(enc["input_ids"], enc["attention_mask"])
        loss = F.cross_entropy(logits, torch.tensor([items[i].label for i in batch]))
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        return tuple(b - a for a, b in itertools.pairwise(marks))  # type: ignore[return-value]

    step(batches[0])  # warm-up: first-call allocations and kernel selection
    parts = []
    for k, batch in enumerate(batches[1 : args.steps + 1], start=1):
        parts.append(step(batch))
        print(f"step {k}: {sum(parts[-1]):.3f} s, RSS {rss_mb():.0f} MB, live tensors {live_tensor_mb():.0f} MB")
    mean = [sum(p[i] for p in parts) / len(parts) for i in range(4)]
    print(
        f"per step {sum(mean):.3f} s: forward {mean[0]:.3f}, backward {mean[1]:.3f}, "
        f"clip {mean[2]:.3f}, AdamW {mean[3]:.3f} (batch {args.batch_size})"
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[args.steps + 1 : args.steps + 4]:
            step(batch)
    print("training, 3 steps:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    model.merge_adapters()
    model.eval()
    enc = collate_items([items[i] for i in range(min(64, len(items)))], tokenizer.pad_token_id)
    with torch.no_grad():
        model(enc["input_ids"], enc["attention_mask"])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(enc["input_ids"], enc["attention_mask"])
    print("inference, one batch of 64:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
