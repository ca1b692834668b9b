"""Generative baselines: zero-shot prompting and instruction SFT of the same instruct model.

The paper argues that a label head on the hidden states beats making the LLM *generate* the label.
These baselines give the generative side a fair shot: the same model with its own chat template, the
text cut to the same number of tokens LS sees, and for SFT the same LoRA size, data, epochs, optimizer
steps (lsllama's step floor included) and optimiser recipe as lsllama's default. Answers come from
greedy decoding and are read back to a label by name; an answer that names no label counts as wrong, as
it would in use.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from peft import get_peft_model
from tqdm import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from benchmarks.baselines import LabelledTexts
from lsllama.config import ModelConfig, TrainConfig
from lsllama.data.batching import collate, eval_batches, train_batches
from lsllama.data.encoding import IGNORE
from lsllama.evaluation.metrics import classification_metrics
from lsllama.modeling.loading import load_tokenizer, model_source
from lsllama.modeling.model import lora_config, resolve_dtype
from lsllama.training.loop import planned_steps

PROMPT = "What is the {task}? Possible labels: {labels}. Answer with the label only.\n\nText: {text}"
"""The paper's style of prompt: name the task, list the labels, ask for the label only."""
GENERIC_PROMPT = "Possible labels: {labels}. Answer with the label only.\n\nText: {text}"
"""The same without the task's words (a `PromptTask` with no description): what lsllama's default question
(`Possible labels: ...`) tells label supervision, no more."""
GENERATION_BATCH = 32
EXTRA_NEW_TOKENS = 3
"""Room beyond the longest label for a leading space or punctuation, so a valid answer is never cut."""
ANSWERS_KEPT = 8
"""Raw answers stored per run, so that a low score can be told apart from a parsing problem."""


@dataclass
class PromptTask:
    """What the prompt says: the task in a few words, the label names, and the text length LS sees."""

    description: str
    """E.g. "sentiment of the movie review below"; empty: the prompt names only the labels (`GENERIC_PROMPT`)."""
    labels: list[str]
    max_length: int


def parse_label(answer: str, labels: list[str]) -> int | None:
    """The label the answer names first, case-insensitively, as a whole word; on a tie the longest name,
    so that `very negative` is not read as `negative`. None when no label is named."""
    found = []
    for index, name in enumerate(labels):
        match = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", answer, flags=re.IGNORECASE)
        if match:
            found.append((match.start(), -len(name), index))
    return min(found)[2] if found else None


def _messages(tokenizer: PreTrainedTokenizerBase, task: PromptTask, text: str) -> list[dict[str, str]]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > task.max_length:
        text = tokenizer.decode(ids[: task.max_length])
    prompt = PROMPT if task.description else GENERIC_PROMPT
    content = prompt.format(task=task.description, labels=", ".join(task.labels), text=text)
    return [{"role": "user", "content": content}]


def prompt_ids(tokenizer: PreTrainedTokenizerBase, task: PromptTask, text: str) -> list[int]:
    """The chat-formatted prompt up to the assistant's turn, as the model sees it when it answers."""
    prompt = tokenizer.apply_chat_template(_messages(tokenizer, task, text), tokenize=False, add_generation_prompt=True)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def answer_ids(tokenizer: PreTrainedTokenizerBase, task: PromptTask, text: str, label: str) -> list[int]:
    """The assistant turn that answers `label`, end-of-turn marker included (so SFT learns to stop),
    tokenized on its own as it is generated after the prompt."""
    messages = _messages(tokenizer, task, text)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": label}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not extend the prompt with the answer; cannot build SFT targets")
    return tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]


def max_new_tokens(tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> int:
    return max(len(tokenizer(name, add_special_tokens=False)["input_ids"]) for name in labels) + EXTRA_NEW_TOKENS


def load_causal_lm(
    model: str, precision: str, device: torch.device
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.dtype]:
    """The model with its LM head, frozen weights in the dtype lsllama would use for its backbone."""
    tokenizer = load_tokenizer(model)
    dtype = resolve_dtype(precision, device)
    lm = AutoModelForCausalLM.from_pretrained(model_source(model), dtype=dtype).to(device)
    lm.config.pad_token_id = tokenizer.pad_token_id
    lm.requires_grad_(False)
    return lm, tokenizer, dtype


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    new_tokens: int,
    device: torch.device,
    dtype: torch.dtype,
) -> list[str]:
    """Greedy answers, in batches of similar length, left-padded so every prompt ends where decoding starts."""
    model.eval()
    answers = [""] * len(prompts)
    pad = tokenizer.pad_token_id
    batches = eval_batches([len(p) for p in prompts], GENERATION_BATCH)
    for batch in tqdm(batches, desc="generate", dynamic_ncols=True):
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            input_ids[row, width - len(prompts[index]) :] = torch.tensor(prompts[index])
            attention_mask[row, width - len(prompts[index]) :] = 1
        with _autocast(device, dtype):
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        for row, index in enumerate(batch):
            answers[index] = tokenizer.decode(output[row, width:], skip_special_tokens=True)
    return answers


def score_answers(answers: list[str], gold: list[int], labels: list[str]) -> dict[str, Any]:
    predicted = [parse_label(answer, labels) for answer in answers]
    metrics = classification_metrics(gold, [-1 if p is None else p for p in predicted], labels)
    metrics["unparseable"] = sum(p is None for p in predicted)
    metrics["answers"] = [{"gold": labels[g], "answer": a} for g, a in zip(gold[:ANSWERS_KEPT], answers, strict=False)]
    return metrics


def zero_shot(
    model: str, task: PromptTask, evaluation: LabelledTexts, precision: str, device: torch.device
) -> dict[str, Any]:
    lm, tokenizer, dtype = load_causal_lm(model, precision, device)
    prompts = [prompt_ids(tokenizer, task, text) for text in evaluation.texts]
    answers = generate_answers(lm, tokenizer, prompts, max_new_tokens(tokenizer, task.labels), device, dtype)
    return score_answers(answers, evaluation.labels, task.labels)


def instruction_sft(
    model: str,
    task: PromptTask,
    train: LabelledTexts,
    evaluation: LabelledTexts,
    lora: ModelConfig,
    recipe: TrainConfig,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """LoRA SFT on prompt + answer with the loss on the answer tokens only, then scored like zero-shot.

    Batching (length-grouped plan), optimiser (AdamW, no decay on 1-D weights), warmup + linear decay,
    clipping and precision (frozen weights bf16 where fast, LoRA fp32, autocast) follow lsllama's loop,
    so the two approaches differ in what they are trained to output, not in how they are trained.
    """
    torch.manual_seed(seed)
    lm, tokenizer, dtype = load_causal_lm(model, lora.precision, device)
    lm = get_peft_model(lm, lora_config(lora), autocast_adapter_dtype=True)
    trainable = [p for p in lm.parameters() if p.requires_grad]
    for param in trainable:
        param.data = param.data.float()
    sequences, targets = [], []
    for text, label in zip(train.texts, train.labels, strict=True):
        prompt = prompt_ids(tokenizer, task, text)
        answer = answer_ids(tokenizer, task, text, task.labels[label])
        sequences.append(prompt + answer)
        targets.append([IGNORE] * len(prompt) + answer)

    lengths = [len(s) for s in sequences]
    # As many optimizer steps as an lsllama run of these rows: its epochs, at least `min_steps`.
    total_steps = planned_steps(
        lambda epoch: train_batches(lengths, recipe.batch_size, seed, epoch), recipe.epochs, recipe.min_steps
    )
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": recipe.weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=recipe.learning_rate, foreach=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * total_steps), total_steps)
    base = lm.get_base_model()
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    lm.train()
    step, epoch = 0, 0
    bar = tqdm(total=total_steps, desc="sft", dynamic_ncols=True)
    while step < total_steps:
        for batch in train_batches(lengths, recipe.batch_size, seed, epoch):
            inputs = collate([sequences[i] for i in batch], tokenizer.pad_token_id, [targets[i] for i in batch])
            inputs = {k: v.to(device) for k, v in inputs.items()}
            next_tokens = inputs["token_labels"][:, 1:]
            keep = next_tokens != IGNORE
            with _autocast(device, dtype):
                hidden = decoder(
                    input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
                ).last_hidden_state
                # The vocabulary projection only where there is a target: most positions are prompt.
                logits = head(hidden[:, :-1][keep])
            loss = F.cross_entropy(logits.float(), next_tokens[keep])
            if not torch.isfinite(loss):
                raise RuntimeError(f"SFT loss became {loss.item()} at step {step}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, recipe.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step >= total_steps:
                break
        epoch += 1
    bar.close()

    prompts = [prompt_ids(tokenizer, task, text) for text in evaluation.texts]
    answers = generate_answers(lm, tokenizer, prompts, max_new_tokens(tokenizer, task.labels), device, dtype)
    return {**score_answers(answers, evaluation.labels, task.labels), "train_steps": total_steps}
