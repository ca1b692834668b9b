"""The training loop: batch, forward under autocast, loss, backward, clip, step, log, evaluate, save.

One process or many (accelerate / torchrun: DDP, FSDP, DeepSpeed): every process builds the same
global batch plan and takes its shard of each batch, and the loss is a sum divided by the number of
targets in the *global* batch, so the update is the same for any number of processes.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from lsllama.config import DataConfig, RunConfig
from lsllama.data import batching
from lsllama.data.batching import collate_items, shard, train_batches
from lsllama.data.dataset import VALIDATION_ROWS, Example, LabelSet, TrainingData, resolve_labels, training_data
from lsllama.data.encoding import (
    IGNORE,
    Item,
    auto_template,
    encode_examples,
    label_words,
    sequence_layout,
    shared_prefix_ids,
)
from lsllama.errors import RunError, TrainingError, UsageError
from lsllama.evaluation.evaluate import predict_logits, split_metrics
from lsllama.evaluation.report import read_events
from lsllama.evaluation.scoring import improves
from lsllama.heap import release_free_heap_pages
from lsllama.modeling.compilation import compile_decoder_layers, eagerly, require_inductor, worth_compiling
from lsllama.modeling.loading import check_max_length, load_tokenizer
from lsllama.modeling.model import LabelSupervisedModel, build_model
from lsllama.modeling.problems import TargetScaling, sequence_loss, target_scaling
from lsllama.run_folder import (
    CHECKPOINTS,
    CONFIG,
    LABELS,
    LOG,
    MODEL_WEIGHTS,
    RESULTS,
    TOKENIZER,
    RunFolder,
    atomic_write_text,
)
from lsllama.training.checkpoint import (
    Checkpoint,
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
)
from lsllama.training.distributed import describe, gather_optimizer_state, gather_weights, make_accelerator, restore
from lsllama.tuning import CPU_MICRO_BATCH_TOKENS

# Settings that may differ between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = {
    "tensorboard",
    "keep_checkpoints",
    "keep_checkpoints_after",
    "eval_batch_size",
    "trust_remote_code",
    "compile",
}


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


@dataclass
class TrainedRun:
    """What training hands back: the run's results (results.json's content) and the trained model."""

    results: dict[str, Any]
    model: LabelSupervisedModel | None
    """The last weights, so that a caller can predict without loading the backbone a second time; None if
    the run was already finished, ran in several processes or compiled its layers (reload the run)."""


def train_run(cfg: RunConfig, output: str | Path, resume: bool | None = None, progress: bool = True) -> TrainedRun:
    """Train a run into `output`. Re-running on a finished run returns its results; on a run with
    checkpoints it resumes (unless `resume=False`, which starts over)."""
    cfg = cfg.resolved()
    run = RunFolder(Path(output))
    if run.path.exists() and not run.path.is_dir():
        raise UsageError(f"--output {run.path}: exists and is not a folder")
    if resume and not list_checkpoints(run):
        raise UsageError(f"--resume: {run.path} has no checkpoint to resume from")
    accelerator = make_accelerator()
    inputs = prepare_inputs(cfg, run, resume)
    if inputs is None:  # finished before, with these settings
        return TrainedRun(run.results(), None)
    trainer = Trainer.start(cfg, run, inputs, accelerator, resume, progress)
    trainer.run_steps()
    results = trainer.finish()
    return TrainedRun(results, trainer.model_for_inference())


@dataclass
class Inputs:
    """A run's data, read and tokenized before anything is written: bad input fails with nothing half-done."""

    tokenizer: PreTrainedTokenizerBase
    labels: LabelSet
    data: TrainingData
    """The training and validation examples, and which training rows were held out for validation."""
    train_items: list[Item]
    val_items: list[Item]
    truncation: dict[str, Any]
    scaling: TargetScaling | None

    @property
    def train_examples(self) -> list[Example]:
        return self.data.train

    @property
    def val_examples(self) -> list[Example]:
        return self.data.validation

    @property
    def lengths(self) -> list[int]:
        return [it.n_tokens for it in self.train_items]


def prepare_inputs(cfg: RunConfig, run: RunFolder, resume: bool | None) -> Inputs | None:
    """Tokenizer, labels and encoded examples; None if `run` already holds this run, finished."""
    task = cfg.task
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.trust_remote_code)
    check_max_length(cfg.model.name, cfg.data.max_length, cfg.model.trust_remote_code)
    labels = resolve_labels(cfg.data, task)
    cfg.data.labels = labels.names
    cfg.data.template, cfg.data.question = auto_template(cfg.data, task, tokenizer), None  # asked in the template
    data = training_data(cfg.data, task, labels)
    train_examples, val_examples = data.train, data.validation
    if resume is not False and run.file(CONFIG).is_file():
        _check_same_run(run, cfg)
        if run.finished:
            return None
    train_items, too_long = encode_examples(train_examples, task, tokenizer, cfg.data)
    val_items, _ = encode_examples(val_examples, task, tokenizer, cfg.data)
    truncation = truncation_summary(train_examples, train_items, too_long, task, tokenizer, cfg.data)
    scaling = target_scaling(train_examples) if cfg.data.problem == "regression" else None
    return Inputs(tokenizer, labels, data, train_items, val_items, truncation, scaling)


@dataclass
class Throughput:
    """This invocation's optimizer steps only (no loading, evaluation or checkpoints)."""

    seconds: float = 0.0
    samples: int = 0
    tokens: int = 0
    """Real (unpadded) tokens this process trained on."""


@dataclass
class Trainer:
    """What the steps of one run share: the model (prepared for its processes), optimizer, schedule, where
    training is (`state`), and the run folder, progress bar and TensorBoard writer it reports to."""

    cfg: RunConfig
    run: RunFolder
    inputs: Inputs
    accelerator: Accelerator
    model: torch.nn.Module
    """Prepared by accelerate (DDP, FSDP or DeepSpeed wrapper; the model itself in one process)."""
    unwrapped: LabelSupervisedModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    state: TrainerState
    saved: set[str]
    """Names of the tensors a run keeps (trainable weights, decision buffers)."""
    total_steps: int
    epochs_per_evaluation: int
    """With `eval_every: 0`, the end of every this many epochs is evaluated (`epochs_per_evaluation`)."""
    compiled: bool
    micro_batches: int
    """Micro-batches per batch at least (more on CPU for wide batches); doubled after out-of-memory."""
    bar: tqdm
    writer: Any = None
    throughput: Throughput = field(default_factory=Throughput)

    @classmethod
    def start(
        cls,
        cfg: RunConfig,
        run: RunFolder,
        inputs: Inputs,
        accelerator: Accelerator,
        resume: bool | None,
        progress: bool,
    ) -> Trainer:
        """Build the model, optimizer and schedule, resume from the last checkpoint or start the run folder."""
        device, world = accelerator.device, accelerator.num_processes
        if cfg.train.compile:
            require_inductor(device)
        torch.manual_seed(cfg.train.seed)
        model = build_model(
            cfg.model,
            cfg.task,
            len(inputs.labels),
            inputs.tokenizer,
            device,
            cfg.data.problem,
            inputs.scaling,
            label_words(cfg.data),
        )
        model.share_prefix(shared_prefix_ids(cfg.data, cfg.task, inputs.tokenizer))
        plan = partial(_plan, cfg, inputs)
        total_steps = planned_steps(plan, cfg.train.epochs, cfg.train.min_steps)
        train = cfg.train
        optimizer = _optimizer(model, train.learning_rate, train.weight_decay, train.head_learning_rate)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(train.warmup_ratio * total_steps), total_steps)
        saved = model.saved_names()
        checkpoints = list_checkpoints(run) if resume is not False else []
        checkpoint = load_checkpoint(checkpoints[-1], saved) if checkpoints else None
        # Decided from the whole run, so that a resumed run computes as the run it continues.
        compiled = worth_compiling(cfg, model, total_steps, device, world)
        if compiled:
            compile_decoder_layers(model)
        state = checkpoint.state if checkpoint else TrainerState()
        if accelerator.is_main_process:
            _open_run_folder(run, cfg, inputs, checkpoint)
        accelerator.wait_for_everyone()
        model, optimizer = accelerator.prepare(model, optimizer)
        unwrapped = accelerator.unwrap_model(model)
        if checkpoint:
            _restore(checkpoint, unwrapped, optimizer, scheduler, accelerator.process_index)
        show = progress and accelerator.is_main_process
        bar = tqdm(total=total_steps, initial=state.global_step, desc="train", disable=not show, dynamic_ncols=True)
        micro_batches = state.micro_batches or train.micro_batches
        trainer = cls(
            cfg,
            run,
            inputs,
            accelerator,
            model,
            unwrapped,
            optimizer,
            scheduler,
            state,
            saved,
            total_steps,
            epochs_per_evaluation(plan, cfg.train.epochs, total_steps),
            compiled,
            micro_batches,
            bar,
            _tensorboard(run, cfg) if accelerator.is_main_process else None,
        )
        trainer.announce()
        return trainer

    # ---- what the steps read ----
    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def resumable(self) -> bool:
        """DeepSpeed keeps optimizer state in its own partitions, which no checkpoint here gathers."""
        return self.accelerator.distributed_type != DistributedType.DEEPSPEED

    def plan(self, epoch: int) -> list[list[int]]:
        return _plan(self.cfg, self.inputs, epoch)

    def announce(self) -> None:
        """What a user should know before the first step."""
        if not self.main:
            return
        if self.compiled and self.cfg.train.compile is None:
            self.bar.write(
                f"{self.total_steps} steps: compiling the decoder layers first (--no-compile to run eagerly)"
            )
        if self.inputs.truncation["examples"] and not self.state.global_step:
            self.bar.write(describe_truncation(self.inputs.truncation, self.cfg.data.long_text))
        if not self.resumable:
            self.bar.write("note: under DeepSpeed no checkpoints for resuming are written (the best weights still are)")

    # ---- the loop ----
    def run_steps(self) -> None:
        """Optimizer steps over each epoch's batch plan until the run's total; validation at each epoch's end
        (or every `eval_every` steps), checkpoints after it, early stopping when patience runs out."""
        state, train, validation = self.state, self.cfg.train, bool(self.inputs.val_examples)
        if validation and state.global_step == 0 and state.last_eval_step != 0 and self.unwrapped.head_from_words:
            self.evaluate_and_keep_best()  # step 0: the zero-shot classifier the head starts as, kept if never beaten
        self.model.train()
        while state.global_step < self.total_steps and not state.stopped_early:
            batches = self.plan(state.epoch)
            while state.batch_in_epoch < len(batches) and state.global_step < self.total_steps:
                loss = self.train_step(batches[state.batch_in_epoch])
                if loss is None:
                    continue  # out of memory: the same batch again, in smaller micro-batches
                state.global_step += 1
                state.batch_in_epoch += 1
                self.log_step(loss)
                end_of_epoch = state.batch_in_epoch == len(batches)
                if train.eval_every:
                    eval_due = state.global_step % train.eval_every == 0
                else:
                    eval_due = end_of_epoch and (state.epoch + 1) % self.epochs_per_evaluation == 0
                if validation and eval_due:
                    self.evaluate_and_keep_best()
                    state.stopped_early = bool(train.early_stopping_patience) and (
                        state.evals_without_improvement >= train.early_stopping_patience
                    )
                if end_of_epoch:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                if eval_due or (train.checkpoint_every and state.global_step % train.checkpoint_every == 0):
                    self.checkpoint()
                if state.stopped_early or end_of_epoch:
                    break  # a new epoch needs its own batch plan
        self.bar.close()
        if validation and state.last_eval_step != state.global_step and not state.stopped_early:
            self.evaluate_and_keep_best()
            self.checkpoint()
        if not validation:
            self.save_best_weights()  # no validation split: the last weights are the model

    def train_step(self, batch: list[int]) -> float | None:
        """One optimizer step over a global batch: its mean loss, or None after an out-of-memory error (then
        the batch runs again in twice the micro-batches)."""
        started = time.perf_counter()
        try:
            loss, tokens = self.forward_backward(batch)
        except torch.cuda.OutOfMemoryError:
            self.optimizer.zero_grad(set_to_none=True)
            self.micro_batches = _halve_micro_batch(batch, self.micro_batches, self.world, self.bar)
            return None
        if not math.isfinite(loss):
            kept = list_checkpoints(self.run)
            raise TrainingError(
                f"loss became {loss} at step {self.state.global_step + 1} (learning rate too high?); "
                + (f"last good checkpoint: {kept[-1]}" if kept else "no checkpoint was written yet")
            )
        if self.cfg.train.max_grad_norm:
            trainable = [p for p in self.model.parameters() if p.requires_grad]  # not the frozen backbone's
            self.accelerator.clip_grad_norm_(trainable, self.cfg.train.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.throughput.seconds += time.perf_counter() - started
        self.throughput.samples += len(batch)
        self.throughput.tokens += tokens
        return loss

    def forward_backward(self, batch: list[int]) -> tuple[float, int]:
        """Gradients of the global batch's mean loss, accumulated over micro-batches of this shard; the loss
        and this process's real tokens."""
        items, world = self.inputs.train_items, self.world
        batch_items = [items[i] for i in batch]
        n_targets = max(1, _n_targets(batch_items, self.cfg.task))
        parts = max(self.micro_batches, _parts_to_fit(batch_items, world, self.device))
        micro_batches = [batch[k::parts] for k in range(parts) if batch[k::parts]]
        step_loss, tokens = torch.zeros((), device=self.device), 0
        for k, micro in enumerate(micro_batches):
            local = shard(micro, self.accelerator.process_index, world)
            weight = 1.0 if local else 0.0  # an empty shard still joins the gradient all-reduce
            with _micro_batch(self.accelerator, self.model, last=k == len(micro_batches) - 1):
                loss, real = run_micro_batch(self, [items[i] for i in (local or micro[:1])], weight, n_targets)
            step_loss += loss / world
            tokens += real if local else 0
        return self.accelerator.reduce(step_loss, "sum").item(), tokens

    def log_step(self, loss: float) -> None:
        if not self.main:
            return
        step, lr = self.state.global_step, self.scheduler.get_last_lr()[0]
        event = {"event": "train", "step": step, "epoch": self.state.epoch, "loss": loss, "lr": lr}
        self.run.log({**event, "wall_time": time.time()})
        if self.writer:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
        tokens_per_second = self.throughput.tokens * self.world / self.throughput.seconds
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_second:.0f}")
        self.bar.update(1)

    # ---- evaluation, weights, checkpoints ----
    def evaluate_and_keep_best(self) -> dict[str, Any]:
        """Score the validation split; better than the best so far: these weights become the run's model."""
        state, metric, inputs = self.state, self.cfg.train.metric_for_best, self.inputs
        state.last_eval_step = state.global_step
        # Training's freed activations stay in the heap; evaluation (and the metric libraries it imports)
        # would add to them. Handed back, they are faulted in again by the next steps, cheaply.
        release_free_heap_pages()
        with eagerly():
            logits = predict_logits(
                self.model,
                self.cfg.task,
                inputs.val_examples,
                inputs.val_items,
                inputs.tokenizer.pad_token_id,
                self.cfg.train.eval_batch_size,
                self.device,
                self.accelerator.process_index,
                self.world,
            )
        metrics = split_metrics(self.cfg.task, inputs.val_examples, logits, inputs.labels)
        value = metrics[metric]
        improved = improves(metric, value, state.best_metric)
        if improved:
            state.best_metric, state.best_step, state.evals_without_improvement = value, state.global_step, 0
            if "thresholds" in metrics:  # multi-label: the thresholds tuned for these weights are kept with them
                self.unwrapped.set_thresholds(list(metrics["thresholds"].values()))
            self.save_best_weights()
        else:
            state.evals_without_improvement += 1
        if self.main:
            event = {"event": "eval", "step": state.global_step, "epoch": state.epoch, **_scalars(metrics)}
            self.run.log({**event, "wall_time": time.time()})  # Unix seconds, as TensorBoard's: time-to-accuracy
            if self.writer:
                for key, val in _scalars(metrics).items():
                    self.writer.add_scalar(f"validation/{key}", val, state.global_step)
            best = " (best)" if improved else ""
            self.bar.write(f"step {state.global_step}: validation {metric} {value:.4f}{best}")
        return metrics

    def save_best_weights(self) -> None:
        """Collective: every process joins the gather, rank 0 writes."""
        weights = gather_weights(self.unwrapped, self.saved)
        if self.main:
            tmp = self.run.file(f".{MODEL_WEIGHTS}.tmp")
            save_file(weights, str(tmp))
            tmp.replace(self.run.file(MODEL_WEIGHTS))

    def checkpoint(self) -> None:
        """Collective, like `save_best_weights`: everything a resumed run needs to go on exactly."""
        if not self.resumable:
            return
        weights = gather_weights(self.unwrapped, self.saved)
        optimizer_state = gather_optimizer_state(self.unwrapped, self.optimizer)
        rngs = gather_object([rng_state()]) if self.world > 1 else [rng_state()]
        self.state.micro_batches = self.micro_batches
        if self.main:
            save_checkpoint(
                self.run,
                self.state,
                weights,
                optimizer_state,
                self.scheduler.state_dict(),
                self.cfg.train.keep_checkpoints,
                rngs,
                self.run.file(MODEL_WEIGHTS),
            )
        self.accelerator.wait_for_everyone()

    # ---- the end ----
    def finish(self) -> dict[str, Any]:
        """results.json (written last: it marks the run finished), learning curves and the model card; then
        the checkpoints go (`keep_checkpoints_after` keeps them): a finished run is not resumed."""
        self.accelerator.wait_for_everyone()
        results = self.results()
        if self.main:
            from lsllama.evaluation.report import plot_learning_curves
            from lsllama.training.card import write_model_card

            (self.run.file("report")).mkdir(exist_ok=True)
            curves = self.run.file("report") / "learning_curves.png"
            plot_learning_curves(self.run.file(LOG), curves, self.cfg.train.metric_for_best)
            atomic_write_text(self.run.file(RESULTS), json.dumps(results, indent=2))
            write_model_card(self.run.path)
            if self.writer:
                self.writer.close()
            if not self.cfg.train.keep_checkpoints_after:
                shutil.rmtree(self.run.file(CHECKPOINTS), ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return results

    def results(self) -> dict[str, Any]:
        state, inputs, seconds = self.state, self.inputs, self.throughput.seconds
        validation = None
        if inputs.val_examples:
            best = [
                e for e in read_events(self.run.file(LOG)) if e.get("event") == "eval" and e["step"] == state.best_step
            ]
            validation = best[-1] if best else None
        return {
            "best_step": state.best_step,
            "global_step": state.global_step,
            "stopped_early": state.stopped_early,
            "metric_for_best": self.cfg.train.metric_for_best,
            "validation": validation,
            "train_examples": len(inputs.train_examples),
            "truncated": inputs.truncation,
            "throughput": {
                "seconds": seconds,
                "samples": self.throughput.samples,
                "real_tokens": self.throughput.tokens * self.world,
                "samples_per_second": self.throughput.samples / seconds if seconds else None,
                "compiled": self.compiled,  # then the seconds include compilation
            },
            "validation_examples": len(inputs.val_examples),
            "distributed": describe(self.accelerator, self.unwrapped),
        }

    def model_for_inference(self) -> LabelSupervisedModel | None:
        """Sharded (FSDP, ZeRO-3) or several-process models cannot predict alone, and compiled layers would
        compile again for inference: callers reload those (eager) from the run."""
        return self.unwrapped if self.world == 1 and not self.compiled else None


def run_micro_batch(trainer: Trainer, items: list[Item], weight: float, n_targets: int) -> tuple[torch.Tensor, int]:
    """Forward and backward of one micro-batch: its summed loss scaled to the global batch's mean (the
    all-reduce averages over processes, hence `* world`), and its real tokens. `weight` 0 (an empty shard)
    still runs, to join the all-reduce. Tests replace this function to simulate out-of-memory errors."""
    task, device = trainer.cfg.task, trainer.device
    enc = collate_items(
        items, trainer.inputs.tokenizer.pad_token_id, with_token_labels=task == "token", multiple=batching.PAD_MULTIPLE
    )
    groups = enc["groups"].to(device) if "groups" in enc else None  # long texts read in windows
    logits = trainer.model(enc["input_ids"].to(device), enc["attention_mask"].to(device), groups)
    token_labels = enc["token_labels"].to(device) if task == "token" else None
    summed = _loss(logits, items, task, token_labels, trainer.cfg.data.problem, trainer.inputs.scaling)
    loss = weight * summed * trainer.world / n_targets
    trainer.accelerator.backward(loss)
    return loss.detach(), int(enc["attention_mask"].sum())


def _plan(cfg: RunConfig, inputs: Inputs, epoch: int) -> list[list[int]]:
    """Epoch `epoch`'s batches (indices into the training items), the same in every process."""
    return train_batches(inputs.lengths, cfg.train.batch_size, cfg.train.seed, epoch, cfg.train.max_tokens)


def _open_run_folder(run: RunFolder, cfg: RunConfig, inputs: Inputs, checkpoint: Checkpoint | None) -> None:
    """Rank 0: continue the run folder from `checkpoint`, or start it afresh."""
    if checkpoint:  # the log continues from the checkpoint: events after it will be written again
        _truncate_log(run, checkpoint.state.global_step)
        remove_stale_temporaries(run)
        checkpoint.restore_best_weights(run.file(MODEL_WEIGHTS))
    else:
        _start_run_folder(run, cfg, inputs.labels, inputs.tokenizer)
        inputs.data.write_held_out(run.file(VALIDATION_ROWS))


def _restore(
    checkpoint: Checkpoint,
    model: LabelSupervisedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    rank: int,
) -> None:
    """Into the prepared model: under FSDP each process keeps its shard of the full tensors."""
    try:
        restore(model, optimizer, checkpoint.weights, checkpoint.optimizer)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise RunError(f"{checkpoint.path}: cannot resume from this checkpoint ({exc})") from None
    scheduler.load_state_dict(checkpoint.scheduler)
    checkpoint.restore_rng(rank)


def _tensorboard(run: RunFolder, cfg: RunConfig) -> Any:
    if not cfg.train.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run.file("tensorboard")))


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


FLOOR_EPOCH_EVALUATIONS = 8
"""At most this many end-of-epoch evaluations where the step floor (`train.min_steps`) reads a small set for
more epochs than asked. 100 rows are 7 steps of 16: 15 epochs to the 100-step floor, and evaluating the
whole validation split after each took about as long as the training (benchmarks/results/learning_curve.md).
Sets of 200 rows or more reach the floor within 8 epochs and are evaluated after every one."""


def epochs_per_evaluation(plan, epochs: float, total_steps: int) -> int:
    """`eval_every: 0` evaluates at the end of every epoch the user asked for; where the floor adds epochs,
    at the end of every k-th, k chosen for at most `FLOOR_EPOCH_EVALUATIONS` (the last step is always)."""
    if total_steps <= planned_steps(plan, epochs):
        return 1
    epochs_read, steps = 0, 0
    while steps < total_steps:
        steps, epochs_read = steps + max(1, len(plan(epochs_read))), epochs_read + 1
    return math.ceil(epochs_read / FLOOR_EPOCH_EVALUATIONS)


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


def _halve_micro_batch(batch: list[int], micro_batches: int, world: int, bar: tqdm) -> int:
    """On CUDA out-of-memory: twice the micro-batches, same global batch; give up at one example."""
    micro = -(-len(batch) // (micro_batches * world))
    if micro <= 1:
        raise TrainingError("CUDA out of memory with a micro-batch of 1: lower --max-length or use --load-in-4bit")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    bar.write(f"CUDA out of memory: micro-batch {micro} -> {-(-micro // 2)} (micro-batches x2)")
    return micro_batches * 2


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
    for name in (LOG, RESULTS, MODEL_WEIGHTS):
        run.file(name).unlink(missing_ok=True)
    run.path.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run.file("checkpoints"), ignore_errors=True)
    shutil.rmtree(run.file("tensorboard"), ignore_errors=True)
    tokenizer.save_pretrained(run.file(TOKENIZER))
    atomic_write_text(run.file(LABELS), json.dumps(labels.names))
    atomic_write_text(run.file(CONFIG), cfg.to_yaml())


def _truncate_log(run: RunFolder, step: int) -> None:
    kept = [e for e in read_events(run.file(LOG)) if e["step"] <= step]
    atomic_write_text(run.file(LOG), "".join(json.dumps(e) + "\n" for e in kept))
