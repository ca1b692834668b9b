"""The report of benchmarks/paper.py: a Markdown table, a bar chart and findings, from the run records.

Every number and every yes / no in the findings is computed from the records the runs wrote, so a
re-render after more (or different) runs cannot leave a stale claim behind.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass
from math import hypot
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.baselines.classic import C_GRID, DEFAULT_C
from benchmarks.baselines.generative import PROMPT
from benchmarks.paper_plan import (
    CARVED_VALIDATION_ROWS,
    DATASETS,
    METHODS,
    METRIC,
    NOT_RUN,
    PRIMARY_LS,
    Budget,
    PreparedData,
)
from lsllama.config import AUTO, TEMPLATES, build_config
from lsllama.run_folder import atomic_write_text

METRIC_TITLE = {"accuracy": "accuracy", "f1": "span F1"}


@dataclass
class Report:
    command: str
    machine: str
    day: str
    model: str
    budget: Budget
    data: dict[str, PreparedData]
    records: list[dict[str, Any]]
    estimated_seconds: float
    planned: int
    """Runs in the plan; `records` may hold fewer when the report is written before the suite ends."""
    unmask_layer: int
    """K of the layer-wise row (half the backbone's layers), for its label."""
    methods: tuple[str, ...] = tuple(METHODS)
    """The methods with a finished run: the rows shown and the comparisons the findings make."""


@dataclass(frozen=True)
class Stats:
    mean: float
    std: float
    n: int
    seconds: float
    """Mean wall time per run."""
    deterministic: bool = False
    """One run stands for every seed (no seed noise), so its spread is known even from one run."""

    @property
    def spread_known(self) -> bool:
        return self.n > 1 or self.deterministic

    def text(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f} ({self.n} seeds)" if self.n > 1 else f"{self.mean:.3f} (1 run)"


def aggregate(records: list[dict[str, Any]]) -> dict[tuple[str, str], Stats]:
    """Per (data set, method): the reported split's main metric over seeds, and the time per run."""
    groups: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for record in records:
        dataset, method = record["key"]["dataset"], record["key"]["method"]
        metric = METRIC[DATASETS[dataset].task]
        groups[dataset, method].append((record["splits"][record["reported_split"]][metric], record["seconds"]))
    stats = {}
    for key, values in groups.items():
        scores = [score for score, _ in values]
        spread = stdev(scores) if len(scores) > 1 else 0.0
        seconds = mean(seconds for _, seconds in values)
        stats[key] = Stats(mean(scores), spread, len(scores), seconds, METHODS[key[1]].deterministic)
    return stats


def _label(method: str, report: Report) -> str:
    if method == "ls-unmask-half":
        return f"LS: bidirectional from layer {report.unmask_layer} (L/2)"
    return METHODS[method].label


def _rows(report: Report) -> list[str]:
    tasks = {DATASETS[name].task for name in report.budget.datasets}
    return [key for key, method in METHODS.items() if method.task in tasks and key in report.methods]


def _majority(name: str, report: Report) -> float | None:
    """What always answering the most frequent label scores on the reported split: the floor of "learned"."""
    data = report.data[name]
    if data.task != "sequence":
        return None
    rows = data.examples(data.reported)
    return Counter(e.label for e in rows).most_common(1)[0][1] / len(rows)


def _column(name: str, report: Report) -> str:
    data = report.data[name]
    metric = METRIC_TITLE[METRIC[data.task]]
    head = f"{DATASETS[name].title}<br>{metric}, {data.reported}, n={len(data.examples(data.reported))}"
    majority = _majority(name, report)
    return head if majority is None else head + f", majority class {majority:.3f}"


def summary(report: Report, stats: dict[tuple[str, str], Stats]) -> dict[str, Any]:
    """The report's figures as data (`name`.json), for what quotes them (scripts/readme_tables.py)."""
    datasets = {
        name: {
            "title": DATASETS[name].title,
            "metric": METRIC[report.data[name].task],
            "reported_split": report.data[name].reported,
            "n": len(report.data[name].examples(report.data[name].reported)),
            "majority_class": _majority(name, report),
        }
        for name in report.budget.datasets
    }
    cells = [
        {"dataset": name, "method": method, "label": _label(method, report), **vars(cell)}
        for (name, method), cell in sorted(stats.items())
    ]
    return {
        "command": report.command, "machine": report.machine, "date": report.day, "model": report.model,
        "rows": report.budget.rows, "eval_rows": report.budget.eval_rows, "seeds": report.budget.seed_list,
        "planned": report.planned, "finished": len(report.records), "methods": sorted(report.methods),
        "datasets": datasets, "cells": cells,
    }  # fmt: skip


def tables(report: Report, stats: dict[tuple[str, str], Stats]) -> list[str]:
    names = report.budget.datasets
    header = "| method | " + " | ".join(_column(name, report) for name in names) + " |"
    rule = "| --- |" + " ---: |" * len(names)
    scores, times = [header, rule], ["| method | " + " | ".join(DATASETS[n].title for n in names) + " |", rule]
    for method in _rows(report):
        cells = [stats.get((name, method)) for name in names]
        scores.append(f"| {_label(method, report)} | " + " | ".join(c.text() if c else "—" for c in cells) + " |")
        times.append(
            f"| {_label(method, report)} | " + " | ".join(f"{c.seconds:.0f}" if c else "—" for c in cells) + " |"
        )
    return [*scores, "", "Wall time per run (seconds, mean over its runs):", "", *times]


def _claim(claim: str, ls: Stats, others: list[tuple[str, str, Stats | None]]) -> str:
    """ "(1) LS beats A and B: verdict — numbers.", over the rows (title, short name, stats) in the plan
    (stats None: not in it)."""
    present = [(title, short, stats) for title, short, stats in others if stats is not None]
    if not present:
        return f"({claim}): none of its rows has run."
    verdict, numbers = _compare(ls, [(short, stats) for _, short, stats in present])
    return f"({claim}) LS beats {' and '.join(title for title, _, _ in present)}: {verdict} — {numbers}."


def _compare(ls: Stats, others: list[tuple[str, Stats]]) -> tuple[str, str]:
    """A plain verdict (LS ahead of every other row, and whether by more than the seed noise) and the
    numbers behind it. Seed noise is estimated only where both rows' spreads are known (several seeds, or a
    deterministic row): a stochastic row with one run has none, and the verdict says so."""
    parts, ahead, clear, unknown = [], [], [], []
    for name, other in others:
        diff = 100 * (ls.mean - other.mean)
        noise = 100 * hypot(ls.std, other.std) if ls.spread_known and other.spread_known else None
        if noise is None:
            unknown.append(name)
        note = "" if noise is None else (", beyond seed noise" if abs(diff) > noise else ", within seed noise")
        parts.append(f"{name} {other.text()} ({diff:+.1f} points{note})")
        ahead.append(diff > 0)
        clear.append(noise is None or abs(diff) > noise)
    if not all(ahead):
        behind_clearly = any(not a and c for a, c in zip(ahead, clear, strict=True))
        verdict = "**no**" if behind_clearly else "**no, but not beyond seed noise**"
    elif all(clear):
        verdict = "**yes**"
    else:
        verdict = "**yes, but not beyond seed noise**"
    if unknown:
        verdict += f" (single runs: no noise estimate against {' and '.join(unknown)})"
    return verdict, ", ".join(parts)


def findings(report: Report, stats: dict[tuple[str, str], Stats]) -> list[str]:
    lines = []
    for name in report.budget.datasets:
        data, title = report.data[name], DATASETS[name].title
        primary = PRIMARY_LS[data.task]
        needed = [m for m in _rows(report) if METHODS[m].task == data.task]
        missing = [m for m in needed if (name, m) not in stats]
        if missing:
            lines.append(f"- **{title}**: not yet run: {', '.join(missing)}; no finding.")
            continue
        if primary not in needed:
            lines.append(f"- **{title}**: {_label(primary, report)} has not run; no finding.")
            continue
        ls = stats[name, primary]
        metric = METRIC_TITLE[METRIC[data.task]]
        head = f"- **{title}** ({metric} on {data.reported}; LS = {_label(primary, report)}, {ls.text()}):"
        if data.task == "sequence":
            row = {method: stats.get((name, method)) for method in ("zero-shot", "sft", "tfidf", "official")}
            claims = [
                _claim("1", ls, [("zero-shot", "zero-shot", row["zero-shot"]), ("SFT", "SFT", row["sft"])]),
                _claim("3", ls, [("TF-IDF", "TF-IDF", row["tfidf"]),
                                 ("the official recipe", "official", row["official"])]),
            ]  # fmt: skip
        elif len(needed) < len([m for m in METHODS.values() if m.task == "token"]):
            claims = ["the token task's findings need all of its rows to have run."]
        else:
            claims = [f"(1) LS beats zero-shot and SFT: not measured ({NOT_RUN['zero-shot']})."]
            verdict, numbers = _compare(stats[name, "ls-bidir"], [("causal", stats[name, "ls-causal"])])
            layerwise = stats[name, "ls-unmask-half"]
            claims.append(
                f"(2) bidirectional beats causal: {verdict} — bidirectional {stats[name, 'ls-bidir'].text()} vs "
                f"{numbers}; {_label('ls-unmask-half', report)}: {layerwise.text()}."
            )
            verdict, numbers = _compare(ls, [("per-word majority tag", stats[name, "majority-tag"])])
            claims.append(
                f"(3) LS beats the non-LLM baseline: {verdict} — {numbers}; the official recipe: {NOT_RUN['official']}."
            )
        lines.append(" ".join([head, *claims]))
    return lines


def template_name(template: str | None) -> str:
    """How the protocol names a template: `auto` (a key holds the setting as configured, before the run
    resolves it: the `labels` question for these single-label sets), a name in `TEMPLATES`, `none`, or
    `custom`."""
    names = {AUTO: AUTO, **{text: name for name, text in TEMPLATES.items()}}
    return "none" if template is None else names.get(template, "custom")


def protocol(report: Report) -> list[str]:
    by_method = {record["key"]["method"]: record["key"]["recipe"] for record in report.records}
    lines, label_word_head = [], False
    for task, method in PRIMARY_LS.items():
        if method in by_method:
            cfg = by_method[method]
            model, train = cfg["model"], cfg["train"]
            now = build_config(task=task).resolved()
            # Settings added after the first records are in a key only where they differ from what those ran.
            model = {"head_init": "random", **model}
            train = {"min_steps": 0, **train}
            head = ("head_init",) if task == "sequence" else ()  # the token task's head starts random
            label_word_head |= task == "sequence" and model["head_init"] == "label_names"
            template = template_name(cfg["data"].get("template"))  # a key holds it only where one was read
            template_now = template_name(now.data.template)
            changed = [f"template {template} (now {template_now})"] if template != template_now else []
            changed += [
                f"{key.replace('_', ' ')} {section[key]} (now {getattr(current, key)})"
                for section, current, keys in (
                    (
                        model,
                        now.model,
                        ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "precision", *head),
                    ),
                    (train, now.train, ("min_steps", "learning_rate", "epochs", "batch_size")),
                )
                for key in keys
                if section[key] != getattr(current, key)
            ]
            lines.append(
                f"- LS ({task} task), the settings of its runs: LoRA r {model['lora_r']}, alpha "
                f"{model['lora_alpha']}, dropout {model['lora_dropout']} on `{model['lora_targets']}`, "
                f"{train['epochs']:g} epoch(s), at least {train['min_steps']} steps, lr {train['learning_rate']:g}, "
                f"batch {train['batch_size']}, max length {cfg['data']['max_length']} tokens, precision "
                f"`{model['precision']}`"
                + (f", head init `{model['head_init']}`, template `{template}`." if head else ".")
                + (f" Today's defaults differ: {', '.join(changed)}." if changed else "")
            )
    lines += [
        "- Splits: " + "; ".join(_split_note(report.data[name]) for name in report.budget.datasets) + ".",
        "- Model selection uses validation only: LS keeps its best end-of-epoch evaluation (one per epoch"
        + (", and one before training with the label-word head)" if label_word_head else ")")
        + " where test is reported, and is scored with its last weights where validation is the reported split; "
        f"TF-IDF picks C from {list(C_GRID)} on validation where test is reported and keeps C = {DEFAULT_C:g} where "
        "validation is the reported split (choosing on it would inflate the score). Zero-shot, SFT and the "
        "official recipe have no selection step (the last weights).",
        f"- Zero-shot and SFT prompt (the model's chat template, greedy decoding): {_prompts(report)}. The answer's "
        "label is the first label name it contains (case-insensitive, whole words, longest name on a tie); an "
        f"answer naming no label counts as wrong. SFT: same LoRA, epochs, optimizer steps, {_sft_lr(report)}batch "
        "and data as LS, loss on the answer tokens only.",
        "- Official recipe: benchmarks/official_recipe.py (bf16 weights, LoRA r 12 on q,v, lr 1e-4, batch 8, "
        "max length 64), trained for the same number of epochs as LS.",
        "- Deterministic rows (zero-shot, TF-IDF, majority tag) run once; ablations (max pooling, layer-wise "
        "unmasking) run with the first seed.",
    ]
    return lines


def _prompts(report: Report) -> str:
    """The prompts the zero-shot and SFT runs were asked with (`paper.py --generic-prompt` names no task)."""
    used = {r["key"]["recipe"]["prompt"] for r in report.records if r["key"]["method"] in ("zero-shot", "sft")}
    return " and ".join(f"`{prompt!r}`" for prompt in sorted(used or {PROMPT}))


def _sft_lr(report: Report) -> str:
    """ "lr, " where SFT trained at LS's learning rate (the sentence task's), else its own learning rate
    (`paper.py --sft-learning-rate`)."""

    def rates(chosen) -> set[float]:
        return {
            r["key"]["recipe"]["train"]["learning_rate"] for r in report.records if chosen(METHODS[r["key"]["method"]])
        }

    ls = rates(lambda method: method.kind == "ls" and method.task == "sequence")
    sft = rates(lambda method: method.kind == "sft")
    if not sft or sft <= ls:
        return "lr, "
    own = f"its own lr {', '.join(f'{lr:g}' for lr in sorted(sft))}"
    return own + (f" (LS: {', '.join(f'{lr:g}' for lr in sorted(ls))}), " if ls else ", ")


def _split_note(data: PreparedData) -> str:
    title = DATASETS[data.name].title
    note = f"{title} reports {data.reported}"
    if data.reported == "validation":
        note += " (it has no test split)"
    if data.name == "ag_news":
        note += (
            f", validation is a fixed seeded {CARVED_VALIDATION_ROWS:,} rows carved from the training file "
            "(none exists), training rows are sampled from the rest"
        )
    return note


def chart(report: Report, stats: dict[tuple[str, str], Stats], path: Path) -> None:
    """One panel per data set (metrics differ between tasks); LS rows blue, the primary one darker."""
    names = report.budget.datasets
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        data = report.data[name]
        methods = [m for m in _rows(report) if (name, m) in stats]
        values = [stats[name, m] for m in methods]
        colors = [
            "tab:blue" if m == PRIMARY_LS[data.task] else "lightsteelblue" if METHODS[m].kind == "ls" else "tab:gray"
            for m in methods
        ]
        y = range(len(methods))
        errors = [v.std for v in values] if any(v.n > 1 for v in values) else None
        ax.barh(y, [v.mean for v in values], xerr=errors, color=colors, capsize=3)
        for row, value in zip(y, values, strict=True):
            ax.text(value.mean + value.std + 0.01, row, f"{value.mean:.3f}", va="center", fontsize=7)
        ax.set_yticks(list(y), [_label(m, report) for m in methods], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.1)
        ax.set_title(f"{DATASETS[name].title}: {METRIC_TITLE[METRIC[data.task]]} ({data.reported})", fontsize=9)
    caption = f"{report.command} — {report.machine}, {report.day}; mean ± std over seeds"
    fig.suptitle(textwrap.fill(caption, width=40 * len(names)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_report(results_dir: Path, report: Report, name: str = "paper") -> str:
    """Write `name`.md and `name`.png into `results_dir`; returns the Markdown."""
    stats = aggregate(report.records)
    budget = report.budget
    measured = sum(record["seconds"] for record in report.records)
    partial = (
        [
            f"**Partial report: {len(report.records)} of the {report.planned} planned runs had finished when it "
            "was written; a cell shows the runs that exist.**",
            "",
        ]
        if len(report.records) < report.planned
        else []
    )
    lines = [
        "# Label-supervised finetuning at small scale: LS against prompting, SFT and classic baselines",
        "",
        f"`{report.command}` — {report.machine}, {report.day}; model `{report.model}`.",
        "",
        f"Budget: {budget.rows:,} training rows per data set (CoNLL-2003: sentences), a fixed seeded sample; at "
        f"most {budget.eval_rows:,} fixed rows of each evaluation split; seeds {budget.seed_list} for the main "
        f"rows. Estimated {report.estimated_seconds / 60:.0f} min on 2 CPU cores (rates fitted to "
        f"earlier runs of SmolLM2-135M); the runs below took {measured / 60:.0f} min.",
        "",
        *partial,
        "Scores on the reported split: mean ± standard deviation over seeds (test where the data set has one).",
        "",
        *tables(report, stats),
        "",
        "## Findings",
        "",
        *findings(report, stats),
        "",
        "## Protocol",
        "",
        *protocol(report),
        "",
    ]
    text = "\n".join(lines)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_dir / f"{name}.md", text)
    atomic_write_text(results_dir / f"{name}.json", json.dumps(summary(report, stats), indent=2) + "\n")
    chart(report, stats, results_dir / f"{name}.png")
    return text
