"""The `lsllama train` options: each flag's type, help text and default as the help shows it, and the config
settings the flags set, derived from the config dataclasses (a flag sets the field of its own name).

Apart from cli.py so that `train`'s signature reads as its list of flags. Light imports only: `lsllama --help`
must not wait for torch (tests/test_cli.py checks it).
"""

from __future__ import annotations

import enum
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from lsllama.config import (
    HEAD_INITS,
    LONG_TEXT,
    METRICS,
    POOLINGS,
    PRECISIONS,
    PRESETS,
    PROBLEMS,
    TASKS,
    TOKEN_TASK_DEFAULTS,
    DataConfig,
    ModelConfig,
    TrainConfig,
)

Opt = typer.Option
M, D, T = ModelConfig(), DataConfig(), TrainConfig()  # the defaults the help shows (config.py holds them)
TOKEN = TOKEN_TASK_DEFAULTS["train"]


def choices(name: str, values: tuple[str, ...] | list[str]) -> type[enum.Enum]:
    """A str Enum of a config's allowed values: the help lists them and the parser rejects anything else."""
    return enum.Enum(name, {value: value for value in values}, type=str)


TaskChoice = choices("Task", TASKS)
ProblemChoice = choices("Problem", PROBLEMS)
PoolingChoice = choices("Pooling", POOLINGS)
HeadInitChoice = choices("HeadInit", HEAD_INITS)
LongTextChoice = choices("LongText", LONG_TEXT)
PrecisionChoice = choices("Precision", PRECISIONS)
PresetChoice = choices("Preset", list(PRESETS))
MetricChoice = choices("Metric", list(dict.fromkeys(m for names in METRICS.values() for m in names)))
SplitChoice = choices("Split", ("train", "validation", "test"))
PredictFormatChoice = choices("PredictFormat", ("jsonl", "conll"))


def value(choice: enum.Enum | None) -> str | None:
    return None if choice is None else choice.value


Debug = Annotated[bool, Opt("--debug", help="Show full tracebacks and library warnings.")]

# ---- lsllama train: one type per flag, in the order the help lists them ----

Output = Annotated[Path, Opt("--output", "-o", help="Run folder to create (or resume).")]
Data = Annotated[
    str | None,
    Opt(
        help="Folder, name under $LSLLAMA_DATA (sst2, conll2003...), single file (.jsonl/.csv/.tsv/.conll), "
        "or hub dataset id."
    ),
]
Model = Annotated[
    str | None, Opt(help=f"Built-in name (default {M.name}; tiny-random for smoke runs), hub id or local folder.")
]
Task = Annotated[TaskChoice | None, Opt(help="Default: token for CoNLL files / token columns, else sequence.")]
Problem = Annotated[
    ProblemChoice | None, Opt(help=f"Sequence task: what the label column holds (default {D.problem}).")
]
Preset = Annotated[PresetChoice, Opt(help="paper: the official LS-LLaMA recipe (random head, no step floor).")]
Config = Annotated[Path | None, Opt(help="YAML file with model/data/train sections (flags override it).")]
Pooling = Annotated[
    PoolingChoice | None, Opt(help=f"Sequence task: how a text becomes one vector (default {M.pooling}).")
]
Bidirectional = Annotated[
    bool | None,
    Opt(
        "--bidirectional/--causal",
        help="Remove the causal mask (LS-unLLaMA). Default: bidirectional for the token task.",
    ),
]
UnmaskFromLayer = Annotated[int | None, Opt(metavar="K", help="Only layers >= K attend bidirectionally.")]
HeadInit = Annotated[
    HeadInitChoice | None,
    Opt(
        help="Sequence task: label_names starts the head from the model's words for the labels "
        f"(default {M.head_init}; random: the paper's head)."
    ),
]
Template = Annotated[
    str | None,
    Opt(
        help="Sequence task: what the model reads, with {text} (and {labels}), e.g. '{text}\\nSentiment:'; "
        f"labels: 'Possible labels: {{labels}}.\\nText: {{text}}\\nLabel:'; none: the text alone (default "
        f"{D.template}: labels for single texts with labels)."
    ),
]
Question = Annotated[
    str | None,
    Opt(
        help="Sequence task, one label per text: a question that names the task, asked before the labels "
        "template's list of labels (template auto or labels), e.g. 'What is the sentiment of the tweet below?'."
    ),
]
Epochs = Annotated[
    float | None, Opt(help=f"Passes over the training data (default {T.epochs:g}; token task {TOKEN['epochs']:g}).")
]
LearningRate = Annotated[
    float | None,
    Opt(
        "--learning-rate",
        "--lr",
        help=f"Peak learning rate (default {T.learning_rate:g}).",
    ),
]
BatchSize = Annotated[
    int | None,
    Opt(help=f"Examples per optimizer step, global (default {T.batch_size}; token task {TOKEN['batch_size']})."),
]
MinSteps = Annotated[
    int | None, Opt(help=f"At least this many optimizer steps: more epochs for small data (default {T.min_steps}).")
]
HeadLr = Annotated[float | None, Opt("--head-lr", help="The head's learning rate (default: --lr).")]
MaxTokens = Annotated[int | None, Opt(help="Build batches to this padded-token budget instead.")]
MicroBatches = Annotated[int | None, Opt(help=f"Split each batch into this many passes (default {T.micro_batches}).")]
GradientAccumulation = Annotated[int | None, Opt(hidden=True)]  # the name of --micro-batches in 0.1, same meaning
MaxLength = Annotated[
    int | None, Opt(help=f"Most tokens per text / window (default {D.max_length}; up to the model's context).")
]
LongText = Annotated[
    LongTextChoice | None, Opt(help=f"Texts over --max-length (default {D.long_text}); windows are averaged.")
]
WindowStride = Annotated[int | None, Opt(help="How far consecutive windows move (default: half a window).")]
MaxTrainSamples = Annotated[int | None, Opt(help="Train on a fixed, seeded sample of this many rows.")]
MaxEvalSamples = Annotated[int | None, Opt(help="Validate on a fixed, seeded sample of this many rows.")]
ValidationFraction = Annotated[
    float | None,
    Opt(
        help="Data without a validation split: hold out this fraction of train "
        f"(default {D.validation_fraction}; 0: none)."
    ),
]
Labels = Annotated[
    str | None, Opt(help="Comma-separated label names in id order: pins the label set (default: labels.txt).")
]
Seed = Annotated[int | None, Opt(help=f"Random seed: LoRA and head initialisation, data order (default {T.seed}).")]
TrainFile = Annotated[str | None, Opt(help="A training file, instead of (or with) --data.")]
ValidationFile = Annotated[str | None, Opt(help="A validation file, with --train-file.")]
TextColumn = Annotated[str | None, Opt(help=f"Column with the text (default {D.text_column}).")]
TextPairColumn = Annotated[str | None, Opt(help="Second text column: train on text pairs.")]
LabelColumn = Annotated[str | None, Opt(help=f"Column with the label (default {D.label_column}).")]
TokensColumn = Annotated[str | None, Opt(help=f"Token task: column with the words (default {D.tokens_column}).")]
TagsColumn = Annotated[str | None, Opt(help=f"Token task: column with the tags (default {D.tags_column}).")]
LabelAllSubtokens = Annotated[
    bool | None,
    Opt(
        "--label-all-subtokens/--label-first-subtoken",
        help="Token task: which sub-tokens carry a word's tag (default: the first).",
    ),
]
LoraR = Annotated[int | None, Opt(help=f"LoRA rank (default {M.lora_r}).")]
LoraAlpha = Annotated[int | None, Opt(help=f"LoRA alpha (default {M.lora_alpha}).")]
LoraDropout = Annotated[float | None, Opt(help=f"LoRA dropout (default {M.lora_dropout:g}).")]
LoraTargets = Annotated[
    str | None, Opt(help=f"Comma-separated module names, or all-linear (default {M.lora_targets}).")
]
Precision = Annotated[
    PrecisionChoice | None,
    Opt(help=f"bf16: frozen weights bf16, LoRA and head fp32 (default {M.precision}: bf16 where fast)."),
]
EvalEvery = Annotated[int | None, Opt(help="Evaluate every N optimizer steps (default: every epoch).")]
MetricForBest = Annotated[
    MetricChoice | None, Opt(help="Validation metric that selects the kept model (default: the problem's first).")
]
EarlyStoppingPatience = Annotated[int | None, Opt(help="Stop after N evaluations without a better one (default: off).")]
CheckpointEvery = Annotated[int | None, Opt(help="Checkpoint every N optimizer steps (default: at evaluations).")]
KeepCheckpoints = Annotated[
    bool, Opt("--keep-checkpoints", help="Keep the resumable checkpoints once the run is finished.")
]
Resume = Annotated[bool | None, Opt("--resume/--no-resume", help="Default: resume if a checkpoint exists.")]
TrustRemoteCode = Annotated[bool, Opt(help="Allow model code from the hub (off unless asked).")]
LoadIn4bit = Annotated[bool, Opt(help="QLoRA: NF4 frozen weights (CUDA + bitsandbytes).")]
LoadIn8bit = Annotated[bool, Opt(help="8-bit frozen weights (CUDA + bitsandbytes).")]
GradientCheckpointing = Annotated[
    bool | None,
    Opt(
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in backward (less memory).",
    ),
]
Compile = Annotated[
    bool | None,
    Opt(
        "--compile/--no-compile",
        help="torch.compile the decoder layers. Default: on for long single-process CPU runs, where it pays.",
    ),
]
Settings = Annotated[
    list[str] | None,
    Opt("--set", metavar="SECTION.KEY=VALUE", help="Any config setting, e.g. --set model.lora_r=8 (repeatable)."),
]
Quiet = Annotated[bool, Opt(help="No progress bar.")]


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
COMMAND_ONLY = ("output", "task", "preset", "config", "resume", "settings", "quiet", "debug")
"""`train` options that are not config settings: the command reads them itself."""


def train_overrides(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The config settings `train`'s flags set, by section (None where a flag is not given: the config file,
    the preset or the default decides). A flag sets the config field of its own name; the flags named
    otherwise, or written otherwise on the command line, are converted here."""
    given = {name: value(v) if isinstance(v, enum.Enum) else v for name, v in options.items()}
    for name in COMMAND_ONLY:
        given.pop(name, None)
    targets, template, labels = given.pop("lora_targets"), given.pop("template"), given.pop("labels")
    load_in_4bit, load_in_8bit = given.pop("load_in_4bit"), given.pop("load_in_8bit")
    old_micro_batches = given.pop("gradient_accumulation")
    given.update(
        name=given.pop("model"),
        head_learning_rate=given.pop("head_lr"),
        keep_checkpoints_after=given.pop("keep_checkpoints") or None,
        trust_remote_code=given.pop("trust_remote_code") or None,
        quantization="4bit" if load_in_4bit else "8bit" if load_in_8bit else None,
        micro_batches=given["micro_batches"] if given["micro_batches"] is not None else old_micro_batches,
        lora_targets=targets if targets in (None, "all-linear") else [t.strip() for t in targets.split(",")],
        template=template.replace("\\n", "\n") if template is not None else None,  # a typed \n is a newline
        labels=[name.strip() for name in labels.split(",")] if labels is not None else None,
    )
    return {
        section: {f.name: given[f.name] for f in fields(kind) if f.name in given} for section, kind in SECTIONS.items()
    }
