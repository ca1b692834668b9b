"""Splitting sentences longer than the model's input into overlapping windows of whole words.

Truncating a long sentence would silently drop its last words from training and, worse, from scoring.
Instead the sentence is cut into overlapping windows, and each word is labelled from exactly one of them:
the one in which it sees the most context on both sides, since a word at a window's edge is tagged blind.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate

Window = tuple[int, int]


def plan_windows(word_lengths: Sequence[int], budget: int, stride: int | None = None) -> list[Window]:
    """Cut a sentence into word ranges [start, end) of at most `budget` sub-tokens each.

    `word_lengths[i]` is the number of sub-tokens of word i. Each window holds as many whole words as fit;
    a word longer than the budget is a window of its own (the caller truncates its sub-tokens). The next
    window starts at most `stride` sub-tokens later (default half the budget, so windows overlap by about
    half), but always late enough to reach at least one new word, and never past the previous window's
    end, so no word is skipped. Consecutive windows share at least one word unless the two words at the
    seam do not fit in one window together. A sentence that fits is exactly one window, (0, n).
    """
    if budget < 1:
        raise ValueError(f"the window budget must be at least 1 sub-token, got {budget}")
    if stride is None:
        stride = max(1, budget // 2)
    elif not 1 <= stride <= budget:
        raise ValueError(f"the window stride must be between 1 and the budget ({budget}), got {stride}")
    offsets = _offsets(word_lengths)
    n_words = len(word_lengths)
    if n_words == 0:
        return [(0, 0)]
    windows: list[Window] = []
    start = 0
    while True:
        end = max(start + 1, bisect_right(offsets, offsets[start] + budget) - 1)
        windows.append((start, end))
        if end == n_words:
            return windows
        by_stride = min(bisect_right(offsets, offsets[start] + stride) - 1, end - 1)
        # The earliest start from which word `end` still fits: starting earlier would add no new word.
        reaching = min(bisect_left(offsets, offsets[end + 1] - budget), end)
        start = max(by_stride, reaching)


def assign_words(windows: Sequence[Window], word_lengths: Sequence[int]) -> list[int]:
    """For each word, the index of the window whose prediction for it is kept.

    That is the window maximising min(sub-tokens left of the word, sub-tokens right of it) within the
    window, ties going to the earliest, so every word is scored exactly once and from its best context.
    Raises ValueError if a window is out of range or a word is in no window.
    """
    offsets = _offsets(word_lengths)
    n_words = len(word_lengths)
    chosen = [-1] * n_words
    best_context = [-1] * n_words
    for index, (start, end) in enumerate(windows):
        if not 0 <= start <= end <= n_words:
            raise ValueError(f"window {index} ({start}, {end}) is outside the sentence's {n_words} words")
        for word in range(start, end):
            context = min(offsets[word] - offsets[start], offsets[end] - offsets[word + 1])
            if context > best_context[word]:
                chosen[word] = index
                best_context[word] = context
    if -1 in chosen:
        raise ValueError(f"word {chosen.index(-1)} is in no window")
    return chosen


def _offsets(word_lengths: Sequence[int]) -> list[int]:
    """Sub-token offset of each word's start (plus the total), so window sums are differences, not loops.

    Lengths must be positive: a word with no sub-tokens could not be labelled, and the offsets must
    strictly increase for the bisections in plan_windows.
    """
    for word, length in enumerate(word_lengths):
        if length < 1:
            raise ValueError(f"word {word} has {length} sub-tokens; every word needs at least one")
    return list(accumulate(word_lengths, initial=0))
