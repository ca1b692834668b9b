"""Model cards: the README.md of a run folder (and of an export), written from the run's own files.

A run folder is often all that is left of an experiment; the card lets someone without lsllama see
what was trained on what, with which settings, how well it did, and how to use it. Everything is read
from config.yaml, labels.json, results.json, metrics.jsonl and report/, so writing the card again
after `lsllama evaluate` picks up the new report. The Markdown is a Jinja template shipped with the
package (templates/model_card.md), rendered by huggingface_hub's ModelCard with the hub metadata on top.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from lsllama.config import RunConfig, metric_names
from lsllama.modeling.loading import BUILTIN_MODELS
from lsllama.run_folder import CONFIG, MODEL_WEIGHTS, RunFolder, atomic_write_text

CARD = "README.md"
REPORT = "report"
TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
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


def card_data(config: RunConfig, library: str) -> ModelCardData:
    """Hub metadata, so a pushed folder is indexed under its task, base model and library."""
    return ModelCardData(
        library_name=library,
        pipeline_tag=PIPELINE_TAGS[config.task],
        base_model=hub_id(config.model.name),
        tags=["lsllama", "label-supervised", "lora"],
    )


def _thresholds_text(run: RunFolder, labels: list[str]) -> str:
    """Multi-label decision thresholds, read from the weights file that holds them with the kept model."""
    from safetensors import safe_open

    with safe_open(str(run.file(MODEL_WEIGHTS)), framework="pt") as weights:
        values = weights.get_tensor("thresholds").tolist()
    return ", ".join(f"`{name}` {value:.3f}" for name, value in zip(labels, values, strict=True))


def _metrics_section(title: str, metrics: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """One results table: the task's headline metrics, then per-label scores where there are any."""
    keys = (*metric_names(config.task, config.data.problem), "n")
    return {
        "title": title,
        "headline": [(key, metrics[key]) for key in keys if key in metrics],
        "per_label": metrics.get("per_class") or metrics.get("per_type"),
    }


def _results_sections(run: RunFolder, results: dict[str, Any], config: RunConfig) -> list[dict[str, Any]]:
    """Validation (the split the model was selected on), then each split `lsllama evaluate` reported."""
    sections = []
    if results.get("validation"):
        sections.append(_metrics_section("validation (model selection)", results["validation"], config))
    report = run.file(REPORT)
    for path in sorted(report.glob("*_metrics.json")) if report.is_dir() else []:
        split = path.name.removesuffix("_metrics.json")
        sections.append(_metrics_section(f"{split} (`lsllama evaluate`)", json.loads(path.read_text()), config))
    return sections


def model_card(
    run: RunFolder, title: str, library: str = "lsllama", usage: list[str] | None = None, link_prefix: str = ""
) -> str:
    """The card's text. `usage` (markdown lines; default: how to use the run folder with lsllama) follows the
    summary, because how to load the folder is what a reader needs first; links to the run's files get
    `link_prefix` (an export keeps the run in a subfolder)."""
    config, labels = run.config(), run.labels()
    results = run.results() if run.finished else {}
    multi_label = config.task == "sequence" and config.data.problem == "multi_label"
    report = run.file(REPORT)
    card = ModelCard.from_template(
        card_data(config, library),
        template_path=str(TEMPLATE),
        title=title,
        usage=None if usage is None else "\n".join(usage).rstrip("\n") + "\n",
        link_prefix=link_prefix,
        config=config,
        labels=labels,
        results=results,
        base=base_model_text(config.model.name),
        attention=attention_text(config),
        thresholds=_thresholds_text(run, labels) if multi_label else None,
        sections=_results_sections(run, results, config),
        plots=sorted(report.glob("*.png")) if report.is_dir() else [],
        config_yaml=run.file(CONFIG).read_text().rstrip(),
    )
    return str(card)


def write_model_card(run_dir: str | Path) -> Path:
    """Write (or rewrite) RUN/README.md; returns its path. An export folder's inner run gets the card."""
    run = RunFolder.locate(Path(run_dir))
    run.check_complete()
    path = run.file(CARD)
    atomic_write_text(path, model_card(run, run.path.resolve().name))
    return path
