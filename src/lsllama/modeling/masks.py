"""Causal, bidirectional and layer-wise attention, through transformers' public mechanisms only.

- Bidirectional (LS-unLLaMA): `config.is_causal = False` makes transformers build a bidirectional
  mask that still hides padded keys, and makes the sdpa / flash kernels non-causal. The official
  code replaced the mask with zeros instead, so every token attended to padding.
- Layer-wise (`unmask_from_layer=K`): the mask is built bidirectional, and a registered attention
  function re-imposes causality in layers below K. transformers looks the mask builder up by the same
  name as the attention function, so both are registered (an unregistered mask name silently yields
  no mask at all, losing padding).

The settings live on the model config, so they are saved in config.json and restored on load.

Every family lsllama knows (Llama / SmolLM2, Mistral, Qwen2, Qwen3, Gemma, Gemma2, Gemma3, Phi-3,
SmolLM3) builds its masks through transformers' `create_causal_mask` / `create_sliding_window_causal_mask`,
which honour `is_causal`; sliding-window layers become a symmetric window (a token sees the tokens
within the window on both sides). A family that builds its mask some other way would stay causal
while claiming not to, so after unmasking the model is run once on a small padded batch
(`check_unmasked`) and refused with a clear error if a token does not see a later one, or sees padding.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from transformers import AttentionInterface, AttentionMaskInterface, PretrainedConfig, PreTrainedModel
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lsllama.errors import UsageError

LAYERWISE_PREFIX = "lsllama_layerwise_"
LAYER_KEY = "lsllama_unmask_from_layer"
CAUSAL_LAYER = "lsllama_causal_layer"
"""Set on each attention module of a layer-wise model: whether its layer stays causal. A flag rather than
a comparison of `layer_idx` in the forward pass: torch.compile specializes on that integer and would
compile one graph per layer (then give up on the rest) instead of two."""


def _base_attention(module: torch.nn.Module, base: str) -> Callable:
    if base == "eager":
        # Each family has its own eager function (softcapping, sinks...): use the module's own.
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def _with_causality(
    mask: torch.Tensor | None, q_len: int, kv_len: int, device: torch.device, eager_dtype: torch.dtype | None
) -> torch.Tensor:
    """Intersect a (possibly absent) bidirectional mask with a causal one; no row ends up empty."""
    causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril(kv_len - q_len)
    if mask is not None and mask.dtype != torch.bool:  # eager: additive float mask
        return mask.masked_fill(~causal, torch.finfo(mask.dtype).min)
    keep = causal[None, None] if mask is None else mask & causal
    # A left-padded query sees only padding below it; let it see itself rather than produce NaN.
    keep = keep | torch.eye(q_len, kv_len, dtype=torch.bool, device=device)
    if eager_dtype is None:
        return keep
    return torch.zeros(keep.shape, dtype=eager_dtype, device=device).masked_fill(~keep, torch.finfo(eager_dtype).min)


def _layerwise_attention(base: str) -> Callable:
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        causal = getattr(module, CAUSAL_LAYER, None)
        if causal is None:  # a model whose attention lsllama did not configure (loaded by transformers alone)
            start = getattr(module.config, LAYER_KEY, None)
            causal = start is not None and module.layer_idx < start
        if causal:
            eager_dtype = query.dtype if base == "eager" else None
            attention_mask = _with_causality(attention_mask, query.shape[2], key.shape[2], query.device, eager_dtype)
        kwargs["is_causal"] = False
        return _base_attention(module, base)(module, query, key, value, attention_mask, *args, **kwargs)

    return attention


for _base in ("sdpa", "eager"):
    AttentionInterface.register(LAYERWISE_PREFIX + _base, _layerwise_attention(_base))
    AttentionMaskInterface.register(LAYERWISE_PREFIX + _base, ALL_MASK_ATTENTION_FUNCTIONS[_base])


def text_config(config: PretrainedConfig) -> PretrainedConfig:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def is_causal(config: PretrainedConfig) -> bool:
    """Whether every layer of this (text) config attends causally: neither unmasked nor unmasked from a layer."""
    return getattr(config, "is_causal", True) is not False and getattr(config, LAYER_KEY, None) is None


def configure_attention(model: PreTrainedModel, bidirectional: bool, unmask_from_layer: int | None) -> None:
    """Set causal / bidirectional / layer-wise attention on a loaded backbone, in place."""
    config = text_config(model.config)
    n_layers = config.num_hidden_layers
    if unmask_from_layer is not None and not 0 <= unmask_from_layer <= n_layers:
        raise UsageError(
            f"--unmask-from-layer must be between 0 and {n_layers} for this model, got {unmask_from_layer}"
        )
    unmask = bidirectional or unmask_from_layer is not None
    impl = config._attn_implementation or "sdpa"
    base = impl.removeprefix(LAYERWISE_PREFIX)
    if unmask and base not in ("sdpa", "eager"):
        raise UsageError(
            f"bidirectional attention is supported with the sdpa and eager attention implementations, not {base!r}"
        )
    config.is_causal = not unmask
    for module in model.modules():
        if hasattr(module, "is_causal") and hasattr(module, "layer_idx"):
            # With no padding transformers may skip the mask and fall back to the module's flag.
            module.is_causal = not unmask
            setattr(module, CAUSAL_LAYER, unmask_from_layer is not None and module.layer_idx < unmask_from_layer)
    if unmask_from_layer is not None and unmask_from_layer > 0:
        setattr(config, LAYER_KEY, unmask_from_layer)
        model.set_attn_implementation(LAYERWISE_PREFIX + base)
    else:
        if hasattr(config, LAYER_KEY):
            delattr(config, LAYER_KEY)
        if impl != base:
            model.set_attn_implementation(base)
    if unmask and (unmask_from_layer is None or unmask_from_layer < n_layers) and not is_deepspeed_zero3_enabled():
        check_unmasked(model)  # (ZeRO-3 holds the weights partitioned until its engine runs: no forward here)


@torch.no_grad()
def check_unmasked(model: PreTrainedModel) -> None:
    """Refuse a model that unmasking did not make bidirectional, or that now attends to padding.

    Four right-padded rows: (a b c p), (a b d p), (a b c q), (a b c p). Token b must change with the
    later token (row 1 vs 0) and must not change with the padded one (row 2 vs 0). Identical rows (3 vs 0)
    give the numerical noise to compare against, so the check holds in bf16 and 4-bit too.
    """
    vocab = text_config(model.config).vocab_size
    a, b, c, d, p, q = ((torch.arange(6) + 100) % vocab).tolist()
    device = model.get_input_embeddings().weight.device
    ids = torch.tensor([[a, b, c, p], [a, b, d, p], [a, b, c, q], [a, b, c, p]], device=device)
    mask = torch.tensor([[1, 1, 1, 0]] * 4, device=device)
    was_training = model.training
    model.eval()
    hidden = model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state.float()
    model.train(was_training)
    real = hidden[:, :3]
    floor = max(10 * float((real[3] - real[0]).abs().max()), 1e-6 * float(real[0].abs().max()))
    name = type(model).__name__
    impl = text_config(model.config)._attn_implementation
    if float((real[1, 1] - real[0, 1]).abs().max()) <= floor:
        raise UsageError(
            f"{name} stays causal with bidirectional attention requested ({impl} attention): its mask does not "
            "follow config.is_causal, so lsllama cannot unmask it: train it causal (--causal)"
        )
    if float((real[2] - real[0]).abs().max()) > floor:
        raise UsageError(
            f"{name} attends to padding once its causal mask is removed ({impl} attention); "
            "lsllama cannot make it bidirectional correctly: train it causal (--causal)"
        )
