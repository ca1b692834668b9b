"""Every setting of a run, with its default, in one place.

A run folder stores the resolved `RunConfig` as `config.yaml`; loading a run rebuilds the exact model
from it. Task-dependent defaults (the token task wants bidirectional attention and more adaptation
than sentence classification) are filled in by `RunConfig.resolved()`, so what is saved is explicit.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lsllama.errors import UsageError

TASKS = ("sequence", "token")
PROBLEMS = ("single_label", "multi_label", "regression")
LONG_TEXT = ("head", "tail", "head_tail", "windows")
POOLINGS = ("last", "mean", "max")
HEAD_INITS = ("label_names", "random")
TEMPLATES = {"labels": "Possible labels: {labels}.\nText: {text}\nLabel:"}
"""Named templates. `labels` names no data set, only its labels, and ends where the model would say one: the
label-word head then starts as the model's own choice among the label words after that question."""
AUTO, NO_TEMPLATE = "auto", "none"
"""`template` values: `auto` (the default) is `labels` where it applies (`lsllama.data.encoding.auto_template`),
`none` the text alone."""
PRECISIONS = ("auto", "fp32", "bf16")
# Validation metrics that may select the kept model, per (task, problem); the first is the default.
METRICS = {
    ("sequence", "single_label"): ("accuracy", "macro_f1"),
    ("sequence", "multi_label"): ("micro_f1", "macro_f1", "subset_accuracy"),
    ("sequence", "regression"): ("pearson", "spearman", "mse"),
    ("token", "single_label"): ("f1", "precision", "recall", "token_accuracy"),
}
LOWER_IS_BETTER = frozenset({"mse"})


def metric_names(task: str, problem: str = "single_label") -> tuple[str, ...]:
    """The metrics `--metric-for-best` accepts for a task and problem type (first: the default)."""
    return METRICS[(task, problem)]


@dataclass
class ModelConfig:
    """The backbone, how its attention is masked, how it is pooled, and how LoRA adapts it."""

    name: str = "smollm2-135m"
    """Built-in name (`smollm2-135m`, `tiny-random`), Hugging Face hub id, or local folder."""
    pooling: str = "last"
    """Sequence task: `last` non-pad token, or masked `mean` / `max` over real tokens."""
    bidirectional: bool | None = None
    """Remove the causal mask in every layer (LS-unLLaMA). None: per task (token task: True)."""
    unmask_from_layer: int | None = None
    """Only layers with index >= K attend bidirectionally; layers below stay causal. Set, it decides every
    layer, and the saved config has `bidirectional: false` (an older run folder's `true` beside it meant the same)."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    """PEFT draws a dropout mask over every adapted layer's input, a large share of a CPU training step.
    0 trained faster and scored no lower over three seeds on SST-2 and CoNLL-2003 than 0.05
    (benchmarks/results/ablation_lora_dropout.md)."""
    lora_targets: list[str] | str = "all-linear"
    """PEFT target modules: a list of module names, or `all-linear`."""
    head_init: str = "label_names"
    """Sequence task, single- and multi-label: `label_names` starts each class's head row from the model's own
    output embedding of its label name (or its `label_descriptions` entry), so that the untrained head is the
    language model's zero-shot choice among the label words; `random` starts from noise (the paper's head)."""
    precision: str = "auto"
    """`bf16`: frozen weights in bf16 + autocast, LoRA and head in fp32. `auto`: bf16 if fast here."""
    quantization: str | None = None
    """QLoRA: `4bit` (NF4) or `8bit` frozen weights through bitsandbytes, CUDA only."""
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    """Where examples come from and how they become token ids."""

    data: str | None = None
    """Folder, name under $LSLLAMA_DATA (e.g. `sst2`), a single file, or a hub dataset id."""
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    problem: str = "single_label"
    """Sequence task: what the label column holds. `single_label` (one label name or id: softmax +
    cross-entropy), `multi_label` (a list of label names, or names joined by `|`: sigmoid + binary
    cross-entropy, per-label thresholds tuned on validation) or `regression` (a number: mean squared
    error on targets standardised with the training split's mean and std)."""
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    labels: list[str] | None = None
    """The label set, in id order. None: labels.txt beside the data, else sorted from train."""
    label_descriptions: dict[str, str] | None = None
    """Words for label names that are codes (`{"ABBR": "abbreviation"}`): what `head_init: label_names` and a
    template's `{labels}` use for those labels."""
    template: str | None = AUTO
    """Sequence task, single texts: the model reads `template` with `{text}` replaced by the text (and `{labels}`
    by the label names), e.g. `"{text}\nSentiment:"`, or a name in `TEMPLATES` (`labels`: "Possible labels:
    {labels}.\nText: {text}\nLabel:"). Long texts are cut inside `{text}`, never the template. `auto`: `labels`
    for single-label classification of single texts where it takes at most a quarter of `max_length`, else
    none (the token task, text pairs, multi-label, regression); `none`: the text alone. The saved config
    holds the template's text."""
    question: str | None = None
    """Sequence task, single-label single texts: a question that names the task (`What is the sentiment of the
    financial news tweet?`), asked before the `labels` template's list of labels (by `template: auto` or
    `labels`). A question that names the task scores above labels alone where the label words do not say it
    (docs/results.md, "The task's words in the question"). The saved config holds it inside the template."""
    max_length: int = 128
    """Most tokens per model input (special tokens included); at most the model's context length."""
    long_text: str = "head"
    """Sequence task, texts longer than `max_length`: keep the `head`, the `tail`, `head_tail` (the first
    quarter and the last three quarters of the budget), or read them in `windows` (overlapping, moved
    by `window_stride`) whose pooled vectors are averaged before the head."""
    max_train_samples: int | None = None
    """Train on a fixed, seeded sample of this many rows (taken after validation rows are held out)."""
    max_eval_samples: int | None = None
    validation_fraction: float = 0.1
    """Data without a validation split (a single file, `--train-file` alone, a folder or hub dataset
    without one): this fraction of the training rows, seeded and stratified by label, is held out as
    validation (the rows are named in the run's validation_rows.json). 0: no validation, the last weights
    are kept."""
    label_all_subtokens: bool = False
    """Token task: label every sub-token of a word (default: only the first)."""
    window_stride: int | None = None
    """How far consecutive windows move (token task: of a long sentence; sequence task with
    `long_text: windows`: of a long text), in tokens. Default: half the window."""


@dataclass
class TrainConfig:
    """The optimisation recipe. Defaults are the ones measured best on the default model."""

    epochs: float = 1.0
    min_steps: int = 100
    """At least this many optimizer steps: a small training set is read for more epochs (each shuffled
    anew, evaluated at its end, the best weights kept) until the run has made them. 300 rows are 19 steps of
    16; the floor lets them teach more, and since the epochs are evaluated and the best kept, a later epoch
    that overfits cannot replace a better earlier one. Where the floor makes more than 8 epochs (under 200
    rows), every k-th is evaluated, for at most 8 evaluations and the last step. Sets of 1,600 rows or
    more (>= 100 steps per epoch at batch 16) keep their cost. SST-2, 300 rows, seeds 0/1/2, label-word
    head: 0.754 +- 0.110 after one epoch, 0.860 +- 0.007 with at least 100 steps
    (benchmarks/results/small_data.md). 0: `epochs` alone decides."""
    learning_rate: float = 5e-4
    head_learning_rate: float | None = None
    """The head's (`score`) learning rate, apart from the adapters'. None: `learning_rate`."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    batch_size: int = 16
    """Examples per optimizer step (global, over all processes and micro-batches)."""
    max_tokens: int | None = None
    """If set, batches are built to this padded-token budget instead of a fixed example count."""
    micro_batches: int = 1
    """Each process splits its share of a batch into this many passes, adding up their gradients: the same
    `batch_size` examples per optimizer step in less memory. (transformers' `gradient_accumulation_steps`
    multiplies the batch instead; this setting was called `gradient_accumulation` before, with this meaning.)"""
    max_grad_norm: float = 1.0
    seed: int = 42
    eval_every: int = 0
    """Evaluate every N optimizer steps; 0: at the end of every epoch (of every k-th where the step floor
    adds more than 8: `min_steps`), and at the last step."""
    metric_for_best: str | None = None
    """Validation metric that selects the kept model. Default: accuracy (single-label), micro_f1
    (multi-label), pearson (regression), f1 (token task); `mse` is the one where lower is better."""
    early_stopping_patience: int | None = None
    eval_batch_size: int = 64
    """Most rows per inference batch; on CPU a batch also stops at `CPU_BATCH_TOKENS` padded tokens
    (lsllama/evaluation/predict.py)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N optimizer steps (0: only at evaluations)."""
    keep_checkpoints: int = 2
    """How many resumable checkpoints a run keeps while it trains."""
    keep_checkpoints_after: bool = False
    """Keep them once the run is finished too (default: removed once the best weights are written)."""
    tensorboard: bool = True
    compile: bool | None = None
    """torch.compile each decoder layer for training (lsllama/modeling/compilation.py): compilation
    first, faster steps after. Unset: on for single-process CPU runs with at least `COMPILE_AFTER_STEPS`
    optimizer steps in the whole run (where it was measured to pay) if inductor can build kernels, off
    otherwise (`worth_compiling` has every condition)."""


@dataclass
class RunConfig:
    task: str = "sequence"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def resolved(self) -> RunConfig:
        """Fill task-dependent defaults and validate, so the saved config says everything."""
        cfg = dataclasses.replace(
            self,
            model=dataclasses.replace(self.model),
            data=dataclasses.replace(self.data),
            train=dataclasses.replace(self.train),
        )
        _resolve_template_name(cfg)
        _check_choices(cfg)
        _check_data_sizes(cfg)
        _resolve_attention(cfg)
        _resolve_metric(cfg)
        _check_numbers(cfg)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        """config.yaml's text: every section in field order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: Path) -> None:
        path.write_text(self.to_yaml())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> RunConfig:
        raw = with_current_keys(raw, source)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise UsageError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
        sections = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in sections:
                kwargs[key] = _build_section(sections[key], value or {}, f"{source}: {key}")
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """A run folder's saved config; a setting it has no key for ran as `RAN_BEFORE_ADDED` says."""
        raw = with_current_keys(read_config_file(path), str(path))
        for section, added in RAN_BEFORE_ADDED.items():
            if isinstance(raw.get(section), dict):
                raw[section] = {**added, **raw[section]}
        return cls.from_dict(raw, source=str(path))


def _check_choices(cfg: RunConfig) -> None:
    """Each setting with a fixed set of values holds one of them, and the ones that go together do."""
    if cfg.task not in TASKS:
        raise UsageError(f"--task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    if cfg.model.pooling not in POOLINGS:
        raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}, got {cfg.model.pooling!r}")
    if cfg.model.head_init not in HEAD_INITS:
        raise UsageError(f"--head-init must be one of {', '.join(HEAD_INITS)}, got {cfg.model.head_init!r}")
    if cfg.data.template not in (None, AUTO) and "{text}" not in cfg.data.template:
        names = ", ".join([AUTO, NO_TEMPLATE, *TEMPLATES])
        raise UsageError(f"--template must contain {{text}} or be one of {names}, got {cfg.data.template!r}")
    if cfg.data.template not in (None, AUTO) and (cfg.task == "token" or cfg.data.text_pair_column):
        raise UsageError("--template is for the sequence task with single texts")
    if cfg.model.precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {cfg.model.precision!r}")
    if cfg.model.quantization not in (None, "4bit", "8bit"):
        raise UsageError(f"quantization must be 4bit or 8bit, got {cfg.model.quantization!r}")
    if cfg.data.problem not in PROBLEMS:
        raise UsageError(f"--problem must be one of {', '.join(PROBLEMS)}, got {cfg.data.problem!r}")
    if cfg.data.long_text not in LONG_TEXT:
        raise UsageError(f"--long-text must be one of {', '.join(LONG_TEXT)}, got {cfg.data.long_text!r}")
    if cfg.task == "token" and cfg.data.problem != "single_label":
        raise UsageError(f"--problem {cfg.data.problem} is for the sequence task (the token task tags words)")
    if cfg.task == "token" and cfg.data.long_text != "head":
        raise UsageError("--long-text is for the sequence task (the token task reads long sentences in windows)")
    if cfg.data.long_text == "windows" and cfg.data.text_pair_column:
        raise UsageError("--long-text windows reads single texts; text pairs need head, tail or head_tail")


def _check_data_sizes(cfg: RunConfig) -> None:
    for name, count in (
        ("--max-train-samples", cfg.data.max_train_samples),
        ("--max-eval-samples", cfg.data.max_eval_samples),
    ):
        if count is not None and count <= 0:
            raise UsageError(f"{name} must be positive, got {count}")
    fraction = cfg.data.validation_fraction
    if not 0 <= fraction < 1:
        raise UsageError(f"--validation-fraction must be at least 0 and below 1 (0: no validation), got {fraction}")
    if cfg.data.window_stride is not None and cfg.data.window_stride <= 0:
        raise UsageError(f"--window-stride must be positive, got {cfg.data.window_stride}")


def classifies_single_texts(task: str, data: DataConfig) -> bool:
    """Where `template: auto` puts the text in a question: one label per text, one text to put there (the
    question asks for one label, and only single-label runs have measured it)."""
    return task == "sequence" and not data.text_pair_column and data.problem == "single_label"


def _resolve_template_name(cfg: RunConfig) -> None:
    """`none` is no template and a name in `TEMPLATES` its text (so that a run keeps what it read), `question`
    put in front of `labels`; `auto` is none where it does not apply, and elsewhere waits for the tokenizer and
    the labels (`lsllama.data.encoding.auto_template`)."""
    template, question = cfg.data.template, (cfg.data.question or "").strip() or None
    if question is not None:
        _check_question(cfg, question)
    if template == NO_TEMPLATE or (template == AUTO and not classifies_single_texts(cfg.task, cfg.data)):
        template = None
    if template in ("labels", TEMPLATES["labels"]):
        template, question = with_question(TEMPLATES["labels"], question), None  # asked inside the template
    cfg.data.template, cfg.data.question = TEMPLATES.get(template, template), question


def _check_question(cfg: RunConfig, question: str) -> None:
    """A question goes in front of the `labels` question, which asks for one label of one text."""
    if not classifies_single_texts(cfg.task, cfg.data):
        raise UsageError("--question is for the sequence task with single texts and one label each")
    if "{text}" in question:
        raise UsageError("--question goes before the text: {text} belongs in a --template of your own")
    if cfg.data.template in (None, NO_TEMPLATE):
        raise UsageError("--question needs the auto or labels template: --template none and --preset paper have none")
    if cfg.data.template not in (AUTO, "labels", TEMPLATES["labels"]):
        raise UsageError("--question needs the auto or labels template: write it into your own --template instead")


def with_question(template: str, question: str | None) -> str:
    """The `labels` template with the task's question in front ("What is ...? Possible labels: ...")."""
    return f"{question} {template}" if question else template


def _resolve_attention(cfg: RunConfig) -> None:
    """`bidirectional` as it ran: the task's default, or false where layer-wise unmasking decides each layer."""
    if cfg.model.unmask_from_layer is not None:
        cfg.model.bidirectional = False  # layer-wise unmasking decides each layer; `bidirectional` is not read
    elif cfg.model.bidirectional is None:
        cfg.model.bidirectional = cfg.task == "token"


def _resolve_metric(cfg: RunConfig) -> None:
    """The metric that selects the kept model: the task and problem's first unless one of theirs is given."""
    allowed = metric_names(cfg.task, cfg.data.problem)
    if cfg.train.metric_for_best is None:
        cfg.train.metric_for_best = allowed[0]
    if cfg.train.metric_for_best not in allowed:
        problem = "" if cfg.task == "token" else f" ({cfg.data.problem})"
        raise UsageError(
            f"--metric-for-best must be one of {', '.join(allowed)} for the {cfg.task} task{problem}, "
            f"got {cfg.train.metric_for_best!r}"
        )


def _check_numbers(cfg: RunConfig) -> None:
    if cfg.model.unmask_from_layer is not None and cfg.model.unmask_from_layer < 0:
        raise UsageError("--unmask-from-layer must be >= 0")
    for name, value in (
        ("--epochs", cfg.train.epochs),
        ("--learning-rate", cfg.train.learning_rate),
        ("--batch-size", cfg.train.batch_size),
        ("--max-length", cfg.data.max_length),
        ("--micro-batches", cfg.train.micro_batches),
    ):
        if value is None or value <= 0:
            raise UsageError(f"{name} must be positive, got {value}")
    if cfg.train.min_steps is None or cfg.train.min_steps < 0:
        raise UsageError(f"--min-steps must be >= 0, got {cfg.train.min_steps}")
    if cfg.train.head_learning_rate is not None and cfg.train.head_learning_rate <= 0:
        raise UsageError(f"--head-lr must be positive, got {cfg.train.head_learning_rate}")
    if cfg.data.max_length < 8:
        raise UsageError(f"--max-length must be at least 8, got {cfg.data.max_length}")


def read_config_file(path: str | Path) -> Any:
    """The file's YAML, parsed once for everything that needs it (`{}` when empty); a syntax error names
    the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise UsageError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None


RENAMED_KEYS = {"train": {"gradient_accumulation": "micro_batches"}}
"""Keys renamed since run folders were first written, old name -> new: read under the new name, same meaning."""
RAN_BEFORE_ADDED = {"data": {"template": None}}
"""Settings added since run folders were first written, whose default is not what those runs computed with:
a saved config without the key ran with this value (no template), not today's default (`auto`)."""


def with_current_keys(raw: Any, source: str) -> dict[str, Any]:
    """`raw` (a parsed config file) with renamed keys under their current names, so that the config files and
    run folders written before a rename still load."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping at the top level")
    current = dict(raw)
    for section, renames in RENAMED_KEYS.items():
        values = current.get(section)
        if not isinstance(values, dict) or not renames.keys() & values.keys():
            continue
        values = dict(values)
        for old, new in renames.items():
            if old in values and new in values:
                raise UsageError(f"{source}: {section}.{old} is the old name of {section}.{new}: give one of them")
            if old in values:
                values[new] = values.pop(old)
        current[section] = values
    return current


def _build_section(kind: type, raw: Any, source: str) -> Any:
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping")
    hints = typing.get_type_hints(kind)
    unknown = set(raw) - set(hints)
    if unknown:
        raise UsageError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    values = {}
    for key, value in raw.items():
        value = _yaml_number(value, hints[key])
        if not _has_type(value, hints[key]):
            raise UsageError(f"{source}.{key}: expected {_type_name(hints[key])}, got {value!r}")
        values[key] = value
    return kind(**values)


def _yaml_number(value: Any, hint: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as a string; where a float is expected, take it as the number it is."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if isinstance(value, str) and float in options:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _has_type(value: Any, hint: Any) -> bool:
    """YAML gives str / int / float / bool / list / None; a number where a float is wanted is fine."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        base = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return True
        if base is bool and isinstance(value, bool):
            return True
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if base in (int, str) and isinstance(value, base) and not isinstance(value, bool):
            return True
        if base is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return True
        if base is dict and isinstance(value, dict) and all(isinstance(v, str) for v in (*value, *value.values())):
            return True
    return False


def _type_name(hint: Any) -> str:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    names = [
        "null"
        if o is type(None)
        else "a list of strings"
        if typing.get_origin(o) is list
        else "a mapping of strings"
        if typing.get_origin(o) is dict
        else o.__name__
        for o in options
    ]
    return " or ".join(names)


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Measured best on SmolLM2-135M at a 2,000-row budget (see README).
    "default": {},
    # The official LS-LLaMA scripts: LoRA r=12, alpha=32, dropout 0.1 on q_proj/v_proj, lr 1e-4,
    # batch 8, max length 64, no template, a randomly initialised head and the epochs asked for (no step floor).
    "paper": {
        "model": {
            "lora_r": 12,
            "lora_alpha": 32,
            "lora_dropout": 0.1,
            "lora_targets": ["q_proj", "v_proj"],
            "head_init": "random",
        },
        "data": {"max_length": 64, "template": NO_TEMPLATE},
        "train": {"learning_rate": 1e-4, "batch_size": 8, "warmup_ratio": 0.0, "min_steps": 0},
    },
}

# The token task needs far more adaptation than sentence classification on small models: more epochs.
# Its learning rate is the sequence task's: on CoNLL-2003 over six seeds, 1e-3 (the token default before)
# and 5e-4 scored the same on average, but one 1e-3 run in six fell far behind and no 5e-4 run did
# (benchmarks/results/ablation_learning_rate.md). Its batch is half the sequence task's: twice the optimizer
# steps over the same epochs scored 0.853 +- 0.008 against 0.820 +- 0.007 span F1, every seed ahead, for ~10%
# fewer samples per second (benchmarks/results/ablation_batch_size.md).
TOKEN_TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {"epochs": 3.0, "batch_size": 8},
}


def build_config(
    task: str | None = None,
    preset: str = "default",
    config_file: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> RunConfig:
    """Layer defaults < task defaults < preset < config file < explicit overrides (CLI flags)."""
    raw = read_config_file(config_file) if config_file is not None else None
    return layered_config(task, preset, raw, str(config_file), overrides)


def layered_config(
    task: str | None,
    preset: str,
    raw: Any,
    source: str,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> RunConfig:
    """`build_config` from a config file already parsed (`raw`, None without one; `source` names it in
    errors), so a caller that also reads the file's keys parses it once."""
    if preset not in PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    file_layer: dict[str, Any] = {}
    if raw is not None:
        raw = with_current_keys(raw, source)
        loaded = RunConfig.from_dict(raw, source=source)  # validates keys and types, naming the file in errors
        # Only the keys the file sets, as the loaded (type-checked, converted) values.
        file_layer = {
            key: {name: getattr(getattr(loaded, key), name) for name in (value or {})}
            if key in ("model", "data", "train")
            else value
            for key, value in raw.items()
        }
    cfg = RunConfig(task=task or file_layer.get("task") or "sequence")
    layers: list[dict[str, Any]] = []
    if cfg.task == "token":
        layers.append(TOKEN_TASK_DEFAULTS)
    layers += [PRESETS[preset], {k: v for k, v in file_layer.items() if k != "task"}, overrides or {}]
    for layer in layers:
        for section, values in layer.items():
            target = getattr(cfg, section)
            for key, value in (values or {}).items():
                if value is not None:
                    setattr(target, key, value)
    return cfg
