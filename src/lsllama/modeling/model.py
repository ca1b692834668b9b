"""The label-supervised model: a decoder backbone (LoRA-adapted), pooling, and a linear label head.

No prompt and no label words: final hidden states -> (pool) -> linear head -> logits. The head and the
LoRA weights stay in fp32 even when the frozen backbone runs in bf16; 4/8-bit and bf16 heads are what
turned the official head NaN.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lsllama.config import ModelConfig
from lsllama.errors import RunError
from lsllama.modeling.loading import load_backbone
from lsllama.modeling.masks import configure_attention, text_config
from lsllama.modeling.pooling import pool


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with native bf16 matmul (AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "bf16" or (precision == "auto" and bf16_is_fast(device)):
        return torch.bfloat16
    return torch.float32


class LabelSupervisedModel(nn.Module):
    """Backbone + pooling + head. `task` is `sequence` (one label per text) or `token` (per token)."""

    def __init__(self, backbone: PreTrainedModel, num_labels: int, task: str, pooling: str, compute_dtype: torch.dtype):
        super().__init__()
        self.backbone = backbone
        self.task = task
        self.pooling = pooling
        self.compute_dtype = compute_dtype
        hidden_size = text_config(backbone.config).hidden_size
        # No bias on the sequence head, as in transformers' *ForSequenceClassification (and the official
        # code), so exports load in plain transformers; its token-classification classes keep one.
        self.score = nn.Linear(hidden_size, num_labels, bias=task == "token", dtype=torch.float32)
        nn.init.normal_(self.score.weight, std=0.02)
        if self.score.bias is not None:
            nn.init.zeros_(self.score.bias)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.compute_dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with self.autocast(input_ids.device):
            hidden = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state
        features = pool(hidden, attention_mask, self.pooling) if self.task == "sequence" else hidden
        # The head runs in fp32, outside autocast: cheap, and keeps logits and its gradients exact.
        return self.score(features.float())

    def merge_adapters(self) -> None:
        """Fold LoRA into the backbone's weights for inference (quantized weights cannot hold the update)."""
        if (
            isinstance(self.backbone, PeftModel)
            and not getattr(self.backbone, "is_loaded_in_4bit", False)
            and not (getattr(self.backbone, "is_loaded_in_8bit", False))
        ):
            self.backbone = self.backbone.merge_and_unload()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().contiguous() for n, p in self.named_parameters() if p.requires_grad}

    def save_weights(self, path: Path) -> None:
        save_file(self.trainable_state_dict(), str(path))

    def load_weights(self, path: Path) -> None:
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for a corrupt file
            raise RunError(f"{path}: cannot read weights ({exc})") from None
        expected = {n for n, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise RunError(
                f"{path}: weights do not match the run's config "
                f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
            )
        with torch.no_grad():
            params = dict(self.named_parameters())
            for name, tensor in state.items():
                if params[name].shape != tensor.shape:
                    raise RunError(
                        f"{path}: tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(params[name].shape)}"
                    )
                params[name].copy_(tensor)


def lora_config(cfg: ModelConfig) -> LoraConfig:
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets,
        bias="none",
    )


def build_model(
    cfg: ModelConfig,
    task: str,
    num_labels: int,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
) -> LabelSupervisedModel:
    """Backbone with masks set and LoRA injected, plus a fresh head; the same code builds for load."""
    dtype = resolve_dtype(cfg.precision, device)
    backbone = load_backbone(cfg.name, tokenizer, dtype, cfg.trust_remote_code, cfg.quantization)
    configure_attention(backbone, bool(cfg.bidirectional), cfg.unmask_from_layer)
    if cfg.quantization:
        from peft import prepare_model_for_kbit_training

        backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        backbone.enable_input_require_grads()
    if cfg.lora_r > 0:
        backbone = get_peft_model(backbone, lora_config(cfg), autocast_adapter_dtype=True)
        for param in backbone.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    else:
        backbone.requires_grad_(False)
    model = LabelSupervisedModel(backbone, num_labels, task, cfg.pooling, dtype)
    return model if cfg.quantization else model.to(device)
