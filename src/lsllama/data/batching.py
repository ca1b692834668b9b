"""Length-aware batches, so that little compute goes to padding.

The official code padded each 1,000-row chunk to its longest text and padded again in the collator:
up to 64 tokens of compute for a 10-token sentence. Here texts of similar length share a batch and a
batch is padded only to its own longest text (training batches: rounded up, `PAD_MULTIPLE`). The
batch plan is a pure function of (lengths, seed, epoch), which is what lets a resumed run continue at
the exact batch where it stopped, on any number of processes.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

from lsllama.tuning import PAD_MULTIPLE

if TYPE_CHECKING:
    from lsllama.data.encoding import Item

POOL_BATCHES = 64  # sort within pools of this many batches: grouped lengths, still a random order


def padded_length(length: int, multiple: int = 1) -> int:
    return -(-length // multiple) * multiple


def _split_into_batches(
    order: list[int], lengths: list[int], batch_size: int, max_tokens: int | None, multiple: int = 1
) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        longest_if_added = max(longest, padded_length(lengths[index], multiple))
        too_many = (
            len(current) >= batch_size if max_tokens is None else longest_if_added * (len(current) + 1) > max_tokens
        )
        if current and too_many:
            batches.append(current)
            current, longest_if_added = [], padded_length(lengths[index], multiple)
        current.append(index)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


def train_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Shuffle, sort by length inside pools, cut into batches, shuffle the batches."""
    rng = random.Random(f"{seed}-{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * POOL_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += _split_into_batches(chunk, lengths, batch_size, max_tokens, PAD_MULTIPLE)
    rng.shuffle(batches)
    return batches


def eval_batches(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Longest first (an out-of-memory shows at once), each batch of similar lengths."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return _split_into_batches(order, lengths, batch_size, max_tokens)


def shard(batch: list[int], rank: int, world_size: int) -> list[int]:
    """This process's share of a global batch; every process sees the same global batch plan."""
    return batch[rank::world_size]


def collate_items(
    items: list[Item], pad_id: int, with_token_labels: bool = False, multiple: int = 1
) -> dict[str, torch.Tensor]:
    """A batch of items: one row per window, and `groups` (row -> item) when
    some item is a long text read in windows, for the model to average its windows' pooled vectors."""
    rows = [row for item in items for row in item.rows()]
    labels = [item.token_labels or [] for item in items] if with_token_labels else None
    batch = collate(rows, pad_id, labels, multiple)
    if len(rows) > len(items):
        batch["groups"] = torch.tensor([i for i, item in enumerate(items) for _ in item.rows()], dtype=torch.long)
    return batch


def collate(
    sequences: list[list[int]], pad_id: int, labels: list[list[int]] | None = None, multiple: int = 1
) -> dict[str, torch.Tensor]:
    """Right-pad to the batch's longest sequence, rounded up to `multiple`; pooling reads the mask, not pad ids."""
    width = padded_length(max(len(s) for s in sequences), multiple)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels is not None:
        token_labels = torch.full((len(sequences), width), -100, dtype=torch.long)
        for row, lab in enumerate(labels):
            token_labels[row, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        batch["token_labels"] = token_labels
    return batch
