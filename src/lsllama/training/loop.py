"""The training loop: batch, forward under autocast, loss, backward, clip, step, log, evaluate, save.

One process or many (accelerate / torchrun: DDP, FSDP, DeepSpeed): every process builds the same
global batch plan and takes its shard of each batch, and the loss is a sum divided by the number of
targets in the *global* batch, so the update is the same for any number of processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from accelerate.utils import DistributedType, gather_object
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from lsllama.config import DataConfig, RunConfig
from lsllama.data import batching
from lsllama.data.batching import collate_items, shard, train_batches
from lsllama.data.dataset import Example, LabelSet, load_split, resolve_labels, split_file
from lsllama.data.encoding import IGNORE, Item, encode_examples, sequence_layout
from lsllama.errors import RunError, TrainingError, UsageError
from lsllama.evaluation.evaluate import predict_logits, score
from lsllama.heap import release_free_heap_pages
from lsllama.modeling.compilation import compile_decoder_layers, eagerly, require_inductor, worth_compiling
from lsllama.modeling.loading import check_max_length, load_tokenizer
from lsllama.modeling.model import LabelSupervisedModel, build_model
from lsllama.modeling.problems import TargetScaling, improves, sequence_loss, target_scaling
from lsllama.run import CONFIG, LABELS, LOG, RESULTS, TOKENIZER, WEIGHTS, RunFolder, atomic_write_text
from lsllama.training.checkpoint import (
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
)
from lsllama.training.distributed import describe, gather_optimizer_state, gather_weights, make_accelerator, restore

CPU_MICRO_BATCH_TOKENS = 384
"""On CPU, a training batch of more padded tokens than this (per process) runs as several
micro-batches, with the same gradients (the loss is always divided by the whole batch's targets).
The activations of the widest batches, and the heap blocks of many sizes they leave behind, set a
run's peak RSS; capping them (with `PAD_MULTIPLE` 8) is what first brought lsllama's level with the
official recipe's (`benchmarks/speed.py`), while batches of typical sentences (16 x 24 tokens) still run
whole. On GPUs a batch is split only on out-of-memory (`_halve_micro_batch`)."""

# Settings that may differ between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = {"tensorboard", "keep_checkpoints", "eval_batch_size", "trust_remote_code", "compile"}


def _loss(
    logits: torch.Tensor,
    items: list[Item],
    task: str,
    token_labels: torch.Tensor | None,
    problem: str,
    scaling: TargetScaling | None,
) -> torch.Tensor:
    """Summed loss (sequence task: its problem type's); the caller divides by the global number of targets."""
    if task == "sequence":
        return sequence_loss(logits, items, problem, scaling)
    return F.cross_entropy(logits.flatten(0, 1), token_labels.flatten(), ignore_index=IGNORE, reduction="sum")


def _n_targets(items: list[Item], task: str) -> int:
    if task == "sequence":
        return len(items)
    return sum(sum(label != IGNORE for label in it.token_labels or []) for it in items)


def _optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, head_lr: float | None = None
) -> torch.optim.Optimizer:
    """AdamW; no decay on biases and norms. With `head_lr`, the head (`score`) learns at its own rate, in
    groups of its own. A LoRA model has hundreds of small trainable tensors: the fused kernel updates them all
    in one pass on CPU and CUDA (on CPU, `foreach` still loops over the tensors one op at a time;
    `benchmarks/profile_step.py --optimizer` times both); `foreach` elsewhere."""
    head = {id(p) for p in model.score.parameters()} if head_lr is not None else set()
    groups = []
    for in_head, group_lr in ((False, lr), (True, head_lr)):
        params = [p for p in model.parameters() if p.requires_grad and (id(p) in head) == in_head]
        for decay in (True, False):
            chosen = [p for p in params if (p.dim() >= 2) == decay]
            if chosen or not in_head:
                groups.append({"params": chosen, "weight_decay": weight_decay if decay else 0.0, "lr": group_lr})
    trainable = [p for group in groups for p in group["params"]]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in trainable)
    return torch.optim.AdamW(groups, lr=lr, **({"fused": True} if fused else {"foreach": True}))


def train(cfg: RunConfig, output: str | Path, resume: bool | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a run into `output` and return its results. Re-running on a finished run returns its results;
    on a run with checkpoints it resumes (unless `resume=False`, which starts over)."""
    return fit(cfg, output, resume, progress)[0]


def fit(
    cfg: RunConfig, output: str | Path, resume: bool | None = None, progress: bool = True
) -> tuple[dict[str, Any], LabelSupervisedModel | None]:
    """`train`, also handing back the trained model (last weights; None if the run was already finished, ran
    in several processes or compiled its layers), so that a caller can predict without loading the backbone
    a second time."""
    cfg = cfg.resolved()
    task, run = cfg.task, RunFolder(Path(output))
    if run.path.exists() and not run.path.is_dir():
        raise UsageError(f"--output {run.path}: exists and is not a folder")
    if resume and not list_checkpoints(run):
        raise UsageError(f"--resume: {run.path} has no checkpoint to resume from")
    accelerator = make_accelerator()
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process

    # Everything that can fail on the user's input happens before the run folder is touched.
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
    check_max_length(cfg.model.name, cfg.data.max_length, cfg.model.trust_remote_code)
    labels = resolve_labels(cfg.data, task)
    cfg.data.labels = labels.names
    train_examples = load_split(cfg.data, "train", task, labels, cfg.data.max_train_samples)
    has_validation = split_file(cfg.data, "validation") is not None
    val_examples = load_split(cfg.data, "validation", task, labels, cfg.data.max_eval_samples) if has_validation else []
    if resume is not False and run.file(CONFIG).is_file():
        _check_same_run(run, cfg)
        if run.finished:
            return run.results(), None
    train_items, too_long = encode_examples(train_examples, task, tokenizer, cfg.data)
    truncation = truncation_summary(train_examples, train_items, too_long, task, tokenizer, cfg.data)
    val_items, _ = encode_examples(val_examples, task, tokenizer, cfg.data)
    if cfg.train.compile:
        require_inductor(device)
    torch.manual_seed(cfg.train.seed)
    problem = cfg.data.problem
    scaling = target_scaling(train_examples) if problem == "regression" else None
    model = build_model(cfg.model, task, len(labels), tokenizer, device, problem, scaling)
    pad_id = tokenizer.pad_token_id

    lengths = [it.n_tokens for it in train_items]
    plan = lambda epoch: train_batches(lengths, cfg.train.batch_size, cfg.train.seed, epoch, cfg.train.max_tokens)  # noqa: E731
    total_steps = planned_steps(plan, cfg.train.epochs, cfg.train.min_steps)
    optimizer = _optimizer(model, cfg.train.learning_rate, cfg.train.weight_decay, cfg.train.head_learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)

    saved = model.saved_names()
    checkpoints = list_checkpoints(run) if resume is not False else []
    resume_from = load_checkpoint(checkpoints[-1], saved) if checkpoints else None
    # Decided from the whole run, so that a resumed run computes as the run it continues.
    compiled = worth_compiling(cfg, model, total_steps, device, world)
    if compiled:
        compile_decoder_layers(model)
    state = resume_from.state if resume_from else TrainerState()
    if resume_from:
        if main:  # the log continues from the checkpoint: events after it will be written again
            _truncate_log(run, state.global_step)
            remove_stale_temporaries(run)
            resume_from.restore_best_weights(run.file(WEIGHTS))
    elif main:
        _start_run_folder(run, cfg, labels, tokenizer)
    accelerator.wait_for_everyone()
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped: LabelSupervisedModel = accelerator.unwrap_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]  # clipping skips the frozen backbone's
    if resume_from:  # into the prepared model: under FSDP each process keeps its shard of the full tensors
        try:
            restore(unwrapped, optimizer, resume_from.weights, resume_from.optimizer)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise RunError(f"{checkpoints[-1]}: cannot resume from this checkpoint ({exc})") from None
        scheduler.load_state_dict(resume_from.scheduler)
        resume_from.restore_rng(rank)
        del resume_from

    writer = None
    if main and cfg.train.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run.file("tensorboard")))
    metric = cfg.train.metric_for_best
    bar = tqdm(
        total=total_steps, initial=state.global_step, desc="train", disable=not (progress and main), dynamic_ncols=True
    )
    if compiled and cfg.train.compile is None:
        bar.write(f"{total_steps} steps: compiling the decoder layers first (--no-compile to run eagerly)")
    if truncation["examples"] and main and not state.global_step:
        bar.write(describe_truncation(truncation, cfg.data.long_text))
    tokens_seen, samples_seen, step_seconds = 0, 0, 0.0

    def evaluate_and_keep_best() -> dict[str, Any]:
        state.last_eval_step = state.global_step
        # Training's freed activations stay in the heap; evaluation (and the metric libraries it imports)
        # would add to them. Handed back, they are faulted in again by the next steps, cheaply.
        release_free_heap_pages()
        with eagerly():
            logits = predict_logits(
                model, task, val_examples, val_items, pad_id, cfg.train.eval_batch_size, device, rank, world
            )
        metrics = score(task, val_examples, logits, labels)
        value = metrics[metric]
        improved = improves(metric, value, state.best_metric)
        if improved:
            state.best_metric, state.best_step, state.evals_without_improvement = value, state.global_step, 0
            if "thresholds" in metrics:  # multi-label: the thresholds tuned for these weights are kept with them
                unwrapped.set_thresholds(list(metrics["thresholds"].values()))
            save_model()
        else:
            state.evals_without_improvement += 1
        if main:
            event = {"event": "eval", "step": state.global_step, "epoch": state.epoch, **_scalars(metrics)}
            run.log(event)
            if writer:
                for key, val in _scalars(metrics).items():
                    writer.add_scalar(f"validation/{key}", val, state.global_step)
            bar.write(f"step {state.global_step}: validation {metric} {value:.4f}" + (" (best)" if improved else ""))
        return metrics

    def save_model() -> None:  # collective: every process joins the gather, rank 0 writes
        weights = gather_weights(unwrapped, saved)
        if main:
            tmp = run.file(f".{WEIGHTS}.tmp")
            save_file(weights, str(tmp))
            tmp.replace(run.file(WEIGHTS))

    resumable = accelerator.distributed_type != DistributedType.DEEPSPEED  # see training/distributed.py
    if not resumable and main:
        bar.write("note: under DeepSpeed no checkpoints for resuming are written (the best weights still are)")

    def checkpoint() -> None:  # collective, like save_model
        if not resumable:
            return
        weights, optimizer_state = gather_weights(unwrapped, saved), gather_optimizer_state(unwrapped, optimizer)
        rngs = gather_object([rng_state()]) if world > 1 else [rng_state()]
        state.gradient_accumulation = accumulation
        if main:
            save_checkpoint(
                run,
                state,
                weights,
                optimizer_state,
                scheduler.state_dict(),
                cfg.train.keep_checkpoints,
                rngs,
                run.file(WEIGHTS),
            )
        accelerator.wait_for_everyone()

    def forward_backward(batch: list[int], accumulation: int) -> tuple[float, int]:
        """Gradients of the global batch's mean loss, accumulated over micro-batches of this shard."""
        batch_items = [train_items[i] for i in batch]
        n_targets = max(1, _n_targets(batch_items, task))
        step_loss, tokens = torch.zeros((), device=device), 0
        parts = max(accumulation, _parts_to_fit(batch_items, world, device))
        micro_batches = [batch[k::parts] for k in range(parts) if batch[k::parts]]
        for k, micro in enumerate(micro_batches):
            local = shard(micro, rank, world)
            weight = 1.0 if local else 0.0  # an empty shard still joins the gradient all-reduce
            items = [train_items[i] for i in (local or micro[:1])]
            if oom_above is not None and len(items) > oom_above:
                raise torch.cuda.OutOfMemoryError(f"simulated: micro-batch {len(items)} > {oom_above}")
            enc = collate_items(items, pad_id, with_token_labels=task == "token", multiple=batching.PAD_MULTIPLE)
            groups = enc["groups"].to(device) if "groups" in enc else None  # long texts read in windows
            with _micro_batch(accelerator, model, last=k == len(micro_batches) - 1):
                logits = model(enc["input_ids"].to(device), enc["attention_mask"].to(device), groups)
                token_labels = enc["token_labels"].to(device) if task == "token" else None
                loss = weight * _loss(logits, items, task, token_labels, problem, scaling) * world / n_targets
                accelerator.backward(loss)
            step_loss += loss.detach() / world
            tokens += int(enc["attention_mask"].sum()) if local else 0
        return accelerator.reduce(step_loss, "sum").item(), tokens

    accumulation = state.gradient_accumulation or cfg.train.gradient_accumulation
    # CPU tests take the out-of-memory path: LSLLAMA_SIMULATE_OOM_ABOVE=N fails any larger micro-batch.
    oom_above = int(os.environ["LSLLAMA_SIMULATE_OOM_ABOVE"]) if "LSLLAMA_SIMULATE_OOM_ABOVE" in os.environ else None
    model.train()
    while state.global_step < total_steps and not state.stopped_early:
        batches = plan(state.epoch)
        while state.batch_in_epoch < len(batches) and state.global_step < total_steps:
            # ---- one optimizer step over a global batch ----
            step_started = time.perf_counter()
            batch = batches[state.batch_in_epoch]
            try:
                step_loss, tokens = forward_backward(batch, accumulation)
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                accumulation = _halve_micro_batch(batch, accumulation, world, bar)
                continue
            if not math.isfinite(step_loss):
                kept = list_checkpoints(run)
                raise TrainingError(
                    f"loss became {step_loss} at step {state.global_step + 1} (learning rate too high?); "
                    + (f"last good checkpoint: {kept[-1]}" if kept else "no checkpoint was written yet")
                )
            if cfg.train.max_grad_norm:
                accelerator.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens_seen += tokens
            state.global_step += 1
            state.batch_in_epoch += 1
            samples_seen += len(batch)
            step_seconds += time.perf_counter() - step_started
            # ---- logging, evaluation, checkpoints ----
            if main:
                lr = scheduler.get_last_lr()[0]
                run.log(
                    {"event": "train", "step": state.global_step, "epoch": state.epoch, "loss": step_loss, "lr": lr}
                )
                if writer:
                    writer.add_scalar("train/loss", step_loss, state.global_step)
                    writer.add_scalar("train/lr", lr, state.global_step)
                bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{tokens_seen * world / step_seconds:.0f}")
                bar.update(1)
            end_of_epoch = state.batch_in_epoch == len(batches)
            eval_due = (cfg.train.eval_every and state.global_step % cfg.train.eval_every == 0) or (
                not cfg.train.eval_every and end_of_epoch
            )
            if val_examples and eval_due:
                evaluate_and_keep_best()
                patience = cfg.train.early_stopping_patience
                state.stopped_early = bool(patience) and state.evals_without_improvement >= patience
            if end_of_epoch:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            if eval_due or (cfg.train.checkpoint_every and state.global_step % cfg.train.checkpoint_every == 0):
                checkpoint()
            if state.stopped_early or end_of_epoch:
                break  # a new epoch needs its own batch plan
    bar.close()

    if val_examples and state.last_eval_step != state.global_step and not state.stopped_early:
        evaluate_and_keep_best()
        checkpoint()
    if not val_examples:
        save_model()  # no validation split: the last weights are the model
    accelerator.wait_for_everyone()
    results = {
        "best_step": state.best_step,
        "global_step": state.global_step,
        "stopped_early": state.stopped_early,
        "metric_for_best": metric,
        "validation": None,
        "train_examples": len(train_examples),
        "truncated": truncation,
        "throughput": {  # this invocation's optimizer steps only (no loading, evaluation or checkpoints)
            "seconds": step_seconds,
            "samples": samples_seen,
            "real_tokens": tokens_seen * world,
            "samples_per_second": samples_seen / step_seconds if step_seconds else None,
            "compiled": compiled,  # then the seconds include compilation
        },
        "validation_examples": len(val_examples),
        "distributed": describe(accelerator, unwrapped),
    }
    if val_examples:
        best_eval = [e for e in _read_log(run) if e.get("event") == "eval" and e["step"] == state.best_step]
        results["validation"] = best_eval[-1] if best_eval else None
    if main:
        from lsllama.evaluation.report import plot_learning_curves
        from lsllama.serving.card import write_model_card

        (run.file("report")).mkdir(exist_ok=True)
        plot_learning_curves(run.file(LOG), run.file("report") / "learning_curves.png", metric)
        atomic_write_text(run.file(RESULTS), json.dumps(results, indent=2))
        write_model_card(run.path)
        if writer:
            writer.close()
    accelerator.wait_for_everyone()
    # Sharded (FSDP, ZeRO-3) or several-process models cannot predict alone, and compiled layers would
    # compile again for inference: callers reload those (eager) from the run.
    return results, unwrapped if world == 1 and not compiled else None


@contextlib.contextmanager
def _micro_batch(accelerator, model: torch.nn.Module, last: bool):
    """Gradients accumulate over a batch's micro-batches and are synchronised at its last one. DDP learns
    it from `no_sync`; DeepSpeed's engine steps after every backward that accelerate calls with
    `sync_gradients` set, so the flag is cleared for the others (as accelerate's `accumulate` does) and
    set again afterwards, whatever happens, for the optimizer wrapper that also reads it."""
    accelerator.gradient_state._set_sync_gradients(last)
    try:
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            yield
    finally:
        accelerator.gradient_state._set_sync_gradients(True)


def planned_steps(plan, epochs: float, min_steps: int = 0) -> int:
    """Optimizer steps of the whole run: every epoch's own plan (with a token budget, epochs differ in
    length), the last epoch in part for a fractional `epochs`; at least `min_steps` (more epochs then)."""
    whole = math.floor(epochs)
    total = sum(len(plan(epoch)) for epoch in range(whole))
    if epochs > whole:
        total += math.ceil((epochs - whole) * len(plan(whole)))
    return max(1, total, min_steps)


def truncation_summary(
    examples: list[Example], items: list[Item], too_long: int, task: str, tokenizer, data_cfg: DataConfig
) -> dict[str, Any]:
    """How many training texts did not fit in `max_length` tokens (`too_long`, from `encode_examples`) and
    how many tokens the cut dropped from them; none where long texts are read whole in overlapping windows
    (the token task, and the sequence task's `long_text: windows`)."""
    summary: dict[str, Any] = {"examples": too_long, "of": len(examples), "max_length": data_cfg.max_length}
    if task == "token" or data_cfg.long_text == "windows":
        return {**summary, "windows": True}
    if not too_long:
        return {**summary, "tokens_cut_mean": 0.0, "tokens_cut_max": 0}
    layout = sequence_layout(tokenizer)
    paired = examples[0].text_pair is not None
    texts = [e.text or "" for e in examples] + ([e.text_pair or "" for e in examples] if paired else [])
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    n = len(examples)
    full = [a + b for a, b in zip(lengths[:n], lengths[n:], strict=True)] if paired else lengths
    affixes = layout.pair_prefix + layout.middle + layout.pair_suffix if paired else layout.prefix + layout.suffix
    cut = [length - (len(item.input_ids) - len(affixes)) for length, item in zip(full, items, strict=True)]
    cut = [c for c in cut if c > 0]
    return {**summary, "tokens_cut_mean": round(sum(cut) / max(1, len(cut)), 1), "tokens_cut_max": max(cut, default=0)}


def describe_truncation(summary: dict[str, Any], long_text: str) -> str:
    """The one line a run says about texts longer than `max_length`."""
    n, of, limit = summary["examples"], summary["of"], summary["max_length"]
    head = f"{n} of {of} training texts are longer than --max-length {limit}"
    if summary.get("windows"):
        return f"{head}: read in overlapping windows"
    return (
        f"{head} and were cut (--long-text {long_text}): {summary['tokens_cut_mean']:.1f} tokens cut on average, "
        f"{summary['tokens_cut_max']} at most (--long-text windows reads them whole)"
    )


def _parts_to_fit(items: list[Item], world: int, device: torch.device) -> int:
    """How many micro-batches keep each process's share of this batch within `CPU_MICRO_BATCH_TOKENS`
    padded tokens on CPU (1 elsewhere)."""
    if device.type != "cpu":
        return 1
    rows = [row for item in items for row in item.rows()]
    padded = -(-len(rows) // world) * batching.padded_length(max(len(row) for row in rows), batching.PAD_MULTIPLE)
    return max(1, -(-padded // CPU_MICRO_BATCH_TOKENS))


def _halve_micro_batch(batch: list[int], accumulation: int, world: int, bar: tqdm) -> int:
    """On CUDA out-of-memory: twice the accumulation steps, same global batch; give up at one example."""
    micro = -(-len(batch) // (accumulation * world))
    if micro <= 1:
        raise TrainingError("CUDA out of memory with a micro-batch of 1: lower --max-length or use --load-in-4bit")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    bar.write(f"CUDA out of memory: micro-batch {micro} -> {-(-micro // 2)} (gradient accumulation x2)")
    return accumulation * 2


def _check_same_run(run: RunFolder, cfg: RunConfig) -> None:
    """Resuming (or skipping) only makes sense for the same settings; anything else would mix two runs."""
    saved = run.config().to_dict()
    new = cfg.to_dict()
    changed = [
        f"{section}.{key}"
        for section in ("model", "data", "train")
        for key in new[section]
        if saved.get(section, {}).get(key) != new[section][key] and key not in RESUMABLE_CHANGES
    ]
    if saved.get("task") != new["task"]:
        changed.insert(0, "task")
    if changed:
        raise UsageError(
            f"--output {run.path} holds a run with different settings ({', '.join(changed)}); "
            "use another folder, or --no-resume to replace it"
        )


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _start_run_folder(run: RunFolder, cfg: RunConfig, labels: LabelSet, tokenizer) -> None:
    for name in (LOG, RESULTS, WEIGHTS):
        run.file(name).unlink(missing_ok=True)
    run.path.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run.file("checkpoints"), ignore_errors=True)
    shutil.rmtree(run.file("tensorboard"), ignore_errors=True)
    tokenizer.save_pretrained(run.file(TOKENIZER))
    atomic_write_text(run.file(LABELS), json.dumps(labels.names))
    atomic_write_text(run.file(CONFIG), _yaml(cfg))


def _yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _read_log(run: RunFolder) -> list[dict[str, Any]]:
    if not run.file(LOG).is_file():
        return []
    return [json.loads(line) for line in run.file(LOG).read_text().splitlines() if line.strip()]


def _truncate_log(run: RunFolder, step: int) -> None:
    kept = [e for e in _read_log(run) if e["step"] <= step]
    atomic_write_text(run.file(LOG), "".join(json.dumps(e) + "\n" for e in kept))
