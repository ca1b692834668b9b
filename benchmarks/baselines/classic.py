"""Non-neural baselines: what bag-of-words features or a word-to-tag lookup get on the same rows.

They set the floor that an LLM-based method has to clear to be worth its compute.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from benchmarks.baselines import LabelledTexts
from lsllama.evaluation.metrics import classification_metrics
from lsllama.evaluation.spans import span_metrics

C_GRID = (0.1, 1.0, 10.0)
DEFAULT_C = 1.0

Sentences = tuple[list[list[str]], list[list[str]]]


def tfidf_logreg(
    train: LabelledTexts, splits: dict[str, LabelledTexts], labels: list[str], select_on: str | None, seed: int
) -> dict[str, Any]:
    """Word uni+bigram TF-IDF and logistic regression. The inverse regularisation C is chosen on
    `select_on` when given; None keeps the default, for data sets whose only held-out split is the one
    reported (choosing on it would inflate the score)."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    features = vectorizer.fit_transform(train.texts)
    held_out = {name: (vectorizer.transform(split.texts), split.labels) for name, split in splits.items()}

    def fit(c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(features, train.labels)

    if select_on is None:
        best_c = DEFAULT_C
    else:
        x, gold = held_out[select_on]
        best_c = max(C_GRID, key=lambda c: (fit(c).predict(x) == gold).mean())
    model = fit(best_c)
    return {
        "C": best_c,
        "splits": {
            name: classification_metrics(gold, model.predict(x).tolist(), labels)
            for name, (x, gold) in held_out.items()
        },
    }


def majority_tag(train: Sentences, splits: dict[str, Sentences]) -> dict[str, Any]:
    """Each word gets the tag it had most often in training (exact form), unseen words `O`: the
    standard floor for NER, scored with the same conlleval-identical span metrics as the models."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for words, tags in zip(*train, strict=True):
        for word, tag in zip(words, tags, strict=True):
            counts[word][tag] += 1
    lookup = {word: tag_counts.most_common(1)[0][0] for word, tag_counts in counts.items()}
    scored = {}
    for name, (sentences, gold) in splits.items():
        predicted = [[lookup.get(word, "O") for word in words] for words in sentences]
        scored[name] = dict(span_metrics(gold, predicted))
    return {"splits": scored}
