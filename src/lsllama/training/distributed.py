"""What changes when the model is replicated (DDP) or sharded (FSDP 2) over processes.

Weights and optimizer state leave and re-enter training through torch.distributed.checkpoint's
state-dict functions: they gather FSDP shards into full tensors, strip DDP's `module.` prefix, and
do nothing special for a plain module, so one process and many share one code path and one file
format (full tensors, keyed by parameter name). Under FSDP they are collective: every rank calls
them, and only rank 0 receives the tensors (and writes them). They are handed the unwrapped module,
whose parameters are the real ones (full under DDP and DeepSpeed ZeRO-1/2, DTensor shards under FSDP).
DeepSpeed partitions optimizer state (ZeRO-1/2) and parameters (ZeRO-3) in its own objects, which
these functions do not gather: under DeepSpeed, the loop writes no checkpoints for resuming (it says so).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.utils import DistributedType
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
"""Only what training changes (LoRA, head, their buffers), as full CPU tensors on rank 0."""
RESTORE = StateDictOptions(full_state_dict=True, strict=False)
"""Every rank reads the full tensors from the checkpoint and keeps its own shard of them."""


def make_accelerator() -> Accelerator:
    """accelerate's Accelerator; on a machine without CUDA it runs processes on CPU with gloo.

    accelerate drops FSDP on CPU. `LSLLAMA_FSDP_ON_CPU=1` (tests only) keeps it: it installs the
    FSDP plugin that `accelerate launch --config_file configs/accelerate/fsdp.yaml` describes through
    its FSDP_* variables, so that torch's FSDP 2 shards the model over gloo processes as it would
    over GPUs. That is how this CPU-only project tests the FSDP path of its own code.
    """
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if os.environ.get("LSLLAMA_FSDP_ON_CPU") == "1" and accelerator.num_processes > 1:
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        accelerator.state.distributed_type = DistributedType.FSDP
    return accelerator


def describe(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, Any]:
    """How this run is spread: processes, and the mode (FSDP whenever the parameters are shards)."""
    sharded = any(isinstance(p, DTensor) for p in model.parameters())
    return {"processes": accelerator.num_processes, "mode": "FSDP" if sharded else accelerator.distributed_type.value}


def gather_weights(model: torch.nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
    """The full tensors of `names` (trainable parameters and kept buffers) on rank 0; {} elsewhere."""
    state = get_model_state_dict(model, options=GATHER)
    return {name: tensor.contiguous() for name, tensor in state.items() if name in names}


def gather_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state keyed by parameter name, on rank 0; {} elsewhere."""
    return get_optimizer_state_dict(model, optimizer, options=GATHER)


def restore(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
) -> None:
    """Load what `gather_weights` / `gather_optimizer_state` wrote, on every rank, into a prepared model."""
    set_model_state_dict(model, weights, options=RESTORE)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=RESTORE)
