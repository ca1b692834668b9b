"""Opt-in torch.compile for training: each decoder layer compiled in place.

Regional, because a decoder's layers share one class and one forward: dynamo compiles the first and
reuses that graph for the others, so compilation costs one layer's time, not the model's. In place
(`nn.Module.compile`), so parameter names, state dicts, adapters and checkpoints are unchanged.
`dynamic=True`, because length-grouped batches change width at every step; a fixed-shape compile
would recompile for each new width. Evaluation runs the same layers eagerly: in inference mode the
compiled graph does not apply and a second compilation would not pay for one pass over the
validation split. On this project's 2-core CPU compilation takes minutes (less once torch's on-disk
cache holds it) before steps run faster, so it pays on long runs only (`benchmarks/profile_step.py
--sweep` measures both).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import PreTrainedModel

from lsllama.errors import UsageError


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
