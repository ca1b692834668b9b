"""Where the label head starts: the language model's own output rows for the label words.

A random head knows nothing, and a few hundred labelled rows are a few dozen optimizer steps: too few to
learn the classes from scratch. The pretrained output layer already separates them: its row for
" positive" scores how likely the model is to say "positive" next. Starting each class's head row from
the output embedding of its label name (the mean over the name's tokens), the untrained head computes
the model's own logits for the label words; with a template that ends where the model would say the
label, it is the zero-shot classifier restricted to those words, and training starts from there (the
idea of PET / LM-BFF for masked LMs, here for a decoder's last token). The scale is the model's own:
the hidden states are the ones its output layer reads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lsllama.modeling.masks import text_config

logger = logging.getLogger(__name__)


def output_embedding(backbone: PreTrainedModel, source: str | None) -> torch.Tensor:
    """The (vocab, hidden) matrix the language model scores next tokens with. The backbone is loaded without
    its LM head: with tied embeddings that is the input embedding; otherwise `lm_head.weight` is read from the
    checkpoint's safetensors (only that tensor)."""
    config = text_config(backbone.config)
    embedding = backbone.get_input_embeddings().weight
    if getattr(config, "tie_word_embeddings", True) or source is None:
        return embedding
    weight = _read_lm_head(source)
    if weight is None:
        logger.warning("%s: no lm_head.weight found; the label head starts from the input embeddings", source)
        return embedding
    return weight


def _read_lm_head(source: str) -> torch.Tensor | None:
    from safetensors import safe_open
    from transformers.utils import cached_file

    def fetch(name: str) -> str | None:
        return cached_file(source, name, _raise_exceptions_for_missing_entries=False)

    index = fetch("model.safetensors.index.json")
    filename = json.loads(Path(index).read_text())["weight_map"].get("lm_head.weight") if index else "model.safetensors"
    path = fetch(filename) if filename else None
    if path is None:
        return None
    with safe_open(path, framework="pt") as tensors:
        return tensors.get_tensor("lm_head.weight") if "lm_head.weight" in tensors.keys() else None  # noqa: SIM118


def label_word_rows(
    backbone: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, words: list[str], source: str | None = None
) -> torch.Tensor:
    """One fp32 row per label: the mean output embedding of the tokens of " word" (the label as the model
    would say it after a prompt: a new word, hence the leading space)."""
    table = output_embedding(backbone, source)
    rows = []
    for word in words:
        ids = tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
        rows.append(table[torch.tensor(ids, device=table.device)].float().mean(0))
    return torch.stack(rows)
