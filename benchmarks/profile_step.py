"""Where a training step and an inference batch spend their time and memory, on the default model.

    python -m benchmarks profile_step [--rows 200] [--batch-size 16] [--steps 10] [--lora-dropout 0.05]
    python -m benchmarks profile_step --sweep [--rows 256] [--model NAME] [--out DIR]
    python -m benchmarks profile_step --shapes [--rows 3000] [--model NAME] [--out DIR]
    python -m benchmarks profile_step --optimizer [--model NAME] [--out DIR]
    python -m benchmarks profile_step --breakdown [--rows 600] [--model NAME] [--out DIR]
    python -m benchmarks profile_step --onednn [--rows 600] [--model NAME] [--out DIR]

Builds the model as `lsllama train` does (same config, precision and LoRA), takes length-grouped
SST-2 batches, and prints: seconds per optimizer step (forward, backward, clip, AdamW), RSS after each
step next to the bytes held by live tensors and the bytes freed but kept by glibc's heap, and
torch.profiler's top operators for three training steps and for one inference batch of the merged
model. Use it before and after a change to the model or loop; the speed benchmark (benchmarks/speed.py)
is what compares with the official recipe. The three modes below each write benchmarks/results/
profile_<mode>.md and .json (benchmarks/record.py).

`--sweep` trains the same rows twice per setting, the faster pass counting (the defaults, then one
lever at a time: batch size, exact batch widths instead of multiples of 8, LoRA dropout 0.05,
PyTorch's flash attention kernel instead of the math one, no micro-batches for wide batches, foreach
instead of fused AdamW, the official recipe's adapter: r 12 on q,v with dropout 0.1, and torch.compile
of the decoder layers, its compilation time shown), then runs inference over them with several token budgets per batch
(the faster of two passes each), and prints samples/s, real tokens/s and the useful FLOP/s as a
fraction of a bf16 matmul rate measured in the same run, as Markdown tables (also written to
benchmarks/results/profile_sweep.md): which lever pays here.

`--shapes` times training steps on batches of one padded width and a growing number of rows (real
SST-2 rows, so real padding masks), measures the activations each forward pass keeps for backward, and
fits seconds = fixed + per-token x computed tokens (benchmarks/results/profile_shapes.md): how much of a
typical step no batching of its rows can remove, and how many tokens (and how much memory) a pass would
need to reach half the matmul peak.

`--breakdown` profiles one step of one row and one of 16 rows (torch.profiler, input shapes recorded)
and sums each operator's own time by category: matmuls that read a frozen weight, LoRA's matmuls,
attention, elementwise operators, copies and casts, views and allocation, autograd's bookkeeping, the
optimizer (benchmarks/results/profile_breakdown.md): what the fixed cost of a step is made of.

`--onednn` runs the same two steps with oneDNN's verbose log on and counts, per primitive kind, the
primitives created (cache misses) and executed in one step after a warm-up step, with their time
(benchmarks/results/profile_onednn.md): whether the frozen weights are reordered (`reorder`) or matmul
primitives rebuilt on every call. Where the matmuls run in MKL / BLAS instead (fp32; bf16 without
AMX or AVX512-BF16) no oneDNN primitive runs at all, and the record says so.

`--optimizer` times the AdamW step alone, over the model's trainable tensors with the same gradients,
fused (lsllama's) against foreach (benchmarks/results/profile_optimizer.md): a few milliseconds that
whole-step timings on a shared machine cannot resolve.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from transformers import PreTrainedTokenizerBase

from benchmarks import record
from benchmarks.hardware import bf16_matmul_gflops, non_embedding_params
from benchmarks.official_recipe import ADAPTER as OFFICIAL_ADAPTER
from lsllama import build_config
from lsllama.config import RunConfig
from lsllama.data import batching
from lsllama.data.batching import collate_items, train_batches
from lsllama.data.dataset import load_split, resolve_labels
from lsllama.data.encoding import Item, encode_examples
from lsllama.evaluation.predict import CPU_BATCH_TOKENS, item_logits
from lsllama.modeling import model as modeling
from lsllama.modeling.compilation import compile_decoder_layers
from lsllama.modeling.loading import load_tokenizer
from lsllama.modeling.model import build_model
from lsllama.training import loop
from lsllama.training.loop import _optimizer


@dataclass(frozen=True)
class Setting:
    name: str
    batch_size: int = 16
    pad_multiple: int = batching.PAD_MULTIPLE
    model: dict[str, Any] = field(default_factory=dict)
    math_attention_up_to: int = modeling.CPU_MATH_ATTENTION_MAX_LENGTH
    micro_batch_tokens: int = loop.CPU_MICRO_BATCH_TOKENS
    compile: bool = False
    foreach_adamw: bool = False


SWEEP = [  # lsllama's defaults, then one lever at a time, then the official recipe's adapter
    Setting("defaults"),
    Setting("batch 64", batch_size=64),
    Setting("exact widths (no rounding up to a multiple of 8)", pad_multiple=1),
    Setting("LoRA dropout 0.05 (the default until 2026-11-29)", model={"lora_dropout": 0.05}),
    Setting("flash attention kernel (the CPU default until 2026-11-29)", math_attention_up_to=0),
    Setting("no micro-batches for wide batches", micro_batch_tokens=1 << 30),
    Setting("foreach AdamW instead of fused (the default until 2026-11-29)", foreach_adamw=True),
    Setting("official's adapter", model=OFFICIAL_ADAPTER),
    Setting("torch.compile (train.compile)", compile=True),
]
NO_LIMIT = 1 << 30
INFERENCE_SWEEP = [NO_LIMIT, 1024, 512, 256, 128]
"""Padded tokens per inference batch (at most 64 rows each), for the merged default model."""


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def heap_free_mb() -> float | None:
    """Bytes freed but still held by glibc's main heap (resident until trimmed); None off glibc."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    return mallinfo2().fordblks / 2**20


def live_tensor_mb() -> float:
    seen, total = set(), 0
    for obj in gc.get_objects():
        if torch.is_tensor(obj):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total / 2**20


@dataclass
class Bench:
    """The model and rows of one setting, built as `lsllama train` builds them."""

    cfg: RunConfig
    items: list[Item]
    pad_id: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter] = field(init=False)  # what the loop clips

    def __post_init__(self) -> None:
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    @classmethod
    def build(cls, model: str, rows: int, model_overrides: dict[str, Any]) -> Bench:
        # The text alone, as the recorded profiles read it: the template only lengthens every row.
        cfg, tokenizer, num_labels, items = sst2_rows(model, rows, {"template": "none"}, model_overrides)
        torch.manual_seed(0)
        net = build_model(cfg.model, "sequence", num_labels, tokenizer, torch.device("cpu")).train()
        optimizer = _optimizer(net, cfg.train.learning_rate, cfg.train.weight_decay)
        return cls(cfg, items, tokenizer.pad_token_id, net, optimizer)

    def batches(self, batch_size: int) -> list[list[int]]:
        return train_batches([it.n_tokens for it in self.items], batch_size, 0, 0)

    def step(self, batch: list[int]) -> tuple[float, float, float, float]:
        """One optimizer step as the training loop takes it (wide batches in micro-batches); seconds in
        forward, backward, clip, AdamW."""
        parts = loop._parts_to_fit([self.items[i] for i in batch], 1, torch.device("cpu"))
        forward = backward = 0.0
        for micro in (batch[k::parts] for k in range(parts)):
            enc = collate_items([self.items[i] for i in micro], self.pad_id, multiple=batching.PAD_MULTIPLE)
            start = time.perf_counter()
            logits = self.model(enc["input_ids"], enc["attention_mask"])
            targets = torch.tensor([self.items[i].label for i in micro])
            loss = F.cross_entropy(logits, targets, reduction="sum") / len(batch)
            middle = time.perf_counter()
            loss.backward()
            forward, backward = forward + middle - start, backward + time.perf_counter() - middle
        start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.train.max_grad_norm)
        middle = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return forward, backward, middle - start, time.perf_counter() - middle

    def saved_mb(self, batch: list[int]) -> float:
        """MB that one forward pass over `batch` keeps for its backward pass: the activations, each storage
        counted once, frozen and trainable weights left out (they are there whatever the batch)."""
        weights = {t.untyped_storage().data_ptr() for t in [*self.model.parameters(), *self.model.buffers()]}
        saved: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in weights:
                saved[storage.data_ptr()] = storage.nbytes()
            return tensor

        enc = collate_items([self.items[i] for i in batch], self.pad_id, multiple=batching.PAD_MULTIPLE)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            self.model(enc["input_ids"], enc["attention_mask"])
        return sum(saved.values()) / 2**20


def use_foreach(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """lsllama's fused AdamW switched to the foreach implementation (AdamW reads both flags per group at
    each step)."""
    for group in optimizer.param_groups:
        group.update(fused=False, foreach=True)
    return optimizer


def sweep(model: str, rows: int, started: record.Record) -> tuple[dict, str]:
    """Train the same rows twice per setting from the same weights (after one warm-up step), then time
    inference per token budget; returns the figures and the Markdown tables."""
    peak, params = bf16_matmul_gflops(), non_embedding_params(model)
    training = [train_setting(setting, model, rows, peak, params) for setting in SWEEP]
    inference = inference_budgets(model, rows, peak, params)
    lines = [
        started.header(
            f"{model}; {rows} SST-2 training rows, the faster of two passes after one warm-up step; "
            f"bf16 matmul peak measured {peak:.0f} GFLOP/s."
        ),
        "",
        "| setting | batch | pad to multiple of | LoRA (r, dropout, targets) | samples/s | real tokens/s | "
        "computed / real tokens | useful FLOP/s / peak |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['setting']} | {r['batch']} | {r['pad_multiple']} | {r['lora']} | {r['samples_per_s']:.1f} | "
            f"{r['real_tokens_per_s']:.0f} | {r['computed_per_real_token']:.2f} | {r['peak_fraction']:.3f} |"
            for r in training
        ),
        "",
        "Inference over the same rows, defaults, LoRA merged; batches of at most 64 rows and:",
        "",
        "| padded tokens per batch at most | samples/s | real tokens/s | useful FLOP/s / peak |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {r['budget']} | {r['samples_per_s']:.1f} | {r['real_tokens_per_s']:.0f} | {r['peak_fraction']:.3f} |"
            for r in inference
        ),
    ]
    figures = {"model": model, "rows": rows, "bf16_matmul_gflops": peak, "training": training, "inference": inference}
    return figures, "\n".join(lines) + "\n"


def train_setting(setting: Setting, model: str, rows: int, peak: float, params: int) -> dict:
    """One row of the training sweep: the package's tuned constants set for this setting, then put back."""
    defaults = (batching.PAD_MULTIPLE, modeling.CPU_MATH_ATTENTION_MAX_LENGTH, loop.CPU_MICRO_BATCH_TOKENS)
    batching.PAD_MULTIPLE = setting.pad_multiple  # read by the batch planner and collate at call time
    modeling.CPU_MATH_ATTENTION_MAX_LENGTH = setting.math_attention_up_to  # read at each forward
    loop.CPU_MICRO_BATCH_TOKENS = setting.micro_batch_tokens  # read at each step
    try:
        bench = Bench.build(model, rows, setting.model)
        if setting.compile:
            compile_decoder_layers(bench.model)
        if setting.foreach_adamw:
            use_foreach(bench.optimizer)
        batches = bench.batches(setting.batch_size)
        start = time.perf_counter()
        bench.step(batches[0])
        warm_up = time.perf_counter() - start
        # The faster of two passes: on a shared 2-core machine one pass can lose a tenth to a neighbour.
        seconds = min(sum(sum(bench.step(batch)) for batch in batches) for _ in range(2))
    finally:
        batching.PAD_MULTIPLE, modeling.CPU_MATH_ATTENTION_MAX_LENGTH, loop.CPU_MICRO_BATCH_TOKENS = defaults
    lengths = [it.n_tokens for it in bench.items]
    computed = sum(batching.padded_length(max(lengths[i] for i in b), setting.pad_multiple) * len(b) for b in batches)
    tokens = sum(lengths) / seconds
    lora = bench.cfg.model
    targets = lora.lora_targets if isinstance(lora.lora_targets, str) else ",".join(lora.lora_targets)
    row = {
        "setting": f"{setting.name}, after {warm_up:.0f} s compiling" if setting.compile else setting.name,
        "batch": setting.batch_size,
        "pad_multiple": setting.pad_multiple,
        "lora": f"{lora.lora_r}, {lora.lora_dropout:g}, {targets}",
        "samples_per_s": len(lengths) / seconds,
        "real_tokens_per_s": tokens,
        "computed_per_real_token": computed / sum(lengths),
        "peak_fraction": 4 * params * tokens / (peak * 1e9),
    }
    print(row, flush=True)
    del bench
    gc.collect()
    return row


def inference_budgets(model: str, rows: int, peak: float, params: int) -> list[dict]:
    """Samples/s of the merged default model per padded-token budget, the faster of two passes each (the first
    meets this budget's batch shapes first)."""
    bench = Bench.build(model, rows, {})
    bench.model.merge_adapters()
    cpu = torch.device("cpu")
    item_logits(bench.model, bench.items[:64], bench.pad_id, 64, cpu)  # warm-up
    tokens = sum(it.n_tokens for it in bench.items)
    found = []
    for budget in INFERENCE_SWEEP:
        seconds = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            item_logits(bench.model, bench.items, bench.pad_id, 64, cpu, max_tokens=budget)
            seconds = min(seconds, time.perf_counter() - start)
        name = "no limit" if budget == NO_LIMIT else str(budget)
        row = {
            "budget": name + (" (CPU default)" if budget == CPU_BATCH_TOKENS else ""),
            "samples_per_s": len(bench.items) / seconds,
            "real_tokens_per_s": tokens / seconds,
            "peak_fraction": 2 * params * tokens / seconds / (peak * 1e9),
        }
        print(row, flush=True)
        found.append(row)
    return found


SHAPES = [(1, 16), (2, 16), (4, 16), (8, 16), (16, 16), (16, 8), (16, 24), (16, 32), (16, 48)]
"""(rows, padded width) of the training steps that --shapes times: few rows, then batches of 16 as wide as
SST-2's (its sentences alone, then inside the `labels` question)."""


def shapes(model: str, rows: int, started: record.Record) -> tuple[dict, str]:
    """Seconds per training step against computed tokens, for batches of real SST-2 rows of one padded width,
    and the least-squares line through them: what a step costs whatever its size, and what each token adds."""
    peak, params = bf16_matmul_gflops(), non_embedding_params(model)
    bench = Bench.build(model, rows, {})
    points = [{"rows": n, "width": width, **time_shape(bench, n, width)} for n, width in SHAPES]
    tokens = [float(p["rows"] * p["width"]) for p in points]
    fixed, per_token = fit_line(tokens, [p["seconds"] for p in points])
    _, saved_per_token = fit_line(tokens, [p["saved_mb"] for p in points])
    mean_width = mean_padded_width([it.n_tokens for it in bench.items])
    templated_width = mean_padded_width([it.n_tokens for it in sst2_rows(model, rows, {}, {})[3]])

    def no_fixed_cost(width: float) -> float:
        """How much faster a step of 16 rows of this width would be without the fixed cost."""
        return (fixed + per_token * 16 * width) / (per_token * 16 * width)

    lines = [
        started.header(
            f"{model}; training steps (forward, backward, clip, AdamW) on real SST-2 rows of one padded width, the "
            f"fastest of three after a warm-up step; bf16 matmul peak measured {peak:.0f} GFLOP/s."
        ),
        "",
        "| rows x padded width | computed tokens | seconds per step | useful FLOP/s / peak (computed tokens) "
        "| MB saved for backward |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        n, width = p["rows"], p["width"]
        fraction = 4 * params * n * width / p["seconds"] / (peak * 1e9)
        lines.append(f"| {n} x {width} | {n * width} | {p['seconds']:.3g} | {fraction:.3g} | {p['saved_mb']:.3g} |")
    lines += [
        "",
        f"Least-squares line: a step costs {fixed:.3f} s plus {per_token * 1e3:.2f} ms per computed token. At the "
        f"margin a token runs at {4 * params / per_token / (peak * 1e9):.2f} of the matmul peak; the fixed part is "
        f"{1 - 1 / no_fixed_cost(mean_width):.0%} of a step of 16 rows at these rows' mean padded width "
        f"({mean_width:.1f} tokens). With no fixed cost at all that step would be {no_fixed_cost(mean_width):.2f}x "
        f"as fast, and a step of 16 rows inside the default `labels` question ({templated_width:.1f} tokens) "
        f"{no_fixed_cost(templated_width):.2f}x: the most that cutting the fixed cost can buy at these widths.",
        "",
        half_peak_bound(fixed, per_token, 4 * params / (peak * 1e9), saved_per_token),
    ]
    figures = {"model": model, "bf16_matmul_gflops": peak, "steps": points, "fixed_seconds": fixed}
    figures |= {"mean_padded_width": mean_width, "no_fixed_cost_speedup": no_fixed_cost(mean_width)}
    figures |= {
        "templated_padded_width": templated_width,
        "templated_no_fixed_cost_speedup": no_fixed_cost(templated_width),
    }
    figures |= {"seconds_per_token": per_token, "saved_mb_per_token": saved_per_token}
    return figures, "\n".join(lines) + "\n"


def mean_padded_width(lengths: list[int]) -> float:
    return sum(batching.padded_length(n, batching.PAD_MULTIPLE) for n in lengths) / len(lengths)


def sst2_rows(
    model: str, rows: int, data_overrides: dict[str, Any], model_overrides: dict[str, Any]
) -> tuple[RunConfig, PreTrainedTokenizerBase, int, list[Item]]:
    """The config, tokenizer, number of labels and encoded items of the first `rows` SST-2 training rows, as
    `lsllama train` builds them with these overrides (e.g. `{"template": "none"}`: the text alone)."""
    overrides = {"model": {"name": model, **model_overrides}, "data": {"data": "sst2", **data_overrides}}
    cfg = build_config(overrides=overrides).resolved()
    tokenizer = load_tokenizer(cfg.model.name)
    labels = resolve_labels(cfg.data, "sequence")
    cfg.data.labels = labels.names  # what the default template lists
    items, _ = encode_examples(load_split(cfg.data, "train", "sequence", labels, rows), "sequence", tokenizer, cfg.data)
    return cfg, tokenizer, len(labels), items


def time_shape(bench: Bench, n: int, width: int) -> dict[str, float]:
    """The fastest of three steps on `n` rows of padded width `width` (after a warm-up step: this shape's
    first-call allocations and kernel selection), and the MB its forward pass keeps for backward."""
    batch = _rows_of_width(bench, n, width)
    bench.step(batch)
    return {"seconds": min(sum(bench.step(batch)) for _ in range(3)), "saved_mb": bench.saved_mb(batch)}


def fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    design = torch.stack([torch.ones(len(x)), torch.tensor(x)], dim=1)
    intercept, slope = torch.linalg.lstsq(design, torch.tensor(y).unsqueeze(1)).solution.squeeze(1).tolist()
    return intercept, slope


def half_peak_bound(fixed: float, per_token: float, token_at_peak: float, saved_mb_per_token: float) -> str:
    """What half the matmul peak would take, from the fitted line: a step of N computed tokens, all of them
    real, reaches it when N x `token_at_peak` (seconds a token's useful FLOPs take at the peak) >= half of
    fixed + N x per_token. Padding only raises N; each token also holds `saved_mb_per_token` until backward."""
    if token_at_peak <= 0.5 * per_token:
        return "At this per-token cost no step size reaches half the matmul peak, however large."
    tokens = 0.5 * fixed / (token_at_peak - 0.5 * per_token)
    cap = loop.CPU_MICRO_BATCH_TOKENS
    return (
        f"Half the matmul peak needs forward/backward passes of at least {tokens:.0f} computed tokens, none of them "
        f"padding, which keep about {tokens * saved_mb_per_token:.0f} MB of activations for the backward pass "
        f"({saved_mb_per_token * 1024:.0f} KB per token, the slope of the last column); training on CPU splits "
        f"batches into passes of at most {cap} tokens (`CPU_MICRO_BATCH_TOKENS`), about "
        f"{cap * saved_mb_per_token:.0f} MB, to keep peak RSS within 1.5x the official recipe's."
    )


BREAKDOWN_SHAPES = [(1, 8), (16, 8)]
"""(rows, padded width) of the steps --breakdown profiles: one row (almost all fixed cost) and a batch of
16. Neither has 16 tokens, so no activation is shaped like a rank-16 LoRA matrix."""
ELEMENTWISE = {
    "mul",
    "add",
    "add_",
    "sub",
    "div",
    "pow",
    "neg",
    "rsqrt",
    "mean",
    "sum",
    "silu",
    "silu_backward",
    "cat",
    "exp",
    "softmax",
    "_softmax",
    "_softmax_backward_data",
    "where",
    "masked_fill",
    "fill_",
    "zero_",
    "mul_",
    "embedding_dense_backward",
    "index_select",
    "embedding",
    "cos",
    "sin",
    "clamp",
    "max",
    "argmax",
    "nll_loss",
    "nll_loss_forward",
    "nll_loss_backward",
    "_log_softmax",
    "_log_softmax_backward_data",
    "threshold_backward",
}
COPIES = {"copy_", "_to_copy", "clone", "contiguous", "to", "_copy_from", "_copy_from_and_resize"}
BREAKDOWN_ORDER = [
    "matmuls with frozen weights",
    "LoRA matmuls",
    "attention",
    "elementwise (norms, activations, rotary, residuals)",
    "copies and dtype casts",
    "views, transposes and allocation",
    "autograd bookkeeping",
    "optimizer and clipping",
    "other",
]


def op_category(name: str, shapes: list, frozen: set[tuple[int, ...]], rank: int) -> str:
    """Which part of a step an operator's own time belongs to. A matmul with an operand shaped like a frozen
    weight (or its transpose) reads that weight; any other with a dimension of the LoRA rank is LoRA's."""
    op = name.removeprefix("aten::")
    if op in ("mm", "addmm", "matmul", "linear"):
        dims = [tuple(s) for s in shapes if s]
        if any(d in frozen for d in dims):
            return "matmuls with frozen weights"
        if any(rank in d for d in dims):
            return "LoRA matmuls"
        return "other"
    if op in ("bmm", "baddbmm") or "attention" in op:
        return "attention"
    if "adamw" in name.lower() or "foreach" in op or name.startswith("Optimizer") or op == "clamp_":
        return "optimizer and clipping"
    if name.startswith("autograd::") or name.endswith(("Backward0", "Backward1")) or op == "ones_like":
        return "autograd bookkeeping"
    if op in COPIES:
        return "copies and dtype casts"
    if op in ELEMENTWISE:
        return "elementwise (norms, activations, rotary, residuals)"
    if name.startswith("aten::"):
        return "views, transposes and allocation"
    return "other"


def breakdown(model: str, rows: int, started: record.Record) -> tuple[dict, str]:
    """torch.profiler's own time per operator of one training step, summed by category, for one row and for a
    batch of 16: the categories that barely grow with the batch are the fixed cost. The profiler adds its own
    overhead to every operator, so shares are scaled to the unprofiled step time (the fastest of three)."""
    bench = Bench.build(model, rows, {})
    frozen = {tuple(p.shape) for p in bench.model.parameters() if not p.requires_grad and p.dim() == 2}
    frozen |= {shape[::-1] for shape in frozen}
    rank = bench.cfg.model.lora_r
    dtype = modeling.resolve_dtype(bench.cfg.model.precision, torch.device("cpu"))
    steps = []
    for n, width in BREAKDOWN_SHAPES:
        batch = _rows_of_width(bench, n, width)
        seconds = time_shape(bench, n, width)["seconds"]
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            bench.step(batch)
        own: dict[str, float] = dict.fromkeys(BREAKDOWN_ORDER, 0.0)
        calls: dict[str, int] = dict.fromkeys(BREAKDOWN_ORDER, 0)
        for event in prof.key_averages(group_by_input_shape=True):
            category = op_category(event.key, event.input_shapes, frozen, rank)
            own[category] += event.self_cpu_time_total / 1e6
            calls[category] += event.count
        total = sum(own.values())
        share = {k: v / total for k, v in own.items()}
        steps.append({"rows": n, "width": width, "seconds": seconds, "share": share, "calls": calls})
    lines = [
        started.header(
            f"{model}, precision {bench.cfg.model.precision} ({dtype}); one training step (forward, backward, clip, "
            "AdamW) on real SST-2 rows of one padded width, "
            f"torch.profiler's own time per operator summed by category, {torch.get_num_threads()} threads; "
            "seconds = share of the profiled time x the unprofiled step time (fastest of three)."
        ),
        "",
        "| category | " + " | ".join(f"{s['rows']} x {s['width']}: seconds | calls" for s in steps) + " |",
        "| --- |" + " ---: | ---: |" * len(steps),
    ]
    for category in BREAKDOWN_ORDER:
        cells = [f"{s['share'][category] * s['seconds']:.3f} | {s['calls'][category]}" for s in steps]
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    lines.append(
        "| whole step | " + " | ".join(f"{s['seconds']:.3f} | {sum(s['calls'].values())}" for s in steps) + " |"
    )
    figures = {"model": model, "dtype": str(dtype), "threads": torch.get_num_threads(), "steps": steps}
    return figures, "\n".join(lines) + "\n"


def onednn_verbose(run: Any) -> str:
    """oneDNN's verbose log of `run()`: the library prints it to the C stdout, which is sent to a file for
    the call (C stdio flushed before the descriptor is restored)."""
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile() as log:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON_CREATION):
                run()
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        return log.read().decode(errors="replace")


def count_primitives(log: str) -> dict[str, dict[str, float]]:
    """Per primitive kind (matmul, reorder, ...): primitives created (cache misses), executed, and the
    milliseconds of the executions, from oneDNN verbose lines
    (`onednn_verbose[,v1,primitive],exec|create:cache_miss,cpu,KIND,impl,...,ms`)."""
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: {"created": 0, "executed": 0, "ms": 0.0})
    for line in log.splitlines():
        fields = line.strip().split(",")
        if not fields[0].endswith("onednn_verbose"):
            continue
        action = next((i for i, f in enumerate(fields) if f == "exec" or f.startswith("create:cache_miss")), None)
        if action is None or action + 2 >= len(fields):
            continue
        kind = kinds[fields[action + 2]]
        if fields[action] == "exec":
            kind["executed"] += 1
            with contextlib.suppress(ValueError):  # a line without a time
                kind["ms"] += float(fields[-1])
        else:
            kind["created"] += 1
    return dict(kinds)


def onednn(model: str, rows: int, started: record.Record) -> tuple[dict, str]:
    """The oneDNN primitives of one training step of each breakdown shape, after a warm-up step of it."""
    images, weight = torch.randn(8, 3, 64, 64), torch.randn(16, 3, 3, 3)  # a convolution oneDNN runs on any CPU
    if not count_primitives(onednn_verbose(lambda: F.conv2d(images, weight))):
        raise SystemExit("profile_step --onednn: oneDNN's verbose log could not be captured (no control primitive)")
    bench = Bench.build(model, rows, {})
    dtype = modeling.resolve_dtype(bench.cfg.model.precision, torch.device("cpu"))
    steps = []
    for n, width in BREAKDOWN_SHAPES:
        batch = _rows_of_width(bench, n, width)
        bench.step(batch)
        log = onednn_verbose(lambda batch=batch: bench.step(batch))
        steps.append({"rows": n, "width": width, "kinds": count_primitives(log)})
    lines = [
        started.header(
            f"{model}, precision {bench.cfg.model.precision} ({dtype}); oneDNN primitives of one training step "
            "after a warm-up step of the same shape (verbose log)."
        ),
    ]
    if any(step["kinds"] for step in steps):
        lines += ["", "| step | primitive kind | created (cache misses) | executed | ms executing |"]
        lines.append("| --- | --- | ---: | ---: | ---: |")
    for step in steps:
        shape = f"{step['rows']} x {step['width']}"
        for kind, c in sorted(step["kinds"].items()):
            lines.append(f"| {shape} | {kind} | {c['created']:.0f} | {c['executed']:.0f} | {c['ms']:.1f} |")
    if not any(step["kinds"] for step in steps):
        lines += [
            "",
            "No oneDNN primitive ran in these steps (a convolution run first, as a control, did show in the log): "
            "the matmuls ran in MKL / BLAS kernels (fp32, or bf16 on a CPU without AMX or AVX512-BF16), so no "
            "frozen weight is reordered and no primitive is rebuilt per call.",
        ]
    figures = {"model": model, "precision": bench.cfg.model.precision, "dtype": str(dtype), "steps": steps}
    return figures, "\n".join(lines) + "\n"


def _rows_of_width(bench: Bench, n: int, width: int) -> list[int]:
    batch = [
        i for i, item in enumerate(bench.items) if batching.padded_length(item.n_tokens, batching.PAD_MULTIPLE) == width
    ][:n]
    if len(batch) < n:
        raise SystemExit(f"--rows {len(bench.items)}: fewer than {n} SST-2 rows of padded width {width}; load more")
    return batch


def optimizer_steps(model: str, started: record.Record) -> tuple[dict, str]:
    """Milliseconds per AdamW step, fused vs foreach, on the model's trainable tensors with fixed random
    gradients: median of ten rounds of five steps, the two optimizers taking turns."""
    bench = Bench.build(model, 16, {})
    torch.manual_seed(0)
    for param in bench.trainable:
        param.grad = torch.randn_like(param) * 1e-3
    optimizers = {"fused (lsllama)": bench.optimizer, "foreach": use_foreach(_optimizer(bench.model, 1e-4, 0.01))}
    rounds: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(11):  # the first round warms up
        for name, optimizer in optimizers.items():
            start = time.perf_counter()
            for _ in range(5):
                optimizer.step()
            rounds[name].append((time.perf_counter() - start) / 5 * 1e3)
    count = sum(p.numel() for p in bench.trainable)
    ms = {name: statistics.median(times[1:]) for name, times in rounds.items()}
    lines = [
        started.header(
            f"{model}; AdamW over the {len(bench.trainable)} trainable tensors ({count / 1e6:.1f} M parameters) of "
            "the model with lsllama's default LoRA, fixed random gradients; median of ten rounds of five steps."
        ),
        "",
        "| AdamW | ms per step |",
        "| --- | ---: |",
        *(f"| {name} | {value:.1f} |" for name, value in ms.items()),
    ]
    figures = {"model": model, "tensors": len(bench.trainable), "parameters": count, "ms_per_step": ms}
    return figures, "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = record.parser(__name__, __doc__)
    parser.add_argument("--model", default="smollm2-135m", help="lsllama model name, hub id or folder")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lora-dropout", type=float, default=None, help="default: the package default")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--sweep", action="store_true", help="samples/s: defaults, then one lever at a time")
    modes.add_argument("--shapes", action="store_true", help="seconds per step against batch size: fixed cost")
    modes.add_argument("--optimizer", action="store_true", help="the AdamW step alone: fused vs foreach")
    modes.add_argument("--breakdown", action="store_true", help="one step's time by category: the fixed cost")
    modes.add_argument("--onednn", action="store_true", help="oneDNN primitives created and run in one step")
    args = parser.parse_args(argv)
    started = record.Record.start(__name__, argv)
    if args.sweep:
        started.write("profile_sweep", *sweep(args.model, args.rows, started), args.out)
    elif args.shapes:
        started.write("profile_shapes", *shapes(args.model, args.rows, started), args.out)
    elif args.breakdown:
        started.write("profile_breakdown", *breakdown(args.model, args.rows, started), args.out)
    elif args.onednn:
        started.write("profile_onednn", *onednn(args.model, args.rows, started), args.out)
    elif args.optimizer:
        started.write("profile_optimizer", *optimizer_steps(args.model, started), args.out)
    else:
        profile_steps(args)


def profile_steps(args: argparse.Namespace) -> None:
    """Print seconds per step, memory after each step and torch.profiler's top operators (nothing written)."""
    print(f"before the model: RSS {rss_mb():.0f} MB")
    bench = Bench.build(args.model, args.rows, {} if args.lora_dropout is None else {"lora_dropout": args.lora_dropout})
    model, items, cfg = bench.model, bench.items, bench.cfg
    print(f"model built ({cfg.model.precision}, LoRA dropout {cfg.model.lora_dropout}): RSS {rss_mb():.0f} MB")
    batches = bench.batches(args.batch_size)
    bench.step(batches[0])  # warm-up: first-call allocations and kernel selection
    parts = []
    for k, batch in enumerate(batches[1 : args.steps + 1], start=1):
        parts.append(bench.step(batch))
        free = heap_free_mb()
        print(
            f"step {k}: {sum(parts[-1]):.3f} s, RSS {rss_mb():.0f} MB, live tensors {live_tensor_mb():.0f} MB"
            + ("" if free is None else f", freed but kept by the heap {free:.0f} MB")
        )
    mean = [sum(p[i] for p in parts) / len(parts) for i in range(4)]
    print(
        f"per step {sum(mean):.3f} s: forward {mean[0]:.3f}, backward {mean[1]:.3f}, "
        f"clip {mean[2]:.3f}, AdamW {mean[3]:.3f} (batch {args.batch_size})"
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[args.steps + 1 : args.steps + 4]:
            bench.step(batch)
    print("training, 3 steps:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    model.merge_adapters()
    model.eval()
    enc = collate_items(items[:64], bench.pad_id)
    with torch.no_grad():
        model(enc["input_ids"], enc["attention_mask"])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(enc["input_ids"], enc["attention_mask"])
    print("inference, one batch of 64:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
