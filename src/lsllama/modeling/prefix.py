"""The tokens every row starts with, read once per evaluation instead of once per row.

With a template every row begins with the same ids (`Possible labels: negative or positive.\\nText:`:
about as many tokens as an SST-2 sentence). Under causal attention their keys and values do not depend
on what follows, so at inference they are computed once, for a batch of one, and every row of every
batch attends to them through transformers' own cache (`DynamicCache`) rather than recomputing them:
the same scores up to rounding, for fewer tokens. Training does not use this: the adapters change at
every step, and a second pass per step for the prefix costs more on a CPU than its tokens do inside the
batch (a pass has a large fixed cost: docs/performance.md).
"""

from __future__ import annotations

import copy
import inspect

import torch
from peft import PeftModel
from transformers import Cache, PretrainedConfig, PreTrainedModel


def cache_keyword(backbone: PreTrainedModel) -> str:
    """transformers 5.x renamed the forward argument `past_key_values` to `cache`; either works here."""
    base = backbone.get_base_model() if isinstance(backbone, PeftModel) else backbone
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def rescales_with_length(config: PretrainedConfig) -> bool:
    """Whether the rotary embedding changes with the longest position of each call (dynamic NTK scaling,
    longrope's long factors): then the prefix, computed alone, would get other frequencies than the rows
    it is shared with, so it is not shared."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    per_layer_type = [value for value in params.values() if isinstance(value, dict)]  # e.g. Gemma3
    return any(p.get("rope_type") in ("dynamic", "longrope") for p in (params, *per_layer_type))


class SharedPrefix:
    """The ids, and once computed the model's own cache of them (batch of one: each layer's keys and values,
    and what a sliding-window layer keeps of them). `forget` when the weights change: `LabelSupervisedModel`
    does on `train()`, on loading weights and on merging adapters."""

    def __init__(self, ids: list[int]):
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.keys_values: Cache | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def forget(self) -> None:
        self.keys_values = None

    def compute(self, backbone: PreTrainedModel, device: torch.device) -> None:
        """Run the prefix alone. Done at the first forward of an evaluation whatever the batch holds, so that
        every process of a sharded model (FSDP) makes this pass at the same call."""
        if self.keys_values is None:
            output = backbone(input_ids=self.ids.to(device)[None], use_cache=True)
            self.keys_values = output[cache_keyword(backbone)]

    def covers(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> bool:
        """Every row starts with the prefix and has a real token after it (the last token is pooled)."""
        n = len(self)
        if input_ids.shape[1] <= n:
            return False
        starts = (input_ids[:, :n] == self.ids.to(input_ids.device)).all()
        return bool(starts and attention_mask[:, :n].all() and attention_mask[:, n:].any(dim=1).all())

    def cache(self, batch_size: int) -> Cache:
        """A copy for one batch, one row per input row (the forward pass appends the batch's keys to it)."""
        assert self.keys_values is not None
        cache = copy.deepcopy(self.keys_values)
        cache.batch_repeat_interleave(batch_size)
        return cache
