"""LoRA training throughput of a Llama-2-7B-shaped model on one GPU: tokens/s, MFU, peak memory.

    python benchmarks/gpu.py [--batches 8x64 32x64 64x64] [--steps 10] [--peak-tflops 989]
    python benchmarks/gpu.py --tiny          # the same code on a tiny config (CPU smoke test)

Random weights with Llama-2-7B's shapes (no download), bf16 frozen weights, LoRA on all linear layers
in fp32 with bf16 autocast, lsllama's own model wrapper and loss, bidirectional attention as in
LS-unLLaMA. MFU counts 4 x non-embedding parameters per token (LoRA computes no weight gradients for
the frozen weights, so not the usual 6 x), as benchmarks/speed.py does, against the card's dense bf16
peak (--peak-tflops; H100/H200 SXM: 989).
Targets: batch 8 x 64 fits in 20 GB (the paper's 24 GB card), and MFU >= 45% at the best batch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModel, LlamaConfig

from lsllama.config import ModelConfig
from lsllama.modeling.masks import configure_attention
from lsllama.modeling.model import LabelSupervisedModel, lora_config

LLAMA2_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
}


def build(shape: dict, device: torch.device) -> tuple[LabelSupervisedModel, int]:
    from peft import get_peft_model

    config = LlamaConfig(**shape, pad_token_id=0)
    with torch.device(device):
        backbone = AutoModel.from_config(config, dtype=torch.bfloat16)
    configure_attention(backbone, bidirectional=True, unmask_from_layer=None)
    backbone = get_peft_model(backbone, lora_config(ModelConfig()))
    for p in backbone.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    h, i, n = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = shape["num_key_value_heads"] * (h // shape["num_attention_heads"])
    non_embedding = n * (2 * h * h + 2 * h * kv + 3 * h * i)
    model = LabelSupervisedModel(backbone, 2, "sequence", "mean", torch.bfloat16).to(device)
    return model, non_embedding


def measure(model: LabelSupervisedModel, batch: int, length: int, steps: int, device: torch.device) -> dict:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    ids = torch.randint(1, 1000, (batch, length), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 2):
        if step == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"batch": batch, "length": length, "tokens_per_s": batch * length / seconds, "peak_gb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", default=["8x64", "32x64", "64x64", "128x64"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--tiny", action="store_true", help="tiny config, for a CPU smoke test")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "gpu.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, params = build(TINY if args.tiny else LLAMA2_7B, device)
    rows = []
    for spec in args.batches:
        batch, length = map(int, spec.split("x"))
        try:
            row = measure(model, batch, length, args.steps, device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            rows.append({"batch": batch, "length": length, "oom": True})
            continue
        row["mfu"] = 4 * params * row["tokens_per_s"] / (args.peak_tflops * 1e12)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": "tiny" if args.tiny else "llama-2-7b",
        "rows": rows,
        "best_mfu": max((r["mfu"] for r in rows if "mfu" in r), default=None),
    }
    if not args.tiny:
        args.output.parent.mkdir(exist_ok=True)
        args.output.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
