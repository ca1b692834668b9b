"""Examples -> token ids, and token positions <-> words.

The sequence task tokenizes each text without special tokens and adds them as the tokenizer's own
templates place them (found by asking it), so that texts can be cut where the `long_text` strategy says
and text pairs keep a separator. Tokenizers whose pair template puts nothing between the two texts
(SmolLM2's: the texts would run together) get `PAIR_SEPARATOR` between them.

The token task joins words with single spaces, tokenizes the sentence once, and maps sub-tokens back
to words through character offsets. That works the same for tokenizers that mark a leading space
(GPT-2 / SmolLM BPE), that prepend a BOS token (Llama, Gemma) or that do neither, and it gives the
character offsets that raw-text prediction reports. Sentences longer than the window are split
into overlapping windows of whole words; every word is predicted from exactly one window.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from lsllama.config import AUTO, TEMPLATES, DataConfig, classifies_single_texts, with_question
from lsllama.data.dataset import Example
from lsllama.data.windows import assign_words, plan_windows
from lsllama.errors import UsageError

IGNORE = -100
PAIR_SEPARATOR = "\n"
"""Put between the two texts of a pair when the tokenizer's own pair template puts nothing there."""


@dataclass
class Item:
    """One prediction's input: a whole (possibly cut) text, a long text's windows, or one window of a sentence."""

    input_ids: list[int]
    example_index: int
    """Which example (in the list that was encoded) this item predicts for: a sentence has one item per window."""
    label: int | list[int] | float | None = None
    token_labels: list[int] | None = None
    word_positions: dict[int, int] = field(default_factory=dict)
    """Token task: word index -> position in `input_ids` of the words this window predicts."""
    windows: list[list[int]] = field(default_factory=list)
    """Sequence task with `long_text: windows`, a text longer than one input: every window (the first is
    `input_ids`). Each is a model row; their pooled vectors are averaged into this item's one prediction."""

    def rows(self) -> list[list[int]]:
        return self.windows or [self.input_ids]

    @property
    def n_tokens(self) -> int:
        """Tokens over all rows: what batching by size should count."""
        return sum(len(row) for row in self.rows())


@dataclass(frozen=True)
class Layout:
    """The special tokens a tokenizer puts around one text, and around and between the texts of a pair."""

    prefix: list[int]
    suffix: list[int]
    pair_prefix: list[int]
    middle: list[int]
    pair_suffix: list[int]
    has_own_separator: bool
    """False: the tokenizer's pair template puts nothing between the texts, and `middle` is `PAIR_SEPARATOR`."""


@dataclass
class Alignment:
    """A tokenized sentence: ids without special tokens, and which word each sub-token belongs to."""

    ids: list[int]
    word_of_token: list[int]
    first_token: list[int]


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after any text (e.g. BOS), found by asking it."""
    with_special = tokenizer("a b", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return with_special[:start], with_special[start + len(plain) :]
    return [], []


def _find(haystack: list[int], needle: list[int], start: int = 0) -> int:
    for position in range(start, len(haystack) - len(needle) + 1):
        if haystack[position : position + len(needle)] == needle:
            return position
    return -1


def sequence_layout(tokenizer: PreTrainedTokenizerBase) -> Layout:
    """Ask the tokenizer where its special tokens go, for one text and for a pair."""
    prefix, suffix = special_affixes(tokenizer)
    first = tokenizer("a b", add_special_tokens=False)["input_ids"]
    second = tokenizer("c d", add_special_tokens=False)["input_ids"]
    pair = tokenizer("a b", "c d", add_special_tokens=True)["input_ids"]
    start = _find(pair, first)
    end = _find(pair, second, start + len(first)) if start >= 0 else -1
    if end < 0:  # a template that rewrites the texts: keep the single-text affixes around the pair
        pair_prefix, middle, pair_suffix = prefix, [], suffix
    else:
        pair_prefix, middle, pair_suffix = pair[:start], pair[start + len(first) : end], pair[end + len(second) :]
    has_own_separator = bool(middle)
    if not middle:
        middle = tokenizer(PAIR_SEPARATOR, add_special_tokens=False)["input_ids"]
    return Layout(prefix, suffix, pair_prefix, middle, pair_suffix, has_own_separator)


def truncate_ids(ids: list[int], budget: int, strategy: str) -> list[int]:
    """At most `budget` ids: the head, the tail, or the first quarter and the last three quarters."""
    if len(ids) <= budget:
        return ids
    if strategy == "tail":
        return ids[len(ids) - budget :]
    if strategy == "head_tail":
        head = budget // 4
        return ids[:head] + ids[len(ids) - (budget - head) :]
    return ids[:budget]


def split_budget(first: int, second: int, budget: int) -> tuple[int, int]:
    """How many tokens each text of a pair keeps: the longer one is cut first, and neither below half."""
    if first + second <= budget:
        return first, second
    half = budget // 2
    if first <= half:
        return first, budget - first
    if second <= budget - half:
        return budget - second, second
    return half, budget - half


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Windows every `stride` tokens; the last one ends at the text's end (no short trailing window)."""
    return [*range(0, length - window, stride), length - window]


def label_words(cfg: DataConfig) -> list[str]:
    """What each label is called in words: its `label_descriptions` entry, else its name."""
    descriptions = cfg.label_descriptions or {}
    return [descriptions.get(name, name) for name in cfg.labels or []]


def auto_template(cfg: DataConfig, task: str, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """What `template: auto` reads for this run: `TEMPLATES["labels"]`, after `question` where one is given, for
    classifying single texts (the label-word head then starts as the model's choice among the label words
    after a question that lists them: docs/results.md, "Small data"), unless its tokens would take over a
    quarter of `max_length` (many labels: none, or with the user's question an error); none where
    `classifies_single_texts` says no. Any other value is the user's."""
    if cfg.template != AUTO:
        return cfg.template
    if not classifies_single_texts(task, cfg):
        return None
    if not cfg.labels:
        raise ValueError("template auto: the labels must be known before the template is chosen")
    labelled = dataclasses.replace(cfg, template=with_question(TEMPLATES["labels"], cfg.question))
    length = sum(map(len, template_ids(labelled, tokenizer)))
    if length <= cfg.max_length // 4:
        return labelled.template
    if cfg.question:
        raise UsageError(
            f"--question: the question and the labels take {length} tokens, over a quarter of --max-length "
            f"{cfg.max_length}; a longer --max-length or a shorter question leaves room for the text"
        )
    return None


def template_ids(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The template's token ids before and after `{text}` (none without a template). The text is tokenized on
    its own, as without a template, so the two parts are too; `{labels}` reads "a, b or c"."""
    template = TEMPLATES.get(cfg.template, cfg.template)
    if template is None:
        return [], []
    words = label_words(cfg)
    listed = ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else "".join(words)
    before, after = template.replace("{labels}", listed).split("{text}", 1)
    encode = lambda part: tokenizer(part, add_special_tokens=False)["input_ids"] if part else []  # noqa: E731
    return encode(before), encode(after)


def shared_prefix_ids(cfg: DataConfig, task: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids every encoded row of a single-text run starts with: the tokenizer's own (BOS) and the
    template's part before `{text}` (`LabelSupervisedModel.share_prefix`), as `encode_examples` reads it."""
    if task != "sequence":
        return []
    before, _ = template_ids(dataclasses.replace(cfg, template=auto_template(cfg, task, tokenizer)), tokenizer)
    if cfg.text_pair_column or not before:
        return []
    return sequence_layout(tokenizer).prefix + before


def encode_sequences(
    examples: list[Example],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    long_text: str = "head",
    stride: int | None = None,
    template: tuple[list[int], list[int]] = ([], []),
) -> tuple[list[Item], int]:
    """Returns the items and how many texts did not fit in `max_length` tokens (cut, or read in windows).
    `template`: ids around each single text (`template_ids`); the budget for the text leaves room for them."""
    layout = sequence_layout(tokenizer)
    before, after = template
    layout = dataclasses.replace(layout, prefix=layout.prefix + before, suffix=after + layout.suffix)
    texts = tokenizer([e.text or "" for e in examples], add_special_tokens=False)["input_ids"] if examples else []
    paired = bool(examples) and examples[0].text_pair is not None
    pairs = tokenizer([e.text_pair or "" for e in examples], add_special_tokens=False)["input_ids"] if paired else []
    items, too_long = [], 0
    for index, example in enumerate(examples):
        text = texts[index]
        if paired:
            pair = pairs[index]
            budget = max_length - len(layout.pair_prefix) - len(layout.middle) - len(layout.pair_suffix)
            keep_text, keep_pair = split_budget(len(text), len(pair), budget)
            too_long += keep_text < len(text) or keep_pair < len(pair)
            ids = layout.pair_prefix + truncate_ids(text, keep_text, long_text) + layout.middle
            ids += truncate_ids(pair, keep_pair, long_text) + layout.pair_suffix
            items.append(Item(input_ids=ids, example_index=index, label=example.label))
            continue
        budget = max_length - len(layout.prefix) - len(layout.suffix)
        too_long += len(text) > budget
        if long_text == "windows" and len(text) > budget:
            step = min(stride or max(1, budget // 2), budget)
            starts = window_starts(len(text), budget, step)
            windows = [layout.prefix + text[start : start + budget] + layout.suffix for start in starts]
            items.append(Item(input_ids=windows[0], example_index=index, label=example.label, windows=windows))
        else:
            ids = layout.prefix + truncate_ids(text, budget, long_text) + layout.suffix
            items.append(Item(input_ids=ids, example_index=index, label=example.label))
    return items, too_long


def align_words(words: list[str], tokenizer: PreTrainedTokenizerBase) -> Alignment:
    text = " ".join(words)
    char_to_word = []
    for index, word in enumerate(words):
        if index:
            char_to_word.append(-1)
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
    return Alignment(list(encoded["input_ids"]), word_of_token, first_token)


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
            item = Item(input_ids=ids, example_index=index)
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
    cfg = dataclasses.replace(cfg, template=auto_template(cfg, task, tokenizer))
    template = template_ids(cfg, tokenizer)
    if sum(map(len, template)) > cfg.max_length // 2:
        raise UsageError(
            f"--template takes {sum(map(len, template))} tokens, over half of --max-length {cfg.max_length}: "
            "a longer --max-length or a shorter template leaves room for the text"
        )
    return encode_sequences(examples, tokenizer, cfg.max_length, cfg.long_text, cfg.window_stride, template)
