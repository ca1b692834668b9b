"""`lsllama export`: a trained run as a plain transformers model, with the run itself kept inside.

    OUT/
      config.json, model.safetensors  the stock `*ForSequenceClassification` / `*ForTokenClassification` of the
                                      base architecture: LoRA merged into the base weights, fp32, id2label /
                                      label2id, `is_causal` (false for a bidirectional run); no custom code
      tokenizer.json, ...             the run's tokenizer, `model_max_length` = the run's max length
      README.md                       model card, how to load the export, where it differs from lsllama
      lsllama/                        the run's own files: `Classifier.load(OUT)` and `lsllama serve OUT` read these

Why the run is kept: transformers' classes reproduce only what they implement (last-token pooling; a
causal or fully bidirectional mask through `config.is_causal`). Mean / max pooling and layer-wise
unmasking need lsllama's code: for those runs OUT has no config.json, so transformers refuses the folder
instead of loading a model that pools differently, and lsllama loads it from lsllama/. A run's template
goes into the exported tokenizer's post-processor (the ids around each text), so the pipeline reads
texts as the run did.

Why no custom code: lsllama's sequence head is a bias-free `nn.Linear`, exactly transformers'
`*ForSequenceClassification.score`, and its token head has a bias, as transformers' token-classification
heads do; so the stock classes hold the trained head exactly and load without `trust_remote_code`.
Pooling agrees too: transformers pools the rightmost token whose id is not `config.pad_token_id` (set to
the tokenizer's pad id, the id the pipeline pads with), lsllama the last token of the attention mask.
They differ only for a text whose last token is the pad id itself (the model card says when that can
happen for the run's tokenizer).

Why fp32 whatever the run's precision: the merge then adds the LoRA update to the base weights
without rounding, and a QLoRA run is merged into the unquantized base (4-bit weights cannot hold the
update). A bf16 or quantized run therefore differs from `lsllama predict` by that rounding.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import torch
from peft import PeftModel
from tokenizers.processors import TemplateProcessing
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lsllama.config import DataConfig, RunConfig
from lsllama.data.encoding import sequence_layout, special_affixes, template_ids
from lsllama.errors import UsageError
from lsllama.modeling.model import build_model
from lsllama.run_folder import (
    CONFIG,
    EXPORTED_RUN,
    LABELS,
    LOG,
    MODEL_WEIGHTS,
    RESULTS,
    TOKENIZER,
    RunFolder,
    atomic_folder,
    atomic_write_text,
    commit_folder,
)
from lsllama.training.card import CARD, REPORT, model_card

RUN_FILES = (CONFIG, LABELS, TOKENIZER, MODEL_WEIGHTS, RESULTS, LOG, REPORT)
"""What lsllama/ keeps of the run: enough to load it and to show its card (not checkpoints or TensorBoard)."""


@dataclass
class Export:
    path: Path
    transformers_class: str | None
    """The transformers class the export loads as; None when only lsllama can load it."""
    needs_lsllama: str | None
    """Why transformers cannot reproduce the run, when it cannot."""


def lsllama_only_reason(config: RunConfig) -> str | None:
    """Why transformers' own classes would compute something other than the run, or None."""
    if config.task == "sequence" and config.data.problem == "regression":
        return (
            "regression: lsllama maps the head's standardised output back to the target's units "
            "(x std + mean of the training targets), which transformers' classes do not"
        )
    if config.task == "sequence" and config.model.pooling != "last":
        return (
            f"{config.model.pooling} pooling: transformers' sequence-classification classes read the last "
            "non-pad token only"
        )
    if config.model.unmask_from_layer:
        return (
            f"layer-wise unmasking (layers >= {config.model.unmask_from_layer} bidirectional) runs through "
            "lsllama's registered attention function"
        )
    return None


def merged_model(run: RunFolder, labels: list[str], tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The run's model as a transformers classification model: LoRA merged, lsllama's head, fp32, on CPU."""
    config = run.config()
    model_cfg = dataclasses.replace(config.model, precision="fp32", quantization=None, gradient_checkpointing=False)
    model = build_model(model_cfg, config.task, len(labels), tokenizer, torch.device("cpu"), config.data.problem)
    model.load_weights(run.file(MODEL_WEIGHTS))
    backbone = model.backbone.merge_and_unload() if isinstance(model.backbone, PeftModel) else model.backbone
    hf_config = copy.deepcopy(backbone.config)  # keeps is_causal, as configure_attention set it
    hf_config.num_labels = len(labels)
    hf_config.id2label = dict(enumerate(labels))
    hf_config.label2id = {name: i for i, name in enumerate(labels)}
    hf_config.pad_token_id = tokenizer.pad_token_id
    if config.data.problem == "multi_label":  # the pipeline then applies one sigmoid per label
        hf_config.problem_type = "multi_label_classification"
    auto = AutoModelForSequenceClassification if config.task == "sequence" else AutoModelForTokenClassification
    try:
        with torch.device("meta"):  # only the class and its config: every weight comes from the run below
            hf = auto.from_config(hf_config)
    except ValueError:
        raise UsageError(f"cannot export: transformers has no {auto.__name__} for {type(hf_config).__name__}") from None
    if not isinstance(getattr(hf, "score", None), nn.Linear):
        raise UsageError(f"cannot export: {type(hf).__name__} has no linear `score` head to hold lsllama's head")
    setattr(hf, hf.base_model_prefix, backbone)
    hf.score = model.score
    unfilled = [name for name, tensor in chain(hf.named_parameters(), hf.named_buffers()) if tensor.is_meta]
    if unfilled:
        raise UsageError(f"cannot export: {type(hf).__name__} has parts lsllama does not fill: {unfilled[:3]}")
    return hf.eval()


def export_run(run_dir: str | Path, output: str | Path, overwrite: bool = False) -> Export:
    """Write the export folder (see the module docstring); atomic: a failure leaves no half folder."""
    run = RunFolder.locate(Path(run_dir))
    run.check_complete()
    output = Path(output)
    if output.exists() and not overwrite:
        raise UsageError(f"--output {output} exists: choose another folder or pass --overwrite")
    if output.resolve() in (run.path.resolve(), *run.path.resolve().parents):
        raise UsageError(f"--output {output} holds the run being exported: choose another folder")
    config, labels = run.config(), run.labels()
    reason = lsllama_only_reason(config)
    tmp = atomic_folder(output)
    try:
        (tmp / EXPORTED_RUN).mkdir()
        for name in RUN_FILES:
            source = run.file(name)
            if source.is_dir():
                shutil.copytree(source, tmp / EXPORTED_RUN / name)
            elif source.is_file():
                shutil.copy2(source, tmp / EXPORTED_RUN / name)
        tokenizer = AutoTokenizer.from_pretrained(run.file(TOKENIZER))
        if reason is None and config.data.template is not None:
            data = dataclasses.replace(config.data, labels=labels)  # the run's own label map
            tokenizer, reason = tokenizer_with_template(tokenizer, data, tmp / "template-check")
        if reason is None:
            model = merged_model(run, labels, tokenizer)
            model.save_pretrained(tmp)
            tokenizer.model_max_length = config.data.max_length
            tokenizer.save_pretrained(tmp)
            result = Export(output, type(model).__name__, None)
            usage = transformers_usage(output.name, config, model, tokenizer)
        else:
            result = Export(output, None, reason)
            usage = lsllama_only_usage(output.name, reason)
        library = "lsllama" if reason else "transformers"
        atomic_write_text(tmp / CARD, model_card(run, output.name, library, usage, f"{EXPORTED_RUN}/"))
        commit_folder(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def tokenizer_with_template(
    tokenizer: PreTrainedTokenizerBase, data: DataConfig, scratch: Path
) -> tuple[PreTrainedTokenizerBase, str | None]:
    """The tokenizer with the run's template as its post-processor (the ids lsllama puts before and after each
    text), so that transformers' pipelines read a text inside the template as lsllama does; and None, or why
    the template cannot go there. Proved by a save-and-reload round trip: some tokenizer classes rebuild
    their post-processor when they load."""
    why_not = f"template {data.template!r}: this tokenizer cannot carry it, and pipelines read texts alone"
    if not getattr(tokenizer, "is_fast", False):
        return tokenizer, why_not
    layout, (before, after) = sequence_layout(tokenizer), template_ids(data, tokenizer)
    expected = layout.prefix + before + tokenizer("a b", add_special_tokens=False)["input_ids"] + after + layout.suffix
    parts = {"lsllama_before_text": layout.prefix + before, "lsllama_after_text": after + layout.suffix}
    special = [{"id": k, "ids": ids, "tokens": tokenizer.convert_ids_to_tokens(ids)} for k, ids in parts.items() if ids]
    single = [*(["lsllama_before_text"] if parts["lsllama_before_text"] else []), "$A"]
    single += ["lsllama_after_text"] if parts["lsllama_after_text"] else []
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single=single, special_tokens=special)
    tokenizer.save_pretrained(scratch)
    reloaded = AutoTokenizer.from_pretrained(scratch)
    shutil.rmtree(scratch)
    return (reloaded, None) if reloaded("a b")["input_ids"] == expected else (tokenizer, why_not)


def lsllama_usage(name: str) -> list[str]:
    return [
        "With lsllama (reads `lsllama/`, the run itself; the base model named in its config must be available):",
        "",
        "```python",
        "from lsllama import Classifier",
        "",
        f'clf = Classifier.load("{name}")      # or: lsllama predict / lsllama serve {name}',
        "```",
        "",
    ]


def lsllama_only_usage(name: str, reason: str) -> list[str]:
    return [
        "## Loading this export",
        "",
        f"**This export needs lsllama**: {reason}. transformers' own classes would compute something else, so this "
        "folder has no `config.json` and transformers refuses to load it rather than giving different predictions.",
        "",
        *lsllama_usage(name),
    ]


def pooling_note(tokenizer: PreTrainedTokenizerBase) -> str:
    """Where transformers' last-token rule (the rightmost id that is not the pad id) and lsllama's (the last
    token of the attention mask) can pick different tokens: only at a text whose last token is the pad id."""
    pad = f"`{tokenizer.pad_token}` (id {tokenizer.pad_token_id})"
    note = (
        "- transformers pools the rightmost token whose id is not the pad id; lsllama pools the last token of the "
        f"attention mask. The pad token is {pad}: the two agree except for a text whose last token is {pad}"
    )
    _, suffix = special_affixes(tokenizer)
    if suffix and suffix[-1] == tokenizer.pad_token_id:
        return note + ", and this tokenizer ends every text with it: transformers pools the token before it."
    return note + " (a text that ends with that token's string)."


def transformers_usage(
    name: str, config: RunConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> list[str]:
    """How to load the export with transformers, and exactly where that can differ from lsllama."""
    if config.task == "sequence":
        code, notes = _sequence_pipeline(name, config, tokenizer)
    else:
        code, notes = _token_pipeline(name, config)
    return [
        "## Loading this export",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        *code,
        "```",
        "",
        *lsllama_usage(name),
        "The weights are fp32: the base model's weights with the LoRA update merged in (load with "
        "`dtype=torch.bfloat16` to halve memory). Attention is "
        + ("causal." if model.config.is_causal else "bidirectional (`is_causal: false` in config.json).")
        + " Where transformers' predictions can differ from lsllama's:",
        "",
        *notes,
        _precision_note(config),
        "",
    ]


def _sequence_pipeline(name: str, config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[list[str], list[str]]:
    """The text-classification pipeline's code, and the notes on where it reads texts otherwise than lsllama."""
    max_length = config.data.max_length
    code = [
        f'clf = pipeline("text-classification", model="{name}")',
        'clf("a gorgeous, moving film", top_k=None, truncation=True)  # every label\'s probability',
    ]
    notes = [
        "- The stock transformers class holds the trained head exactly (no custom code, no `trust_remote_code`).",
        pooling_note(tokenizer),
        f"- lsllama cuts texts at {max_length} tokens; pass `truncation=True` (the tokenizer's `model_max_length` "
        f"is {max_length}) to do the same."
        + (
            f" This run reads longer texts by `{config.data.long_text}` (see lsllama's `--long-text`), which "
            "the pipeline does not: predictions differ for texts over that length."
            if config.data.long_text != "head"
            else ""
        ),
    ]
    if config.data.template is not None:
        notes.append(
            f"- The run's template ({config.data.template!r}) is in the tokenizer (its post-processor): the pipeline "
            "reads each text inside it, as lsllama does; give it the text alone."
        )
    if config.data.problem == "multi_label":
        notes.append(
            "- Multi-label: the pipeline gives each label's own sigmoid probability; lsllama predicts a label "
            "when it reaches that label's threshold, tuned on validation (`thresholds` in "
            f"`{EXPORTED_RUN}/{RESULTS}`)."
        )
    if config.data.text_pair_column and not sequence_layout(tokenizer).has_own_separator:
        notes.append(
            "- Text pairs: this tokenizer's pair template puts nothing between the two texts, so lsllama puts a "
            "newline there: give the pipeline the two texts joined by a newline."
        )
    return code, notes


def _token_pipeline(name: str, config: RunConfig) -> tuple[list[str], list[str]]:
    """The token-classification pipeline's code, and the notes on how lsllama's words and windows differ."""
    code = [
        f'ner = pipeline("token-classification", model="{name}")',
        'ner("Peter Blackburn flew to Brussels .", ignore_labels=[])  # one tag and score per sub-token',
    ]
    notes = [
        "- lsllama splits raw text into words (`lsllama.api.WORD_PATTERN`), joins them with single spaces and "
        "reads each word's tag from its first sub-token. Give the pipeline the words joined by single spaces and "
        "read the first sub-token of each word for the same tags and scores; `aggregation_strategy` groups by "
        "transformers' own word boundaries, which differ where punctuation touches a word.",
        f"- lsllama splits sentences longer than {config.data.max_length} sub-tokens into overlapping windows; the "
        "pipeline reads at most what the model takes in one pass.",
    ]
    return code, notes


def _precision_note(config: RunConfig) -> str:
    """Whether the fp32 merge matches the run exactly: it does only where the run trained on fp32 base weights."""
    if config.model.precision == "fp32" and not config.model.quantization:
        return "- This run trained in fp32: the merge adds no rounding of its own."
    return (
        f"- This run trained with precision `{config.model.precision}`"
        + (f" and {config.model.quantization} base weights" if config.model.quantization else "")
        + ": against rounded base weights, so this fp32 merge differs from `lsllama predict` by that rounding."
    )
