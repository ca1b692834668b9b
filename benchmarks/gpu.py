"""LoRA training throughput of a Llama-2-7B-shaped model on one GPU: tokens/s, MFU, peak memory.

    python -m benchmarks gpu [--batches 8x64 32x64 64x64] [--steps 10] [--peak-tflops 989]
    python -m benchmarks gpu --tiny          # the same code on a tiny config (CPU smoke test)

Random weights with Llama-2-7B's shapes (no download), bf16 frozen weights, LoRA on all linear layers
in fp32 with bf16 autocast, lsllama's own model wrapper and loss, bidirectional attention as in
LS-unLLaMA. MFU counts 4 x non-embedding parameters per token (LoRA computes no weight gradients for
the frozen weights, so not the usual 6 x), as benchmarks/speed.py does, against the card's dense bf16
peak (--peak-tflops; H100/H200 SXM: 989).
Targets: batch 8 x 64 fits in 20 GB (the paper's 24 GB card), and MFU >= 45% at the best batch.
Writes benchmarks/results/gpu.json and .md (--tiny: under benchmarks/cache/gpu/).
"""

from __future__ import annotations

import json
import time

import torch
from transformers import AutoModel, LlamaConfig

from benchmarks import record
from benchmarks.hardware import non_embedding_params
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
    model = LabelSupervisedModel(backbone, 2, "sequence", "mean", torch.bfloat16).to(device)
    return model, non_embedding_params(config)


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


def markdown_row(r: dict) -> str:
    if r.get("oom"):
        return f"| {r['batch']} x {r['length']} | out of memory | | |"
    memory = "" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
    return f"| {r['batch']} x {r['length']} | {r['tokens_per_s']:.0f} | {r['mfu']:.3f} | {memory} |"


def main(argv: list[str]) -> None:
    parser = record.parser(__name__, __doc__)
    parser.add_argument("--batches", nargs="+", default=["8x64", "32x64", "64x64", "128x64"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--tiny", action="store_true", help="tiny config, for a CPU smoke test")
    args = parser.parse_args(argv)
    started = record.Record.start(__name__, argv)
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
    shape = "tiny" if args.tiny else "llama-2-7b"
    summary = {"shape": shape, "rows": rows, "best_mfu": max((r["mfu"] for r in rows if "mfu" in r), default=None)}
    details = f"{shape} shapes, LoRA training, {args.steps} timed steps, MFU against {args.peak_tflops:g} TFLOP/s."
    table = [started.header(details), "", "| batch x length | tokens/s | MFU | peak memory (GB) |"]
    table += ["| --- | ---: | ---: | ---: |", *map(markdown_row, rows)]
    started.write("gpu", summary, "\n".join(table) + "\n", args.out or (record.CACHE / "gpu" if args.tiny else None))
