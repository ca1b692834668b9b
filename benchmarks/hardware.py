"""What every benchmark record says about the machine it ran on, and the matmul rate and parameter count that
its useful FLOP/s are computed from."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch


def machine() -> str:
    """CPU model (from /proc/cpuinfo where there is one), core count, GPU if any, torch version."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def bf16_matmul_gflops(largest: int = 2048, seconds: float = 3.0) -> float:
    """This CPU's bf16 matmul rate, measured now: the peak that useful FLOP/s are a fraction of, taken in
    the same run as the throughput it divides (clock and neighbours vary between runs). Square products
    grow to `largest` while one takes under a thirtieth of `seconds`: a CPU with bf16 matmul units gets
    there in milliseconds, one without (one 2048 product in tens of seconds) is measured on smaller ones."""
    size = 256
    while True:
        a = torch.randn(size, size, dtype=torch.bfloat16)
        b = torch.randn(size, size, dtype=torch.bfloat16)
        start = time.perf_counter()
        a @ b  # also the warm-up of this size
        if size >= largest or time.perf_counter() - start > seconds / 30:
            break
        size *= 2
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def non_embedding_params(model: str | Any = "smollm2-135m") -> int:
    """Parameters every token passes through (the decoder layers' projections; embeddings are a lookup), for a
    model name or a transformers config: a token's useful FLOPs are 2x this for inference and 4x for LoRA
    training (forward, and backward through the activations only: frozen weights get no gradients)."""
    if isinstance(model, str):
        from transformers import AutoConfig

        from lsllama.modeling.loading import model_source, tiny_family, tiny_random_config

        family = tiny_family(model)
        model = tiny_random_config(1, None, family) if family else AutoConfig.from_pretrained(model_source(model))
    h, i, n = model.hidden_size, model.intermediate_size, model.num_hidden_layers
    kv = model.num_key_value_heads * (h // model.num_attention_heads)
    return n * (2 * h * h + 2 * h * kv + 3 * h * i)
