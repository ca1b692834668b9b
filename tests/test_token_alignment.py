"""Sub-token <-> word alignment and long-sentence windows, for tokenizers with and without BOS / leading space."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from lsllama.data.dataset import Example
from lsllama.data.encoding import IGNORE, align_words, encode_sentences, special_affixes

SENTENCES = [
    ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
    ["Peter", "Blackburn"],
    ["BRUSSELS", "1996-08-22", "Blackburnshire's", "all-rounder", "(", "Simmons", ")"],
]


@pytest.fixture(scope="module")
def bos_wordpiece_tokenizer():
    """A BERT-style tokenizer: prepends <s>, no leading-space marker, '##' continuation pieces."""
    pieces = [
        "[UNK]",
        "[PAD]",
        "<s>",
        "EU",
        "rejects",
        "German",
        "call",
        "to",
        "boy",
        "##cott",
        "British",
        "lamb",
        ".",
        "Peter",
        "Black",
        "##burn",
        "##shire",
        "BR",
        "##US",
        "##SE",
        "##LS",
        "1996",
        "-",
        "08",
        "22",
        "'",
        "s",
        "all",
        "rounder",
        "(",
        "Sim",
        "##mons",
        ")",
    ]
    model = models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]")
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", pad_token="[PAD]", unk_token="[UNK]")


def _pieces_of_each_word(tokenizer, words):
    aligned = align_words(words, tokenizer)
    bounds = [*aligned.first_token[1:], len(aligned.ids)]
    return [aligned.ids[s:e] for s, e in zip(aligned.first_token, bounds, strict=True)]


@pytest.mark.parametrize("words", SENTENCES)
def test_leading_space_tokenizer_round_trips_words(tokenizer, words):
    assert special_affixes(tokenizer) == ([], [])  # SmolLM2 adds no BOS
    for word, ids in zip(words, _pieces_of_each_word(tokenizer, words), strict=True):
        assert tokenizer.decode(ids).strip() == word


@pytest.mark.parametrize("words", SENTENCES)
def test_bos_wordpiece_tokenizer_round_trips_words(bos_wordpiece_tokenizer, words):
    tok = bos_wordpiece_tokenizer
    assert special_affixes(tok) == ([2], [])
    for word, ids in zip(words, _pieces_of_each_word(tok, words), strict=True):
        pieces = tok.convert_ids_to_tokens(ids)
        assert "".join(p.removeprefix("##") for p in pieces) == word


@pytest.mark.parametrize("fixture", ["tokenizer", "bos_wordpiece_tokenizer"])
def test_labels_sit_on_the_first_subtoken_of_each_word(request, fixture):
    tok = request.getfixturevalue(fixture)
    words = SENTENCES[2]
    tags = list(range(len(words)))
    [item], windowed = encode_sentences([Example("t:1", words=words, tags=tags)], tok, max_length=64)
    assert windowed == 0
    prefix, _ = special_affixes(tok)
    assert item.input_ids[: len(prefix)] == prefix
    labelled = [(pos, lab) for pos, lab in enumerate(item.token_labels) if lab != IGNORE]
    assert [lab for _, lab in labelled] == tags
    assert [pos for pos, _ in labelled] == list(item.word_positions.values())


@pytest.mark.parametrize("fixture", ["tokenizer", "bos_wordpiece_tokenizer"])
@pytest.mark.parametrize("max_length", [8, 13, 24])
def test_long_sentences_split_into_windows_and_every_word_is_predicted_once(request, fixture, max_length):
    tok = request.getfixturevalue(fixture)
    words = [w for s in SENTENCES for w in s] * 3
    tags = [i % 5 for i in range(len(words))]
    items, windowed = encode_sentences([Example("t:1", words=words, tags=tags)], tok, max_length=max_length)
    assert windowed == 1 and len(items) > 1
    assert all(len(it.input_ids) <= max_length for it in items)
    owners = [w for it in items for w in it.word_positions]
    assert sorted(owners) == list(range(len(words)))
    for it in items:
        for word, pos in it.word_positions.items():
            assert it.token_labels[pos] == tags[word]


def test_label_all_subtokens_labels_continuation_pieces(bos_wordpiece_tokenizer):
    words = ["Peter", "Blackburn"]
    [item], _ = encode_sentences(
        [Example("t:1", words=words, tags=[1, 2])], bos_wordpiece_tokenizer, 64, label_all_subtokens=True
    )
    assert item.token_labels == [IGNORE, 1, 2, 2]
