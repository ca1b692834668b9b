"""Entity-level scores identical to conlleval, the script published CoNLL NER results come from.

Chunking is seqeval's default (non-strict) mode, which follows conlleval's rules, including for the
invalid sequences a model emits: an I-X that does not continue an X entity (sentence-initial, after O, or
after another type) starts a new entity instead of being dropped. Tags are limited to O, B-X and I-X:
conlleval.pl reads E- as IOE chunking does and knows no S-, so on BIOES tags it and seqeval disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TypedDict

from lsllama.data.tagging import split_tag

Entity = tuple[str, int, int]


class TypeScores(TypedDict):
    """Scores for one entity type; `support` is its number of gold entities."""

    precision: float
    recall: float
    f1: float
    support: int


class SpanMetrics(TypedDict):
    """Micro-averaged entity scores over a corpus, plus the per-type breakdown conlleval prints."""

    precision: float
    recall: float
    f1: float
    token_accuracy: float
    per_type: dict[str, TypeScores]
    n_gold_entities: int
    n_pred_entities: int
    n_correct_entities: int


def extract_entities(tags: Sequence[str]) -> list[Entity]:
    """The entities of one sentence as (type, first word, end word exclusive), chunked as conlleval does.

    Raises ValueError for a tag that is not O, B-X or I-X.
    """
    for tag in tags:
        if split_tag(tag)[0] not in ("O", "B", "I"):
            raise ValueError(f"tag {tag!r} is not IOB2: convert it with to_iob2 before scoring")
    from seqeval.metrics.sequence_labeling import get_entities  # imports scikit-learn: see metrics.py

    return [(entity_type, start, end + 1) for entity_type, start, end in get_entities(list(tags))]


def span_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> SpanMetrics:
    """Score predicted tags against gold tags, sentence by sentence, the way conlleval does.

    An entity counts as correct only if its type, first and last word all match. Precision, recall and
    F1 are 0 when their denominator is, so a corpus or type without entities scores 0 rather than failing.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    gold_entities: dict[str, set[tuple[int, int, int]]] = defaultdict(set)
    pred_entities: dict[str, set[tuple[int, int, int]]] = defaultdict(set)
    n_tokens = 0
    n_correct_tags = 0
    for sentence, (gold_tags, pred_tags) in enumerate(zip(gold, pred, strict=True)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(f"sentence {sentence} has {len(gold_tags)} gold tags but {len(pred_tags)} predicted")
        n_tokens += len(gold_tags)
        n_correct_tags += sum(g == p for g, p in zip(gold_tags, pred_tags, strict=True))
        for entity_type, start, end in extract_entities(gold_tags):
            gold_entities[entity_type].add((sentence, start, end))
        for entity_type, start, end in extract_entities(pred_tags):
            pred_entities[entity_type].add((sentence, start, end))

    per_type: dict[str, TypeScores] = {}
    for entity_type in sorted(gold_entities.keys() | pred_entities.keys()):
        golds, preds = gold_entities[entity_type], pred_entities[entity_type]
        precision, recall, f1 = _scores(len(golds & preds), len(preds), len(golds))
        per_type[entity_type] = TypeScores(precision=precision, recall=recall, f1=f1, support=len(golds))

    n_gold = sum(len(entities) for entities in gold_entities.values())
    n_pred = sum(len(entities) for entities in pred_entities.values())
    n_correct = sum(len(gold_entities[t] & pred_entities[t]) for t in per_type)
    precision, recall, f1 = _scores(n_correct, n_pred, n_gold)
    return SpanMetrics(
        precision=precision,
        recall=recall,
        f1=f1,
        token_accuracy=n_correct_tags / n_tokens if n_tokens else 0.0,
        per_type=per_type,
        n_gold_entities=n_gold,
        n_pred_entities=n_pred,
        n_correct_entities=n_correct,
    )


def _scores(n_correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1, with conlleval's convention of 0 for an empty denominator."""
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
