"""Every number fitted to a machine rather than to the method, in one place, each with what measured it.

They change speed and memory, never what a model computes (the ablation scripts check scores stay equal).
The modules that use one import it from here; a benchmark that sweeps one sets the importing module's
name (e.g. `lsllama.modeling.model.CPU_MATH_ATTENTION_MAX_LENGTH`), which is what that module reads.
Measured on this project's reference machine (2 x86-64 cores, torch 2.13 CPU) unless stated.
"""

from __future__ import annotations

CPU_MATH_ATTENTION_MAX_LENGTH = 256
"""On CPU, training batches up to this many tokens wide run PyTorch's math attention (batched matmuls
and a softmax) instead of its flash kernel, whose backward is slow on short rows: a training step on
SST-2 is markedly faster, at the same accuracy (`benchmarks/profile_step.py --sweep`,
`benchmarks/ablation.py`: benchmarks/results/ablation_cpu_math_attention_max_length.md). Wider batches
keep the flash kernel, which never holds the (width x width) attention weights, and so does inference
(no backward pass). sdpa only; accelerators are untouched. Used by lsllama.modeling.model."""

CPU_MICRO_BATCH_TOKENS = 512
"""On CPU, a training batch of more padded tokens than this (per process) runs as several
micro-batches, with the same gradients (the loss is always divided by the whole batch's targets).
Every pass also pays a fixed cost, about half of it the matmuls that read every frozen weight forward
and backward (benchmarks/results/profile_breakdown.md), so fewer, longer passes train faster; but each
token keeps its activations until backward (about 0.8 MB for the default model:
benchmarks/results/profile_shapes.md), and the widest batches set a run's peak RSS. Since the `labels`
template made SST-2's rows about twice as long, most batches of 16 still fit in 512 tokens but the
widest come near 1024: under a cap of 1024 (the cap before) they ran whole and put lsllama's peak RSS
at the edge of the 1.5x rule against the official recipe's; 512 splits only those (about one batch in
five of the speed benchmark's) and keeps the widest pass's activations near 400 MB (`benchmarks/speed.py`
reports peak RSS and speed side by side; the cap was 384 while the target was 1x). Accuracy does not
move with the cap: SST-2 with 512 and 1024 (benchmarks/results/cap_sst2/ablation_cpu_micro_batch_tokens.md)
and CoNLL-2003's span F1 with 384 and 1024 (benchmarks/results/ablation_cpu_micro_batch_tokens.md) are
the same within seed noise (`benchmarks/ablation.py`). On GPUs a batch is split only on
out-of-memory. Used by lsllama.training.loop."""

CPU_BATCH_TOKENS = 512
"""On CPU an inference batch also stops at this many padded tokens: there a batch whose activations stay
in the cores' caches computes more tokens per second than a large one (`benchmarks/profile_step.py
--sweep` times both). Accelerators want large batches and keep the row limit alone. Used by
lsllama.evaluation.predict."""

PAD_MULTIPLE = 8
"""Round a training batch's width up to a multiple of this. It computes a few more padded tokens, but bounds
the number of distinct activation sizes: glibc's heap then reuses freed blocks instead of growing
(`lsllama.heap`). Together with training's CPU micro-batches (`CPU_MICRO_BATCH_TOKENS`) it is what
brought lsllama's peak RSS level with the official recipe's (`benchmarks/speed.py` reports both;
`benchmarks/profile_step.py --sweep` times exact widths against it). Inference batches, which keep no
activations, are padded to their exact width: rounding only slowed them. Used by lsllama.data.batching."""

COMPILE_AFTER_STEPS = 1000
"""Optimizer steps from which a single-process CPU run compiles by default. A run of this many steps of
the default model on SST-2 ran faster compiled than eager, compilation from an empty cache included
(`benchmarks/compile_payoff.py`: benchmarks/results/compile_payoff.md); the savings grow with every
further step, while shorter runs pay compilation back less surely (the 600-row speed benchmark does
not). Used by lsllama.modeling.compilation."""

MMAP_THRESHOLD_BYTES = 1 << 20
"""glibc's mmap threshold when the CLI tunes the heap (`lsllama.heap`): blocks this large get their own
mappings, returned to the system when freed. Lower thresholds kept RSS lower still but made CPU steps
markedly slower (every activation then costs a fresh mapping and its page faults);
`benchmarks/profile_step.py` prints live and heap-kept memory after each step."""
