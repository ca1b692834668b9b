from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsllama.data.tagging import to_iob2
from lsllama.evaluation.spans import extract_entities, span_metrics

# Expected values below were worked out by hand with conlleval's rules: a chunk starts at B-X, at an I-X
# after O, and at any tag whose type differs from the previous tag's; it ends before B, before O, before a
# type change, and at a sentence boundary. A predicted chunk is correct if type, start and end all match.


def test_type_mismatch_counts_as_a_miss_for_both_types() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG"]]
    # gold chunks: PER[0,2) LOC[3,4) ORG[5,6) = 3; predicted: PER[0,2) ORG[3,4) ORG[5,6) = 3
    # correct: PER[0,2) ORG[5,6) = 2 -> P = R = F = 2/3; tags right: 5 of 6.
    # PER 1/1/1: P 1, R 1. LOC 0 correct / 1 gold / 0 found: P 0, R 0. ORG 1/1/2: P 1/2, R 1, F 2/3.
    result = span_metrics(gold, pred)
    assert (result["n_correct_entities"], result["n_gold_entities"], result["n_pred_entities"]) == (2, 3, 3)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["token_accuracy"] == pytest.approx(5 / 6)
    assert result["per_type"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "ORG": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }


def test_invalid_predicted_i_tags_start_chunks_as_in_conlleval() -> None:
    gold = [["O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["O", "I-PER", "I-PER", "O", "B-LOC", "I-PER"]]
    # gold chunks: PER[1,3) LOC[4,6) = 2
    # predicted: I-PER after O starts PER[1,3); B-LOC is LOC[4,5), cut by the type change;
    # I-PER after B-LOC starts PER[5,6) -> 3 chunks. correct: PER[1,3) = 1.
    # P = 1/3, R = 1/2, F = 2 * 1/6 / (5/6) = 2/5; tags right: positions 0, 2, 3, 4 = 4 of 6.
    result = span_metrics(gold, pred)
    assert (result["n_correct_entities"], result["n_gold_entities"], result["n_pred_entities"]) == (1, 2, 3)
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(1 / 2)
    assert result["f1"] == pytest.approx(2 / 5)
    assert result["token_accuracy"] == pytest.approx(4 / 6)
    assert result["per_type"]["PER"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert result["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_iob1_gold_converted_to_iob2_is_scored_on_the_converted_tags() -> None:
    gold_iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    gold = [to_iob2(gold_iob1, "IOB1")]
    assert gold == [["B-PER", "I-PER", "B-PER", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "I-PER", "O", "B-LOC"]]
    # gold chunks: PER[0,2) PER[2,3) LOC[4,5) = 3; predicted: PER[0,3) LOC[4,5) = 2; correct: LOC = 1.
    # P = 1/2, R = 1/3, F = 2 * 1/6 / (5/6) = 2/5. Tags right against converted gold: all but
    # position 2 (B-PER vs I-PER) = 4 of 5.
    result = span_metrics(gold, pred)
    assert (result["n_correct_entities"], result["n_gold_entities"], result["n_pred_entities"]) == (1, 3, 2)
    assert result["precision"] == pytest.approx(1 / 2)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(2 / 5)
    assert result["token_accuracy"] == pytest.approx(4 / 5)
    assert result["per_type"]["PER"]["support"] == 2


def test_chunks_do_not_run_across_sentence_boundaries() -> None:
    gold = [["O", "B-LOC", "I-LOC"], ["B-LOC", "O"]]
    pred = [["O", "B-LOC", "I-LOC"], ["I-LOC", "O"]]
    # The boundary closes LOC[1,3) of sentence 0; sentence 1's initial I-LOC starts its own LOC[0,1).
    # gold 2, predicted 2, correct 2 -> P = R = F = 1 (merged, it would be 0 correct of 1 found).
    # Tags right: 4 of 5.
    result = span_metrics(gold, pred)
    assert (result["n_correct_entities"], result["n_gold_entities"], result["n_pred_entities"]) == (2, 2, 2)
    assert result["f1"] == 1.0
    assert result["token_accuracy"] == pytest.approx(4 / 5)


def test_corpus_without_entities_scores_zero_f1_without_crashing() -> None:
    gold = [["O", "O"], ["O"]]
    # No gold and no predicted chunks: every ratio has a zero denominator and is defined as 0.
    result = span_metrics(gold, gold)
    assert (result["precision"], result["recall"], result["f1"]) == (0.0, 0.0, 0.0)
    assert (result["n_gold_entities"], result["n_pred_entities"], result["n_correct_entities"]) == (0, 0, 0)
    assert result["per_type"] == {}
    assert result["token_accuracy"] == 1.0


def test_spurious_prediction_on_all_o_gold_gives_zero_precision_and_recall() -> None:
    # gold 0 chunks, predicted 1 (PER[1,2)), correct 0: P = 0/1, R undefined -> 0, F 0. Tags right: 2 of 3.
    result = span_metrics([["O", "O", "O"]], [["O", "B-PER", "O"]])
    assert (result["precision"], result["recall"], result["f1"]) == (0.0, 0.0, 0.0)
    assert result["n_pred_entities"] == 1
    assert result["per_type"] == {"PER": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}}
    assert result["token_accuracy"] == pytest.approx(2 / 3)


def test_empty_corpus_scores_zero_everywhere() -> None:
    result = span_metrics([], [])
    assert (result["f1"], result["token_accuracy"], result["n_gold_entities"]) == (0.0, 0.0, 0)


def test_mismatched_sentence_counts_or_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="1 gold sentences but 2"):
        span_metrics([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="sentence 1 has 2 gold tags but 1"):
        span_metrics([["O"], ["O", "O"]], [["O"], ["O"]])


# --- extract_entities ---------------------------------------------------------------------------------


def test_entities_have_exclusive_ends_and_split_at_b_and_type_changes() -> None:
    tags = ["B-PER", "I-PER", "B-PER", "I-LOC", "O", "I-ORG", "I-ORG", "B-GEO-LOC"]
    assert extract_entities(tags) == [("PER", 0, 2), ("PER", 2, 3), ("LOC", 3, 4), ("ORG", 5, 7), ("GEO-LOC", 7, 8)]


def test_entity_at_sentence_end_is_closed() -> None:
    assert extract_entities(["O", "B-PER", "I-PER"]) == [("PER", 1, 3)]


def test_i_of_another_type_after_b_starts_a_new_entity() -> None:
    assert extract_entities(["B-LOC", "I-PER", "I-PER"]) == [("LOC", 0, 1), ("PER", 1, 3)]


@pytest.mark.parametrize("tag", ["S-PER", "E-PER", "PER"])
def test_non_iob2_tags_are_refused_naming_the_tag(tag: str) -> None:
    with pytest.raises(ValueError, match=repr(tag)):
        extract_entities(["O", tag])


# --- span_metrics against conlleval -------------------------------------------------------------------


def conlleval_counts(gold: list[list[str]], pred: list[list[str]]) -> tuple[Counter[str], ...]:
    """conlleval.pl's counting loop for O/B-/I- tags, written from its chunk rules without seqeval.

    Returns (correct, found in gold, found in predictions) per type. Sentences are separated by a boundary
    line that conlleval reads as O in both columns.
    """
    correct: Counter[str] = Counter()
    found_gold: Counter[str] = Counter()
    found_pred: Counter[str] = Counter()

    def parse(tag: str) -> tuple[str, str]:
        prefix, _, entity_type = tag.partition("-")
        return prefix, entity_type

    def ends(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
        return (prev in ("B", "I") and tag in ("B", "O")) or (prev != "O" and prev_type != tag_type)

    def starts(prev: str, prev_type: str, tag: str, tag_type: str) -> bool:
        return tag == "B" or (prev == "O" and tag == "I") or (tag != "O" and prev_type != tag_type)

    stream = [pair for g, p in zip(gold, pred, strict=True) for pair in [*zip(g, p, strict=True), ("O", "O")]]
    in_correct = False
    last_gold, last_pred = ("O", ""), ("O", "")
    for gold_tag, pred_tag in stream:
        now_gold, now_pred = parse(gold_tag), parse(pred_tag)
        end_gold, end_pred = ends(*last_gold, *now_gold), ends(*last_pred, *now_pred)
        start_gold, start_pred = starts(*last_gold, *now_gold), starts(*last_pred, *now_pred)
        if in_correct:
            if end_gold and end_pred and last_gold[1] == last_pred[1]:
                in_correct = False
                correct[last_gold[1]] += 1
            elif end_gold != end_pred or now_gold[1] != now_pred[1]:
                in_correct = False
        if start_gold and start_pred and now_gold[1] == now_pred[1]:
            in_correct = True
        if start_gold:
            found_gold[now_gold[1]] += 1
        if start_pred:
            found_pred[now_pred[1]] += 1
        last_gold, last_pred = now_gold, now_pred
    return correct, found_gold, found_pred


TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@st.composite
def tagged_corpora(draw: st.DrawFn) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted corpora of the same shape, both free to contain invalid sequences."""
    lengths = draw(st.lists(st.integers(0, 8), max_size=5))
    gold = [draw(st.lists(st.sampled_from(TAGS), min_size=n, max_size=n)) for n in lengths]
    pred = [draw(st.lists(st.sampled_from(TAGS), min_size=n, max_size=n)) for n in lengths]
    return gold, pred


def test_conlleval_reference_reproduces_a_hand_computed_fixture() -> None:
    # Same fixture as test_invalid_predicted_i_tags_start_chunks_as_in_conlleval: 1 correct, 2 gold, 3 found.
    correct, found_gold, found_pred = conlleval_counts(
        [["O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC"]], [["O", "I-PER", "I-PER", "O", "B-LOC", "I-PER"]]
    )
    assert (correct, found_gold, found_pred) == (
        Counter({"PER": 1}),
        Counter({"PER": 1, "LOC": 1}),
        Counter({"PER": 2, "LOC": 1}),
    )


@given(tagged_corpora())
def test_span_metrics_count_entities_exactly_as_conlleval(corpora: tuple[list[list[str]], list[list[str]]]) -> None:
    gold, pred = corpora
    correct, found_gold, found_pred = conlleval_counts(gold, pred)
    result = span_metrics(gold, pred)
    assert result["n_correct_entities"] == sum(correct.values())
    assert result["n_gold_entities"] == sum(found_gold.values())
    assert result["n_pred_entities"] == sum(found_pred.values())
    assert set(result["per_type"]) == set(found_gold) | set(found_pred)
    for entity_type, scores in result["per_type"].items():
        assert scores["support"] == found_gold[entity_type]
        n_found = found_pred[entity_type]
        assert scores["precision"] == pytest.approx(correct[entity_type] / n_found if n_found else 0.0)
        n_gold = found_gold[entity_type]
        assert scores["recall"] == pytest.approx(correct[entity_type] / n_gold if n_gold else 0.0)
