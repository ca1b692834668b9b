"""The `lsllama` command: parses arguments, calls the API, turns errors into one line and an exit code."""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from lsllama import cli_options as option
from lsllama.cli_options import Debug, Opt, PrecisionChoice, PredictFormatChoice, SplitChoice, T, value
from lsllama.config import RunConfig
from lsllama.errors import LsllamaError, UsageError

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import UsageError as ClickUsageError

# Only light modules above: `lsllama --help` must not wait for torch, transformers and peft, so every
# command imports what it needs inside its body (tests/test_cli.py checks that torch stays unloaded).


class OneLineUsageError(ClickUsageError):
    """A parser error (unknown choice, missing option) in the CLI's one error style: `error: ...`, exit 2."""

    def show(self, file: Any = None) -> None:
        command = self.ctx.command_path if self.ctx else "lsllama"
        typer.echo(f"error: {self.format_message()} (see {command} --help)", err=True)


class LsllamaGroup(TyperGroup):
    """Turns click's multi-line usage errors into lsllama's one-line `error:` messages."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except ClickUsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ClickUsageError as exc:
            raise _one_line(exc) from None


def _one_line(exc: ClickUsageError) -> ClickUsageError:
    return exc if isinstance(exc, OneLineUsageError) else OneLineUsageError(exc.format_message(), exc.ctx)


app = typer.Typer(
    cls=LsllamaGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: option names are never cut off, and rich is not imported
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Label-supervised finetuning of decoder LLMs (LS-LLaMA / LS-unLLaMA) for text and token classification.",
)
DEBUG = {"on": False}


def quiet_unless_debugging() -> None:
    """Library warnings are for developers; a user sees lsllama's own messages (and everything with --debug)."""
    if not DEBUG["on"]:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def handle_errors(command: Callable) -> Callable:
    """Every command: a package error becomes `error: ...` on stderr and its exit code (no traceback).

    It also reads the command's own `--debug`, so that the flag works after the subcommand too."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        DEBUG["on"] = DEBUG["on"] or kwargs.get("debug", False)
        quiet_unless_debugging()
        _show_package_log()
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


def show_version(show: bool) -> None:
    if show:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"lsllama {version('lsllama')}")
        except PackageNotFoundError:
            typer.echo("lsllama (not installed)")
        raise typer.Exit()


class _EchoHandler(logging.Handler):
    """lsllama's log lines (what the library decided: held-out validation, a tagging scheme, a likely
    label typo) on stderr, written through typer at emit time so that they go where the command's output goes."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        typer.echo(prefix + record.getMessage(), err=True)


def _show_package_log() -> None:
    package = logging.getLogger("lsllama")
    package.setLevel(logging.INFO)
    if not any(isinstance(h, _EchoHandler) for h in package.handlers):
        package.addHandler(_EchoHandler())


@app.callback()
def main(
    debug: Debug = False,
    version: Annotated[
        bool, Opt("--version", callback=show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    from lsllama.heap import tune_process_heap

    DEBUG["on"] = debug or bool(os.environ.get("LSLLAMA_DEBUG"))
    tune_process_heap()  # the process's allocator is the application's to tune, not the library's


def parse_settings(settings: list[str]) -> dict[str, dict[str, Any]]:
    """`--set section.key=value` (value in YAML: 8, 1e-4, true, [q_proj, v_proj]) as override sections, each
    checked against its config dataclass: every setting has a flag this way, without one written for it."""
    import yaml

    from lsllama.config import with_current_keys

    raw: dict[str, dict[str, Any]] = {}
    for setting in settings:
        name, equals, text = setting.partition("=")
        section, dot, key = name.partition(".")
        if not (equals and dot and key):
            raise UsageError(f"--set {setting}: expected SECTION.KEY=VALUE, e.g. model.lora_r=8")
        raw.setdefault(section, {})[key] = yaml.safe_load(text) if text else None
    raw = with_current_keys(raw, "--set")
    checked = RunConfig.from_dict(raw, source="--set")  # unknown sections or keys, wrong types: one line
    return {section: {key: getattr(getattr(checked, section), key) for key in keys} for section, keys in raw.items()}


@app.command(
    short_help="Train a model and write a run folder.",
    epilog="Example: lsllama train --data reviews.csv --text-column review --label-column sentiment -o runs/reviews",
)
@handle_errors
def train(
    output: option.Output,
    data: option.Data = None,
    model: option.Model = None,
    task: option.Task = None,
    problem: option.Problem = None,
    preset: option.Preset = option.PresetChoice.default,
    config: option.Config = None,
    pooling: option.Pooling = None,
    bidirectional: option.Bidirectional = None,
    unmask_from_layer: option.UnmaskFromLayer = None,
    head_init: option.HeadInit = None,
    template: option.Template = None,
    question: option.Question = None,
    epochs: option.Epochs = None,
    learning_rate: option.LearningRate = None,
    batch_size: option.BatchSize = None,
    min_steps: option.MinSteps = None,
    head_lr: option.HeadLr = None,
    max_tokens: option.MaxTokens = None,
    micro_batches: option.MicroBatches = None,
    gradient_accumulation: option.GradientAccumulation = None,
    max_length: option.MaxLength = None,
    long_text: option.LongText = None,
    window_stride: option.WindowStride = None,
    max_train_samples: option.MaxTrainSamples = None,
    max_eval_samples: option.MaxEvalSamples = None,
    validation_fraction: option.ValidationFraction = None,
    labels: option.Labels = None,
    seed: option.Seed = None,
    train_file: option.TrainFile = None,
    validation_file: option.ValidationFile = None,
    text_column: option.TextColumn = None,
    text_pair_column: option.TextPairColumn = None,
    label_column: option.LabelColumn = None,
    tokens_column: option.TokensColumn = None,
    tags_column: option.TagsColumn = None,
    label_all_subtokens: option.LabelAllSubtokens = None,
    lora_r: option.LoraR = None,
    lora_alpha: option.LoraAlpha = None,
    lora_dropout: option.LoraDropout = None,
    lora_targets: option.LoraTargets = None,
    precision: option.Precision = None,
    eval_every: option.EvalEvery = None,
    metric_for_best: option.MetricForBest = None,
    early_stopping_patience: option.EarlyStoppingPatience = None,
    checkpoint_every: option.CheckpointEvery = None,
    keep_checkpoints: option.KeepCheckpoints = False,
    resume: option.Resume = None,
    trust_remote_code: option.TrustRemoteCode = False,
    load_in_4bit: option.LoadIn4bit = False,
    load_in_8bit: option.LoadIn8bit = False,
    gradient_checkpointing: option.GradientCheckpointing = None,
    compile: option.Compile = None,
    settings: option.Settings = None,
    quiet: option.Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a label-supervised model; prints the best validation metrics as the last line (JSON)."""
    overrides = option.train_overrides(locals())
    from lsllama.run_folder import RunFolder
    from lsllama.training.loop import train_run

    for section, values in parse_settings(settings or []).items():
        overrides.setdefault(section, {}).update(values)
    cfg = _train_config(value(task), preset.value, config, overrides)
    finished_before = resume is not False and RunFolder(output).finished
    results = train_run(cfg, output, resume=resume, progress=not quiet).results
    if finished_before:
        typer.echo(
            f"{output} holds this run, finished: its results are printed below, nothing was trained. "
            "To train again, pass --no-resume (replaces it) or another --output.",
            err=True,
        )
    typer.echo(json.dumps(results.get("validation") or results))


def _train_config(
    task: str | None, preset: str, config: Path | None, overrides: dict[str, dict[str, Any]]
) -> RunConfig:
    """Defaults < task defaults < preset < config file < flags, for the task given or else read off the data."""
    from lsllama.config import layered_config, read_config_file
    from lsllama.data.dataset import infer_task

    raw = read_config_file(config) if config is not None else None
    cfg = layered_config(task, preset, raw, str(config), overrides)
    if task is None and "task" not in (raw or {}):
        cfg = layered_config(infer_task(cfg.data), preset, raw, str(config), overrides)
    if cfg.data.data is None and cfg.data.train_file is None:
        raise UsageError("--data (or --train-file) is required")
    return cfg


PRECISION_HELP = (
    "How the backbone runs: fp32 is exact (a text's probabilities do not depend on its batch, to 1e-4); "
    "bf16 is faster where the hardware has it, and moves probabilities by up to ~0.02 with the batch. "
    "Default: the run's own precision."
)


@app.command(
    short_help="Score a run on a labelled split or file.",
    epilog="Example: lsllama evaluate runs/sst2 --data sst2 --split validation",
)
@handle_errors
def evaluate(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder written by `lsllama train`.")],
    data: Annotated[str | None, Opt(help="Data to evaluate on (default: the run's own).")] = None,
    split: Annotated[SplitChoice, Opt(help="The split to score.")] = SplitChoice.validation,
    file: Annotated[str | None, Opt(help="A labelled file to evaluate instead of a split.")] = None,
    max_eval_samples: Annotated[int | None, Opt(help="Score a fixed, seeded sample of this many rows.")] = None,
    max_samples: Annotated[int | None, Opt("--max-samples", hidden=True)] = None,  # the name before 0.2
    batch_size: Annotated[int, Opt(help="Rows per inference batch.")] = T.eval_batch_size,
    output: Annotated[
        Path | None,
        Opt("--output", "-o", help="Folder for the report (default: RUN/report, and RUN/README.md refreshed)."),
    ] = None,
    precision: Annotated[PrecisionChoice | None, Opt(help=PRECISION_HELP)] = None,
    debug: Debug = False,
) -> None:
    """Score a run on a labelled split; writes a report (metrics JSON, confusion matrix / curves) into RUN/report
    and refreshes the model card (RUN/README.md), or into --output alone; prints the metrics (JSON)."""
    from lsllama.api import Classifier
    from lsllama.evaluation.report import plot_learning_curves, write_report
    from lsllama.run_folder import LOG, RunFolder
    from lsllama.training.card import REPORT, write_model_card

    if output is not None and output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file: give a folder for the report")
    clf = Classifier.load(run, precision=value(precision))
    max_samples = max_eval_samples if max_eval_samples is not None else max_samples
    split = split.value
    metrics = clf.evaluate(data=data, split=split, batch_size=batch_size, max_samples=max_samples, file=file)
    folder = RunFolder.locate(run).path  # an export keeps its run in a subfolder
    report = output if output is not None else folder / REPORT
    write_report(report, split, metrics, clf.labels.names)
    plot_learning_curves(folder / LOG, report / "learning_curves.png", clf.config.train.metric_for_best or "accuracy")
    if output is None:
        write_model_card(folder)
        typer.echo(f"wrote the report to {report} and the model card to {folder / 'README.md'}", err=True)
    else:
        typer.echo(f"wrote the report to {report}", err=True)
    typer.echo(json.dumps(metrics))


@app.command(
    short_help="Predict labels or entities for texts.",
    epilog="Example: lsllama predict runs/sst2 --input texts.txt --output preds.jsonl",
)
@handle_errors
def predict(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder written by `lsllama train`.")],
    input: Annotated[
        Path,
        Opt("--input", "-i", help=".txt or - (standard input): one text per line; or .csv / .jsonl."),
    ],
    output: Annotated[Path, Opt("--output", "-o", help="Where to write predictions: .jsonl or .csv.")],
    text_column: Annotated[str | None, Opt(help="CSV / JSONL: the text column (default: the run's).")] = None,
    text_pair_column: Annotated[str | None, Opt(help="CSV / JSONL: the second text (pair runs).")] = None,
    keep_columns: Annotated[
        str | None, Opt(help="CSV / JSONL: comma-separated input columns copied into each record (default: id).")
    ] = None,
    batch_size: Annotated[int, Opt(help="Rows per inference batch.")] = T.eval_batch_size,
    format: Annotated[
        PredictFormatChoice, Opt(help="jsonl (or csv, from --output's suffix), or conll (token task).")
    ] = PredictFormatChoice.jsonl,
    precision: Annotated[PrecisionChoice | None, Opt(help=PRECISION_HELP)] = None,
    debug: Debug = False,
) -> None:
    """Predict labels (sequence task: a label, a set of labels or a value) or entities (token task) for every
    input text. Blank lines of a .txt input are skipped, and counted on stderr."""
    from lsllama.run_folder import RunFolder
    from lsllama.serving.files import output_format, predict_inputs, read_inputs, write_predictions

    format = format.value
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    kind = output_format(output, format)
    folder = RunFolder.locate(run)
    folder.check_complete()
    config = folder.config()
    if kind == "conll" and config.task != "token":
        raise UsageError("--format conll is for token-task runs")
    keep = [c.strip() for c in keep_columns.split(",") if c.strip()] if keep_columns is not None else None
    inputs = read_inputs(input, config, text_column, text_pair_column, keep)  # before the model: fail fast
    if inputs.skipped_blank_lines:
        typer.echo(f"skipped {inputs.skipped_blank_lines} blank lines of {input}", err=True)
    from lsllama.api import Classifier  # torch and the model only once the inputs are known to be good

    clf = Classifier.load(run, precision=value(precision))
    write_predictions(output, predict_inputs(clf, inputs, batch_size, conll=kind == "conll"), kind)
    typer.echo(f"wrote {len(inputs.texts)} predictions to {output}", err=True)


@app.command(
    short_help="Save a run as a transformers model.", epilog="Example: lsllama export runs/sst2 --output exports/sst2"
)
@handle_errors
def export(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder written by `lsllama train`.")],
    output: Annotated[Path, Opt("--output", "-o", help="Folder to write (a transformers model + the run).")],
    overwrite: Annotated[bool, Opt(help="Replace OUTPUT if it exists.")] = False,
    debug: Debug = False,
) -> None:
    """Save RUN as a transformers model (LoRA merged) that `transformers.pipeline` loads; prints one JSON object.

    OUTPUT/README.md says how to load it and where transformers can differ from lsllama.

    Runs that need lsllama's code (mean / max pooling, --unmask-from-layer) are exported for lsllama only."""
    from lsllama.modeling.loading import no_transformers_progress
    from lsllama.serving.export import export_run

    with no_transformers_progress():  # "Writing model shards": lsllama shows its own progress only
        result = export_run(run, output, overwrite=overwrite)
    typer.echo(json.dumps({**asdict(result), "path": str(result.path)}))


@app.command(
    short_help="Serve a run over HTTP.",
    epilog="Example: lsllama serve runs/sst2 --port 8000   (then open http://127.0.0.1:8000/docs)",
)
@handle_errors
def serve(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder (or an export folder).")],
    host: Annotated[str, Opt(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, Opt(help="Port to listen on.")] = 8000,
    max_batch_size: Annotated[int, Opt(help="Most texts per model call; 1 turns batching off.")] = 32,
    max_wait_ms: Annotated[float, Opt(help="How long a request waits for others to share its batch.")] = 5.0,
    max_texts: Annotated[int, Opt(help="Most texts per request (more: 422).")] = 64,
    max_text_chars: Annotated[int, Opt(help="Longest text in characters (longer: 422).")] = 10_000,
    max_body_bytes: Annotated[int, Opt(help="Largest request body (larger: 413).")] = 1 << 20,
    precision: Annotated[PrecisionChoice | None, Opt(help=PRECISION_HELP)] = None,
    debug: Debug = False,
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
    app_ = create_app(Classifier.load(run, precision=value(precision)), settings)
    access = logging.getLogger("lsllama.serving.access")  # the library logs each request; the CLI shows it
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    uvicorn.run(app_, host=host, port=port, log_level="info", access_log=False)


if __name__ == "__main__":
    app()
