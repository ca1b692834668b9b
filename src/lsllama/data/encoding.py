"""Examples -> token ids, and token positions <-> words.

The token task joins words with single spaces, tokenizes the sentence once, and maps sub-tokens back
to words through character offsets. That works the same for tokenizers that mark a leading space
(GPT-2 / SmolLM BPE), that prepend a BOS token (Llama, Gemma) or that do neither, and it gives the
character offsets that raw-text prediction reports. Sentences longer than the window are split
into overlapping windows of whole words; every word is predicted from exactly one window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from lsllama.config import DataConfig
from lsllama.data.dataset import Example
from lsllama.data.windows import assign_words, plan_windows

IGNORE = -100


@dataclass
class Item:
    """One model input: a whole text, or one window of a sentence."""

    input_ids: list[int]
    example: int
    label: int | None = None
    token_labels: list[int] | None = None
    word_positions: dict[int, int] = field(default_factory=dict)
    """Token task: word index -> position in `input_ids` of the words this window predicts."""


@dataclass
class Alignment:
    """A tokenized sentence: ids without special tokens, and which word each sub-token belongs to."""

    ids: list[int]
    word_of_token: list[int]
    first_token: list[int]
    char_spans: list[tuple[int, int]]


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after any text (e.g. BOS), found by asking it."""
    with_special = tokenizer("a b", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return with_special[:start], with_special[start + len(plain) :]
    return [], []


def encode_sequences(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[list[Item], int]:
    """Returns the items and how many texts were truncated to `max_length`."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples and examples[0].text_pair is not None else None
    full = tokenizer(texts, pairs, add_special_tokens=True, truncation=False)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    if truncated:
        full = tokenizer(texts, pairs, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    items = [
        Item(input_ids=ids, example=i, label=e.label) for i, (ids, e) in enumerate(zip(full, examples, strict=True))
    ]
    return items, truncated


def align_words(words: list[str], tokenizer: PreTrainedTokenizerBase) -> Alignment:
    text = " ".join(words)
    char_to_word = []
    spans = []
    for index, word in enumerate(words):
        if index:
            char_to_word.append(-1)
        spans.append((len(char_to_word), len(char_to_word) + len(word)))
        char_to_word.extend([index] * len(word))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    first_token = [-1] * len(words)
    word_of_token = []
    for position, (start, end) in enumerate(encoded["offset_mapping"]):
        covered = [w for w in char_to_word[start:end] if w >= 0]
        word = covered[0] if covered else (word_of_token[-1] if word_of_token else 0)
        word_of_token.append(word)
        for w in dict.fromkeys(covered):
            if first_token[w] < 0:
                first_token[w] = position
    # A word no token overlaps (rare normalisation quirks) borrows the previous word's token.
    for w in range(len(words)):
        if first_token[w] < 0:
            first_token[w] = first_token[w - 1] if w else 0
    return Alignment(list(encoded["input_ids"]), word_of_token, first_token, spans)


def encode_sentences(
    examples: list[Example],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    stride: int | None = None,
    label_all_subtokens: bool = False,
) -> tuple[list[Item], int]:
    """Returns the items (one per window) and how many sentences needed more than one window.

    Training labels every word a window holds; `word_positions` keeps only the words this window
    predicts, so that at evaluation each word is scored exactly once.
    """
    prefix, suffix = special_affixes(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    items: list[Item] = []
    windowed = 0
    for index, example in enumerate(examples):
        words = example.words or []
        aligned = align_words(words, tokenizer)
        bounds = [*aligned.first_token[1:], len(aligned.ids)]
        lengths = [max(1, end - start) for start, end in zip(aligned.first_token, bounds, strict=True)]
        windows = plan_windows(lengths, budget, stride)
        owner = assign_words(windows, lengths)
        windowed += len(windows) > 1
        for w, (first_word, end_word) in enumerate(windows):
            start = aligned.first_token[first_word]
            stop = aligned.first_token[end_word] if end_word < len(words) else len(aligned.ids)
            stop = min(stop, start + budget)
            ids = prefix + aligned.ids[start:stop] + suffix
            offset = len(prefix) - start
            positions = {
                word: aligned.first_token[word] + offset
                for word in range(first_word, end_word)
                if aligned.first_token[word] < stop
            }
            item = Item(input_ids=ids, example=index)
            item.word_positions = {word: pos for word, pos in positions.items() if owner[word] == w}
            if example.tags is not None:
                labels = [IGNORE] * len(ids)
                for word, pos in positions.items():
                    labels[pos] = example.tags[word]
                if label_all_subtokens:
                    for t in range(start, stop):
                        word = aligned.word_of_token[t]
                        if first_word <= word < end_word and labels[t + offset] == IGNORE:
                            labels[t + offset] = example.tags[word]
                item.token_labels = labels
            items.append(item)
    return items, windowed


def encode_examples(
    examples: list[Example], task: str, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig
) -> tuple[list[Item], int]:
    """Items for either task, and how many examples were cut (sequence) or windowed (token)."""
    if task == "token":
        return encode_sentences(examples, tokenizer, cfg.max_length, cfg.window_stride, cfg.label_all_subtokens)
    return encode_sequences(examples, tokenizer, cfg.max_length)
