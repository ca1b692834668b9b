"""lsllama: label-supervised finetuning of decoder LLMs (LS-LLaMA / LS-unLLaMA)."""

from __future__ import annotations

from typing import Any

from lsllama.config import DataConfig, ModelConfig, RunConfig, TrainConfig, build_config

__all__ = ["Classifier", "DataConfig", "Entity", "ModelConfig", "RunConfig", "TrainConfig", "build_config"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`Classifier` and `Entity` import torch and transformers: load them on first use, so that the
    command line (`lsllama --help`) and the config need not."""
    if name in ("Classifier", "Entity"):
        from lsllama import api

        return getattr(api, name)
    raise AttributeError(f"module 'lsllama' has no attribute {name!r}")
