"""One vector per text, read from the attention mask only.

Never from `input_ids != pad_token_id`: many decoders pad with their eos token, which can also occur
inside a text. Correct for left and right padding. The official code pooled over pad positions and
over per-token logits; here pad positions never contribute and pooling runs on hidden features.
"""

from __future__ import annotations

import torch


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real token of each row, whatever side the padding is on."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).amax(dim=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """hidden: (batch, seq, dim); attention_mask: (batch, seq) of 0/1. Returns (batch, dim)."""
    if mode == "last":
        index = last_token_index(attention_mask)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    mask = attention_mask.unsqueeze(-1).to(torch.bool)
    if mode == "mean":
        summed = hidden.masked_fill(~mask, 0.0).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(~mask, torch.finfo(hidden.dtype).min).amax(dim=1)
    raise ValueError(f"unknown pooling {mode!r}")
