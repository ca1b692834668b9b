from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsllama.data.windows import assign_words, plan_windows


def test_sentence_that_fits_is_one_window_with_every_word_assigned_to_it() -> None:
    assert plan_windows([1, 2, 3], budget=6) == [(0, 3)]
    assert assign_words([(0, 3)], [1, 2, 3]) == [0, 0, 0]


def test_empty_sentence_is_one_empty_window_with_nothing_to_assign() -> None:
    assert plan_windows([], budget=4) == [(0, 0)]
    assert assign_words([(0, 0)], []) == []


def test_long_sentence_of_single_subtoken_words_advances_by_stride() -> None:
    # Budget 4, stride 2: windows of 4 words starting 2 words apart.
    assert plan_windows([1] * 10, budget=4, stride=2) == [(0, 4), (2, 6), (4, 8), (6, 10)]


def test_each_word_goes_to_the_window_where_it_has_most_context_on_both_sides() -> None:
    windows = [(0, 4), (2, 6), (4, 8), (6, 10)]
    # Word 2: window 0 gives min(2 left, 1 right) = 1, window 1 gives min(0, 3) = 0 -> window 0.
    # Word 3: window 0 gives min(3, 0) = 0, window 1 gives min(1, 2) = 1 -> window 1.
    # Word 4: window 1 gives min(2, 1) = 1, window 2 gives min(0, 3) = 0 -> window 1. And so on.
    # Words 0, 1 and 8, 9 are only well placed in the first and last windows.
    assert assign_words(windows, [1] * 10) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]


def test_context_is_counted_in_subtokens_not_words() -> None:
    # Word 2 (lengths 1, 5, [1], 1, 1, 5). Window 0 = words 0-4: 6 sub-tokens left, 2 right -> 2.
    # Window 1 = words 1-5: 5 left, 7 right -> 5, so window 1 wins, though in words window 0 would
    # (2 words each side against 1 left, 3 right).
    # Word 3: window 0 gives min(7, 1) = 1, window 1 min(6, 6) = 6. Word 4: min(8, 0) = 0 against min(7, 5).
    assert assign_words([(0, 5), (1, 6)], [1, 5, 1, 1, 1, 5]) == [0, 0, 1, 1, 1, 1]


def test_ties_go_to_the_earliest_window() -> None:
    assert assign_words([(0, 3), (0, 3)], [1, 1, 1]) == [0, 0, 0]


def test_word_longer_than_budget_is_a_window_of_its_own() -> None:
    windows = plan_windows([2, 9, 2], budget=5)
    assert windows == [(0, 1), (1, 2), (2, 3)]
    assert assign_words(windows, [2, 9, 2]) == [0, 1, 2]


def test_no_window_is_planned_that_adds_no_new_word() -> None:
    # From word 1 the 10-sub-token word 2 still does not fit, so the second window starts at word 2.
    assert plan_windows([3, 3, 10], budget=10) == [(0, 2), (2, 3)]


def test_windows_share_words_even_when_the_window_is_shorter_than_the_stride() -> None:
    # Window (0, 2) holds only 4 sub-tokens (< stride 5), yet words 1 and 2 fit together (9 <= 10).
    assert plan_windows([2, 2, 7], budget=10, stride=5) == [(0, 2), (1, 3)]


@pytest.mark.parametrize(
    ("lengths", "budget", "stride", "message"),
    [
        ([1, 1], 0, None, "budget"),
        ([1, 1], 4, 0, "stride"),
        ([1, 1], 4, 5, "stride"),
        ([1, 0, 1], 4, None, "word 1"),
    ],
)
def test_invalid_plan_arguments_are_refused(lengths: list[int], budget: int, stride: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_windows(lengths, budget, stride)


def test_word_outside_every_window_is_refused() -> None:
    with pytest.raises(ValueError, match="word 2"):
        assign_words([(0, 2), (3, 4)], [1, 1, 1, 1])


def test_window_outside_the_sentence_is_refused() -> None:
    with pytest.raises(ValueError, match="window 1"):
        assign_words([(0, 2), (1, 5)], [1, 1, 1, 1])


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[int], int, int | None]:
    budget = draw(st.integers(1, 16))
    lengths = draw(st.lists(st.integers(1, 6), max_size=40))
    stride = draw(st.none() | st.integers(1, budget))
    return lengths, budget, stride


def subtokens(lengths: list[int], start: int, end: int) -> int:
    return sum(lengths[start:end])


@given(plans())
def test_windows_cover_the_sentence_in_order_within_budget(plan: tuple[list[int], int, int | None]) -> None:
    lengths, budget, stride = plan
    windows = plan_windows(lengths, budget, stride)
    n = len(lengths)
    assert windows[0][0] == 0 and windows[-1][1] == n
    if subtokens(lengths, 0, n) <= budget:
        assert windows == [(0, n)]
    for start, end in windows:
        assert end - start == 1 or subtokens(lengths, start, end) <= budget
        # Windows are filled: the next word would not have fitted.
        assert end == n or subtokens(lengths, start, end + 1) > budget
    for (start, end), (next_start, next_end) in pairwise(windows):
        assert start < next_start <= end, "no word may fall between windows"
        assert next_end > end, "every window must bring a new word"


@given(plans())
def test_consecutive_windows_overlap_unless_the_seam_words_cannot_share_one(
    plan: tuple[list[int], int, int | None],
) -> None:
    lengths, budget, stride = plan
    windows = plan_windows(lengths, budget, stride)
    for (_, end), (next_start, _) in pairwise(windows):
        if next_start == end:
            assert lengths[end - 1] + lengths[end] > budget


@given(plans())
def test_window_start_advances_at_most_stride_unless_needed_to_reach_a_new_word(
    plan: tuple[list[int], int, int | None],
) -> None:
    lengths, budget, stride = plan
    stride = max(1, budget // 2) if stride is None else stride
    windows = plan_windows(lengths, budget, stride)
    for (start, end), (next_start, _) in pairwise(windows):
        if subtokens(lengths, start, next_start) > stride:
            # Starting one word earlier, the window could not have held the first new word.
            assert subtokens(lengths, next_start - 1, end + 1) > budget


@given(plans())
def test_split_then_merge_scores_every_word_exactly_once_from_a_window_holding_it(
    plan: tuple[list[int], int, int | None],
) -> None:
    lengths, budget, stride = plan
    windows = plan_windows(lengths, budget, stride)
    assignment = assign_words(windows, lengths)
    # Stand-in for the model: each window "predicts" the indices of the words it holds.
    predictions = [dict.fromkeys(range(start, end), index) for index, (start, end) in enumerate(windows)]
    merged = [word for word in range(len(lengths)) if word in predictions[assignment[word]]]
    assert merged == list(range(len(lengths)))


@given(plans())
def test_assigned_window_has_the_most_context_and_is_earliest_among_equals(
    plan: tuple[list[int], int, int | None],
) -> None:
    lengths, budget, stride = plan
    windows = plan_windows(lengths, budget, stride)
    assignment = assign_words(windows, lengths)

    def context(word: int, window: tuple[int, int]) -> int:
        start, end = window
        return min(subtokens(lengths, start, word), subtokens(lengths, word + 1, end))

    for word, chosen in enumerate(assignment):
        holding = [index for index, (start, end) in enumerate(windows) if start <= word < end]
        best = max(context(word, windows[index]) for index in holding)
        assert chosen == min(index for index in holding if context(word, windows[index]) == best)
