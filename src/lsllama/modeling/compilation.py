"""torch.compile for training, where it pays: each decoder layer compiled in place.

Regional, because a decoder's layers share one class and one forward: dynamo compiles the first and
reuses that graph for the others, so compilation costs one layer's time, not the model's. In place
(`nn.Module.compile`), so parameter names, state dicts, adapters and checkpoints are unchanged.
`dynamic=True`, because length-grouped batches change width at every step; a fixed-shape compile
would recompile for each new width. Evaluation runs the same layers eagerly: in inference mode the
compiled graph does not apply and a second compilation would not pay for one pass over the
validation split.

On this project's 2-core CPU a first compilation takes a minute or two (seconds once torch's on-disk
cache holds it) and then every step runs faster, so it pays on long runs only: by default
(`train.compile` unset) a run compiles when `worth_compiling` says so. `benchmarks/compile_payoff.py`
times a run of `COMPILE_AFTER_STEPS` steps both ways, from an empty compiler cache.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel

from lsllama.errors import UsageError
from lsllama.tuning import COMPILE_AFTER_STEPS

if TYPE_CHECKING:
    from lsllama.config import RunConfig


def require_inductor(device: torch.device) -> None:
    """For an explicit `--compile`: fail in seconds, before the model loads, rather than at the first step."""
    if not inductor_works(device):
        raise UsageError(
            "--compile: torch.compile cannot build kernels on this machine (inductor needs a C++ compiler "
            "and Python's development headers for CPUs, Triton for GPUs)"
        )


def worth_compiling(cfg: RunConfig, model: nn.Module, steps: int, device: torch.device, world: int) -> bool:
    """`train.compile` True or False is the user's word (True was checked by `require_inductor`). Unset:
    compile a run with at least `COMPILE_AFTER_STEPS` steps in the whole run, on CPU, in one process, where it
    was measured to pay, if the model names its decoder layers and inductor can build kernels here. GPUs
    stay eager unless asked: no GPU measurement backs a default there; nor does one for several processes
    (FSDP, DeepSpeed) or for compilation around gradient checkpointing."""
    if cfg.train.compile is not None:
        return cfg.train.compile
    return (
        device.type == "cpu"
        and world == 1
        and steps >= COMPILE_AFTER_STEPS
        and not cfg.model.gradient_checkpointing
        and bool(decoder_layers(model))
        and inductor_works(device)
    )


def inductor_works(device: torch.device) -> bool:
    """Compile a two-operation function on `device`: seconds, against the minutes a long run saves."""
    try:
        torch.compile(lambda x: torch.sin(x) * 2 + 1)(torch.ones(3, device=device))
    except Exception:  # dynamo / inductor raise many types (InductorError, BackendCompilerFailed, ...)
        return False
    return True


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks, found by the class names transformers keeps whole when it splits a model
    over devices (`_no_split_modules`): that is its own, family-independent name for a decoder layer."""
    classes: set[str] = set()
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            classes.update(module._no_split_modules or [])
    return [module for module in model.modules() if type(module).__name__ in classes]


def compile_decoder_layers(model: nn.Module) -> None:
    layers = decoder_layers(model)
    if not layers:
        raise UsageError("--compile: this model names no decoder layers (_no_split_modules) to compile")
    # The first layer's input (the frozen embeddings' output) does not require grad, the others' do:
    # dynamo guards on that and would compile the first layer again. Marking the embeddings' output as
    # requiring grad costs one unused input gradient and keeps one graph for every layer.
    next(m for m in model.modules() if isinstance(m, PreTrainedModel)).enable_input_require_grads()
    for layer in layers:
        layer.compile(dynamic=True)


def eagerly() -> contextlib.AbstractContextManager:
    """Run compiled modules as plain PyTorch (for evaluation)."""
    return torch.compiler.set_stance("force_eager")
