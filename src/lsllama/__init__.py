"""lsllama: label-supervised finetuning of decoder LLMs (LS-LLaMA / LS-unLLaMA)."""

from lsllama.api import Classifier, Entity
from lsllama.config import DataConfig, ModelConfig, RunConfig, TrainConfig, build_config

__all__ = ["Classifier", "DataConfig", "Entity", "ModelConfig", "RunConfig", "TrainConfig", "build_config"]
__version__ = "0.1.0"
