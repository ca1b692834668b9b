"""Model cards: the README.md of a run folder (and of an export), written from the run's own files.

A run folder is often all that is left of an experiment; the card lets someone without lsllama see
what was trained on what, with which settings, how well it did, and how to use it. Everything is read
from config.yaml, labels.json, results.json, metrics.jsonl and report/, so writing the card again
after `lsllama evaluate` picks up the new report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lsllama.config import RunConfig, metric_names
from lsllama.modeling.loading import BUILTIN_MODELS
from lsllama.run import CONFIG, WEIGHTS, RunFolder, atomic_write_text

CARD = "README.md"
REPORT = "report"
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""Built-in model names that are a hub model under another name (`tiny-random` is none)."""
PIPELINE_TAGS = {"sequence": "text-classification", "token": "token-classification"}


def hub_id(name: str) -> str | None:
    """The hub id behind a model name, or None for random and local models (nothing to link to)."""
    if name in BUILTIN_MODELS:
        return HUB_IDS.get(name)
    if name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") != 1:
        return None
    return name


def base_model_text(name: str) -> str:
    hub = hub_id(name)
    if hub is None:
        return f"`{name}`"
    link = f"[{hub}](https://huggingface.co/{hub})"
    return link if hub == name else f"{link} (lsllama name `{name}`)"


def attention_text(config: RunConfig) -> str:
    layer = config.model.unmask_from_layer
    if layer:
        return f"causal in layers below {layer}, bidirectional from layer {layer} up (layer-wise LS-unLLaMA)"
    if config.model.bidirectional or layer == 0:
        return "bidirectional (LS-unLLaMA): causal mask removed, padding still masked"
    return "causal (LS-LLaMA)"


def _columns_text(config: RunConfig) -> str:
    data = config.data
    if config.task == "token":
        return f"`{data.tokens_column}` -> `{data.tags_column}`"
    pair = f" + `{data.text_pair_column}`" if data.text_pair_column else ""
    return f"`{data.text_column}`{pair} -> `{data.label_column}`"


def _lora_text(config: RunConfig) -> str:
    model = config.model
    if model.lora_r <= 0:
        return "none (only the head is trained)"
    return f"r {model.lora_r}, alpha {model.lora_alpha}, dropout {model.lora_dropout}, targets {model.lora_targets}"


def front_matter(config: RunConfig, library: str) -> str:
    """Hub metadata, so a pushed folder is indexed under its task, base model and library."""
    meta: dict[str, Any] = {"library_name": library, "pipeline_tag": PIPELINE_TAGS[config.task]}
    hub = hub_id(config.model.name)
    if hub is not None:
        meta["base_model"] = hub
    meta["tags"] = ["lsllama", "label-supervised", "lora"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "| --- | --- |", *(f"| {key} | {_number(value)} |" for key, value in rows)]


def _metrics_section(title: str, metrics: dict[str, Any], config: RunConfig) -> list[str]:
    lines = [f"### {title}", ""]
    headline = [(key, metrics[key]) for key in (*metric_names(config.task, config.data.problem), "n") if key in metrics]
    lines += _table(headline)
    per_label = metrics.get("per_class") or metrics.get("per_type")
    if per_label:
        lines += ["", "| label | precision | recall | f1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, scores in per_label.items():
            values = " | ".join(_number(scores[key]) for key in ("precision", "recall", "f1", "support"))
            lines.append(f"| {name} | {values} |")
    return [*lines, ""]


def _thresholds_text(run: RunFolder, labels: list[str]) -> str:
    """Multi-label decision thresholds, read from the weights file that holds them with the kept model."""
    from safetensors import safe_open

    with safe_open(str(run.file(WEIGHTS)), framework="pt") as weights:
        values = weights.get_tensor("thresholds").tolist()
    return ", ".join(f"`{name}` {value:.3f}" for name, value in zip(labels, values, strict=True))


def card_body(run: RunFolder, title: str, usage: list[str], link_prefix: str = "") -> str:
    """Everything but the front matter. `usage` (markdown lines) follows the summary, because how to load
    the folder is what a reader needs first; links to the run's files get `link_prefix` (an export keeps
    the run in a subfolder)."""
    config = run.config()
    labels = run.labels()
    results = run.results() if run.finished else {}
    model, data, train = config.model, config.data, config.train
    base = base_model_text(model.name)
    if config.task == "sequence" and data.problem == "regression":
        summary = (
            f"A text regressor (one value per text, `{labels[0]}`): the final hidden states of {base} are pooled "
            f"({model.pooling}) and go through a linear head."
        )
    elif config.task == "sequence":
        kind = "any number of labels per text" if data.problem == "multi_label" else "one label per text"
        summary = (
            f"A text classifier ({kind}): the final hidden states of {base} are pooled "
            f"({model.pooling}) and go through a linear head over {len(labels)} labels."
        )
    else:
        summary = (
            f"A token classifier (one tag per word): the final hidden state of each word's first sub-token in "
            f"{base} goes through a linear head over {len(labels)} tags."
        )
    lines = [
        f"# {title}",
        "",
        f"{summary} Trained with lsllama: label-supervised finetuning (LS-LLaMA, Li et al. 2023), the decoder "
        "adapted with LoRA; no prompt, no label words.",
        "",
        *usage,
        "## Model",
        "",
        *_table(
            [
                ("base model", base_model_text(model.name)),
                ("task", config.task if config.task == "token" else f"{config.task} ({data.problem})"),
                ("labels", ", ".join(f"`{name}`" for name in labels)),
                ("attention", attention_text(config)),
                *([("pooling", model.pooling)] if config.task == "sequence" else []),
                *(
                    [("decision thresholds (tuned on validation)", _thresholds_text(run, labels))]
                    if config.task == "sequence" and data.problem == "multi_label"
                    else []
                ),
                ("LoRA", _lora_text(config)),
                ("precision", model.precision),
                *([("frozen weights", f"{model.quantization} (QLoRA)")] if model.quantization else []),
            ]
        ),
        "",
        "## Data",
        "",
        *_table(
            [
                ("data", f"`{data.data or data.train_file}`"),
                *([("validation file", f"`{data.validation_file}`")] if data.validation_file else []),
                ("columns", _columns_text(config)),
                ("max length (tokens)", data.max_length),
                *([("longer texts", data.long_text)] if config.task == "sequence" else []),
                ("training examples", results.get("train_examples", "?")),
                ("validation examples", results.get("validation_examples", "?")),
                *([("sampled from training split", data.max_train_samples)] if data.max_train_samples else []),
            ]
        ),
        "",
        "## Training",
        "",
        *_table(
            [
                ("epochs", train.epochs),
                ("learning rate", train.learning_rate),
                ("batch", f"{train.max_tokens} padded tokens" if train.max_tokens else f"{train.batch_size} examples"),
                ("seed", train.seed),
                ("optimizer steps", results.get("global_step", "?")),
                (f"best step (validation {train.metric_for_best})", results.get("best_step", "?")),
                *([("stopped early", "yes")] if results.get("stopped_early") else []),
            ]
        ),
        "",
        "## Results",
        "",
    ]
    if results.get("validation"):
        lines += _metrics_section("validation (model selection)", results["validation"], config)
    reports = sorted(run.file(REPORT).glob("*_metrics.json")) if run.file(REPORT).is_dir() else []
    for path in reports:
        split = path.name.removesuffix("_metrics.json")
        lines += _metrics_section(f"{split} (`lsllama evaluate`)", json.loads(path.read_text()), config)
    if not results and not reports:
        lines += ["No results yet: training has not finished.", ""]
    plots = sorted(run.file(REPORT).glob("*.png")) if run.file(REPORT).is_dir() else []
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem.replace('_', ' ')}]({link_prefix}{REPORT}/{p.name})" for p in plots]
        lines.append("")
    lines += [
        "## Configuration",
        "",
        f"<details><summary>{CONFIG} (every setting; rebuilding the model reads it)</summary>",
        "",
        "```yaml",
        run.file(CONFIG).read_text().rstrip(),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run_dir: str | Path) -> Path:
    """Write (or rewrite) RUN/README.md; returns its path. An export folder's inner run gets the card."""
    run = RunFolder.locate(Path(run_dir))
    run.check_complete()
    name = run.path.resolve().name
    usage = [
        "## Usage",
        "",
        "```bash",
        f"lsllama predict {name} --input texts.txt --output predictions.jsonl",
        f"lsllama serve {name} --port 8000  # HTTP: POST /predict, docs at /docs",
        f"lsllama export {name} --output {name}-hf  # a transformers model (see its README)",
        "```",
        "",
        "```python",
        "from lsllama import Classifier",
        "",
        f'clf = Classifier.load("{name}")',
        "clf.predict([...])" if run.config().task == "sequence" else "clf.predict_entities([...])",
        "```",
        "",
    ]
    card = front_matter(run.config(), "lsllama") + "\n" + card_body(run, name, usage)
    path = run.file(CARD)
    atomic_write_text(path, card)
    return path
