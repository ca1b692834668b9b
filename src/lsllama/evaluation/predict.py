"""Run a model over encoded items and put the logits back in example order.

Items are sorted by length for speed and their order restored afterwards. Under several processes
each one takes every world_size-th batch and the pieces are gathered, so every item is computed
exactly once, whatever the split size.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from lsllama.data.batching import collate_items, eval_batches
from lsllama.data.encoding import Item
from lsllama.tuning import CPU_BATCH_TOKENS


@torch.no_grad()
def item_logits(
    model: torch.nn.Module,
    items: list[Item],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    max_tokens: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> dict[int, np.ndarray]:
    """Item index -> logits: (labels,) for a text (all its windows together), (words predicted here, labels)
    for a window of a sentence. Batches hold at most `batch_size` rows and `max_tokens` padded tokens
    (None: `CPU_BATCH_TOKENS` on CPU, no token limit elsewhere)."""
    if max_tokens is None and device.type == "cpu":
        max_tokens = CPU_BATCH_TOKENS
    was_training = model.training
    model.eval()
    all_batches = eval_batches([it.n_tokens for it in items], batch_size, max_tokens)
    batches = all_batches[rank::world_size]
    # Wrapped models (DDP buffer sync, FSDP all-gathers) need the same number of forward calls on
    # every rank: a rank with fewer batches repeats one and discards the result.
    padding = -(-len(all_batches) // world_size) - len(batches)
    results: dict[int, np.ndarray] = {}
    for number, batch in enumerate(
        tqdm(batches + all_batches[:padding], desc="predict", disable=not progress, leave=False)
    ):
        enc = collate_items([items[i] for i in batch], pad_id)
        groups = enc["groups"].to(device) if "groups" in enc else None
        logits = model(enc["input_ids"].to(device), enc["attention_mask"].to(device), groups).float().cpu()
        if number >= len(batches):
            continue
        for row, index in enumerate(batch):
            item = items[index]
            if item.word_positions or logits.dim() == 3:
                positions = list(item.word_positions.values())
                results[index] = logits[row, positions].numpy()
            else:
                results[index] = logits[row].numpy()
    if world_size > 1:
        from accelerate.utils import gather_object

        merged: dict[int, np.ndarray] = {}
        for part in gather_object([results]):
            merged.update(part)
        results = merged
    model.train(was_training)
    return results


def sequence_logits(items: list[Item], logits: dict[int, np.ndarray], n_examples: int) -> np.ndarray:
    out = np.zeros((n_examples, next(iter(logits.values())).shape[-1]), dtype=np.float32)
    for index, item in enumerate(items):
        out[item.example_index] = logits[index]
    return out


def word_logits(items: list[Item], logits: dict[int, np.ndarray], word_counts: list[int]) -> list[np.ndarray]:
    """Per sentence, one row of logits per word, each from the window that owns the word."""
    n_labels = next(iter(logits.values())).shape[-1]
    out = [np.full((count, n_labels), np.nan, dtype=np.float32) for count in word_counts]
    for index, item in enumerate(items):
        for row, word in enumerate(item.word_positions):
            out[item.example_index][word] = logits[index][row]
    missing = [i for i, arr in enumerate(out) if np.isnan(arr).any()]
    if missing:
        raise AssertionError(f"words without a prediction in sentences {missing[:5]}")
    return out
