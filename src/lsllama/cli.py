"""The `lsllama` command: parses arguments, calls the API, turns errors into one line and an exit code."""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from lsllama.errors import DataError, LsllamaError, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Label-supervised finetuning of decoder LLMs (LS-LLaMA / LS-unLLaMA) for text and token classification.",
)
DEBUG = {"on": False}


def handle_errors(command: Callable) -> Callable:
    """Every command: a package error becomes `error: ...` on stderr and its exit code (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LsllamaError as exc:
            if DEBUG["on"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False) -> None:
    from lsllama.heap import tune_process_heap

    DEBUG["on"] = debug or bool(os.environ.get("LSLLAMA_DEBUG"))
    tune_process_heap()  # the process's allocator is the application's to tune, not the library's
    if not DEBUG["on"]:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


Opt = typer.Option


@app.command(epilog="Example: lsllama train --data sst2 --output runs/sst2 --max-train-samples 2000")
@handle_errors
def train(
    output: Annotated[Path, Opt("--output", "-o", help="Run folder to create (or resume).")],
    data: Annotated[
        str | None, Opt(help="Folder, name under $LSLLAMA_DATA (sst2, conll2003...), file, or hub id.")
    ] = None,
    model: Annotated[str | None, Opt(help="smollm2-135m (default), tiny-random, a hub id or a local folder.")] = None,
    task: Annotated[str | None, Opt(help="sequence or token (default: inferred from the data).")] = None,
    problem: Annotated[
        str | None, Opt(help="Sequence task: single_label (default), multi_label (a list of labels) or regression.")
    ] = None,
    preset: Annotated[str, Opt(help="default, or paper (the official LS-LLaMA hyperparameters).")] = "default",
    config: Annotated[Path | None, Opt(help="YAML file with model/data/train sections.")] = None,
    pooling: Annotated[str | None, Opt(help="last, mean or max (sequence task).")] = None,
    bidirectional: Annotated[
        bool | None, Opt("--bidirectional/--causal", help="Remove the causal mask (LS-unLLaMA).")
    ] = None,
    unmask_from_layer: Annotated[int | None, Opt(help="Only layers >= K attend bidirectionally.")] = None,
    epochs: Annotated[float | None, Opt()] = None,
    min_steps: Annotated[int | None, Opt(help="At least this many optimizer steps (more epochs).")] = None,
    learning_rate: Annotated[float | None, Opt("--learning-rate", "--lr")] = None,
    head_lr: Annotated[float | None, Opt("--head-lr", help="The head's learning rate (default: --lr).")] = None,
    batch_size: Annotated[int | None, Opt(help="Examples per optimizer step (global).")] = None,
    max_tokens: Annotated[int | None, Opt(help="Build batches to this padded-token budget instead.")] = None,
    gradient_accumulation: Annotated[int | None, Opt()] = None,
    max_length: Annotated[int | None, Opt(help="Maximum tokens per text / window (up to the model's context).")] = None,
    long_text: Annotated[
        str | None, Opt(help="Texts over --max-length: head (default), tail, head_tail or windows (averaged).")
    ] = None,
    window_stride: Annotated[int | None, Opt(help="How far consecutive windows move (default: half a window).")] = None,
    max_train_samples: Annotated[int | None, Opt(help="Train on a fixed, seeded sample of this many rows.")] = None,
    max_eval_samples: Annotated[int | None, Opt()] = None,
    seed: Annotated[int | None, Opt()] = None,
    train_file: Annotated[str | None, Opt()] = None,
    validation_file: Annotated[str | None, Opt()] = None,
    text_column: Annotated[str | None, Opt()] = None,
    text_pair_column: Annotated[str | None, Opt(help="Second text column: train on text pairs.")] = None,
    label_column: Annotated[str | None, Opt()] = None,
    tokens_column: Annotated[str | None, Opt()] = None,
    tags_column: Annotated[str | None, Opt()] = None,
    label_all_subtokens: Annotated[bool | None, Opt("--label-all-subtokens/--label-first-subtoken")] = None,
    lora_r: Annotated[int | None, Opt()] = None,
    lora_alpha: Annotated[int | None, Opt()] = None,
    lora_dropout: Annotated[float | None, Opt()] = None,
    lora_targets: Annotated[str | None, Opt(help="Comma-separated module names, or all-linear.")] = None,
    precision: Annotated[str | None, Opt(help="auto, bf16 or fp32.")] = None,
    eval_every: Annotated[int | None, Opt(help="Evaluate every N steps (default: every epoch).")] = None,
    metric_for_best: Annotated[str | None, Opt()] = None,
    early_stopping_patience: Annotated[int | None, Opt()] = None,
    checkpoint_every: Annotated[int | None, Opt()] = None,
    keep_checkpoints: Annotated[
        bool, Opt("--keep-checkpoints", help="Keep the resumable checkpoints once the run is finished.")
    ] = False,
    resume: Annotated[bool | None, Opt("--resume/--no-resume", help="Default: resume if a checkpoint exists.")] = None,
    trust_remote_code: Annotated[bool, Opt(help="Allow model code from the hub (off unless asked).")] = False,
    load_in_4bit: Annotated[bool, Opt(help="QLoRA: NF4 frozen weights (CUDA + bitsandbytes).")] = False,
    load_in_8bit: Annotated[bool, Opt(help="8-bit frozen weights (CUDA + bitsandbytes).")] = False,
    gradient_checkpointing: Annotated[bool | None, Opt("--gradient-checkpointing/--no-gradient-checkpointing")] = None,
    compile: Annotated[
        bool | None,
        Opt(
            "--compile/--no-compile",
            help="torch.compile the decoder layers. Default: on for long single-process CPU runs, where it pays.",
        ),
    ] = None,
    quiet: Annotated[bool, Opt(help="No progress bar.")] = False,
) -> None:
    """Train a label-supervised model; prints the best validation metrics as the last line (JSON)."""
    from lsllama.config import build_config
    from lsllama.data.dataset import infer_task
    from lsllama.run import RunFolder
    from lsllama.training.loop import train as run_training

    targets = None
    if lora_targets is not None:
        targets = lora_targets if lora_targets == "all-linear" else [t.strip() for t in lora_targets.split(",")]
    overrides = {
        "model": {
            "name": model,
            "pooling": pooling,
            "bidirectional": bidirectional,
            "unmask_from_layer": unmask_from_layer,
            "lora_r": lora_r,
            "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout,
            "lora_targets": targets,
            "precision": precision,
            "trust_remote_code": trust_remote_code or None,
            "quantization": "4bit" if load_in_4bit else "8bit" if load_in_8bit else None,
            "gradient_checkpointing": gradient_checkpointing,
        },
        "data": {
            "data": data,
            "train_file": train_file,
            "validation_file": validation_file,
            "text_column": text_column,
            "text_pair_column": text_pair_column,
            "label_column": label_column,
            "problem": problem,
            "long_text": long_text,
            "window_stride": window_stride,
            "tokens_column": tokens_column,
            "tags_column": tags_column,
            "max_length": max_length,
            "max_train_samples": max_train_samples,
            "max_eval_samples": max_eval_samples,
            "label_all_subtokens": label_all_subtokens,
        },
        "train": {
            "epochs": epochs,
            "min_steps": min_steps,
            "learning_rate": learning_rate,
            "head_learning_rate": head_lr,
            "batch_size": batch_size,
            "max_tokens": max_tokens,
            "gradient_accumulation": gradient_accumulation,
            "seed": seed,
            "eval_every": eval_every,
            "metric_for_best": metric_for_best,
            "early_stopping_patience": early_stopping_patience,
            "checkpoint_every": checkpoint_every,
            "keep_checkpoints_after": keep_checkpoints or None,
            "compile": compile,
        },
    }
    cfg = build_config(task=task, preset=preset, config_file=config, overrides=overrides)
    if task is None and (config is None or "task" not in (_yaml_keys(config))):
        cfg = build_config(task=infer_task(cfg.data), preset=preset, config_file=config, overrides=overrides)
    if cfg.data.data is None and cfg.data.train_file is None:
        raise UsageError("--data (or --train-file) is required")
    finished_before = resume is not False and RunFolder(output).finished
    results = run_training(cfg, output, resume=resume, progress=not quiet)
    if finished_before:
        typer.echo(
            f"{output} holds this run, finished: its results are printed below, nothing was trained. "
            "To train again, pass --no-resume (replaces it) or another --output.",
            err=True,
        )
    typer.echo(json.dumps(results.get("validation") or results))


def _yaml_keys(path: Path) -> set[str]:
    import yaml

    try:
        return set(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError, TypeError):
        return set()


@app.command(epilog="Example: lsllama evaluate runs/sst2 --data sst2 --split validation")
@handle_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by `lsllama train`.")],
    data: Annotated[str | None, Opt(help="Data to evaluate on (default: the run's own).")] = None,
    split: Annotated[str, Opt(help="train, validation or test.")] = "validation",
    file: Annotated[str | None, Opt(help="A labelled file to evaluate instead of a split.")] = None,
    max_samples: Annotated[int | None, Opt()] = None,
    batch_size: Annotated[int, Opt()] = 64,
) -> None:
    """Score a run on a labelled split; writes a report (metrics JSON, confusion matrix / curves) into RUN/report
    and refreshes the model card (RUN/README.md)."""
    from lsllama.api import Classifier
    from lsllama.evaluation.report import plot_learning_curves, write_report
    from lsllama.run import LOG, RunFolder
    from lsllama.serving.card import REPORT, write_model_card

    clf = Classifier.load(run)
    metrics = clf.evaluate(data=data, split=split, batch_size=batch_size, max_samples=max_samples, file=file)
    folder = RunFolder.locate(run).path  # an export keeps its run in a subfolder
    report = folder / REPORT
    write_report(report, split, metrics, clf.labels.names)
    plot_learning_curves(folder / LOG, report / "learning_curves.png", clf.config.train.metric_for_best or "accuracy")
    write_model_card(folder)
    typer.echo(json.dumps(metrics))


@app.command(epilog="Example: lsllama predict runs/sst2 --input texts.txt --output preds.jsonl")
@handle_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder written by `lsllama train`.")],
    input: Annotated[Path, Opt("--input", "-i", help=".txt (one text per line) or .jsonl.")],
    output: Annotated[Path, Opt("--output", "-o", help="Where to write predictions.")],
    batch_size: Annotated[int, Opt()] = 64,
    format: Annotated[str, Opt(help="jsonl, or conll (token task: word and tag columns).")] = "jsonl",
) -> None:
    """Predict labels (sequence task: a label, a set of labels or a value) or entities (token task) for every
    input text."""
    from lsllama.api import Classifier
    from lsllama.data.readers import read_rows
    from lsllama.run import atomic_write_text

    if format not in ("jsonl", "conll"):
        raise UsageError(f"--format must be jsonl or conll, got {format!r}")
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    clf = Classifier.load(run)
    rows = read_rows(input)
    data_cfg = clf.config.data
    lines: list[str] = []
    if clf.task == "sequence":
        if format == "conll":
            raise UsageError("--format conll is for token-task runs")
        texts = [_field(r.values, data_cfg.text_column, input, r.line, str) for r in rows]
        pairs = (
            [_field(r.values, data_cfg.text_pair_column, input, r.line, str) for r in rows]
            if data_cfg.text_pair_column
            else None
        )
        _check_texts(texts, input, rows)
        lines += [json.dumps(record) for record in clf.records(texts, pairs, batch_size)]
    else:
        inputs: list[str | list[str]] = []
        for r in rows:
            if data_cfg.tokens_column in r.values:
                inputs.append(_field(r.values, data_cfg.tokens_column, input, r.line, list))
            else:
                inputs.append(_field(r.values, data_cfg.text_column, input, r.line, str))
            if not inputs[-1] or (isinstance(inputs[-1], str) and not inputs[-1].strip()):
                raise DataError("empty text", input, r.line)
        entities = clf.predict_entities(inputs, batch_size)
        if format == "conll":
            from lsllama.api import split_words

            words_list = [x if isinstance(x, list) else split_words(x)[0] for x in inputs]
            for words, tags in zip(words_list, clf.predict_tags(words_list, batch_size), strict=True):
                lines += [f"{w}\t{t}" for w, t in zip(words, tags, strict=True)] + [""]
        else:
            for text, ents in zip(inputs, entities, strict=True):
                lines.append(json.dumps({"text": text, "entities": [asdict(e) for e in ents]}))
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, "\n".join(lines) + "\n")
    typer.echo(f"wrote {len(rows)} predictions to {output}", err=True)


@app.command(epilog="Example: lsllama export runs/sst2 --output exports/sst2")
@handle_errors
def export(
    run: Annotated[Path, typer.Argument(help="A run folder written by `lsllama train`.")],
    output: Annotated[Path, Opt("--output", "-o", help="Folder to write (a transformers model + the run).")],
    overwrite: Annotated[bool, Opt(help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Save RUN as a transformers model (LoRA merged) that `transformers.pipeline` loads; prints one JSON object.

    OUTPUT/README.md says how to load it and where transformers can differ from lsllama.

    Runs that need lsllama's code (mean / max pooling, --unmask-from-layer) are exported for lsllama only."""
    from lsllama.serving.export import export_run

    result = export_run(run, output, overwrite=overwrite)
    typer.echo(json.dumps({**asdict(result), "path": str(result.path)}))


@app.command(epilog="Example: lsllama serve runs/sst2 --port 8000   (then open http://127.0.0.1:8000/docs)")
@handle_errors
def serve(
    run: Annotated[Path, typer.Argument(help="A run folder (or an export folder).")],
    host: Annotated[str, Opt(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, Opt()] = 8000,
    max_batch_size: Annotated[int, Opt(help="Most texts per model call; 1 turns batching off.")] = 32,
    max_wait_ms: Annotated[float, Opt(help="How long a request waits for others to share its batch.")] = 5.0,
    max_texts: Annotated[int, Opt(help="Most texts per request (more: 422).")] = 64,
    max_text_chars: Annotated[int, Opt(help="Longest text in characters (longer: 422).")] = 10_000,
    max_body_bytes: Annotated[int, Opt(help="Largest request body (larger: 413).")] = 1 << 20,
) -> None:
    """Serve a run over HTTP: POST /predict, GET /health, GET /metadata, OpenAPI docs at /docs."""
    try:
        import uvicorn

        from lsllama.serving.server import ServeSettings, create_app
    except ImportError as exc:
        raise UsageError(
            f"lsllama serve needs the serve extra ({exc.name} is missing): pip install 'lsllama[serve]'"
        ) from None
    from lsllama.api import Classifier

    settings = ServeSettings(max_batch_size, max_wait_ms, max_texts, max_text_chars, max_body_bytes)
    settings.check()  # before the model loads: a bad option should not cost a model load
    app_ = create_app(Classifier.load(run), settings)
    uvicorn.run(app_, host=host, port=port, log_level="info", access_log=DEBUG["on"])


def _field(values: dict, column: str, path: Path, line: int, kind: type) -> Any:
    if column not in values:
        raise DataError(f"missing column {column!r}", path, line)
    if not isinstance(values[column], kind):
        raise DataError(f"column {column!r} must be a {kind.__name__}", path, line)
    return values[column]


def _check_texts(texts: list[str], path: Path, rows: list) -> None:
    for text, row in zip(texts, rows, strict=True):
        if not text.strip():
            raise DataError("empty text", path, row.line)


if __name__ == "__main__":
    app()
