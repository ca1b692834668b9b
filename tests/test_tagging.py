from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lsllama.config import DataConfig
from lsllama.data.dataset import load_split, resolve_labels
from lsllama.data.tagging import (
    TaggedSentence,
    describe_scheme,
    detect_scheme,
    read_conll,
    split_tag,
    to_iob2,
)
from lsllama.errors import DataError

from .conftest import write_jsonl


def write(tmp_path: Path, content: str | bytes, name: str = "data.conll") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --- read_conll ---------------------------------------------------------------------------------------


def test_two_column_file_gives_tokens_tags_and_first_token_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "John\tB-PER\nlives\tO\n\nParis B-LOC\n")
    assert read_conll(path) == [
        TaggedSentence(["John", "lives"], ["B-PER", "O"], 1),
        TaggedSentence(["Paris"], ["B-LOC"], 4),
    ]


def test_four_column_file_takes_last_column_and_skips_docstart(tmp_path: Path) -> None:
    content = (
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n-DOCSTART- -X- -X- O\n\nBonn NNP B-NP B-LOC\n"
    )
    sentences = read_conll(write(tmp_path, content))
    assert [s.tokens for s in sentences] == [["EU", "rejects"], ["Bonn"]]
    assert [s.tags for s in sentences] == [["B-ORG", "O"], ["B-LOC"]]
    assert [s.line for s in sentences] == [3, 8]


def test_last_sentence_without_trailing_blank_line_is_kept(tmp_path: Path) -> None:
    sentences = read_conll(write(tmp_path, "a O\n\nb B-PER\nc I-PER"))
    assert sentences[-1] == TaggedSentence(["b", "c"], ["B-PER", "I-PER"], 3)


def test_repeated_blank_lines_and_crlf_do_not_create_empty_sentences(tmp_path: Path) -> None:
    sentences = read_conll(write(tmp_path, "a O\r\n\r\n\r\n  \t\r\nb O\r\n"))
    assert sentences == [TaggedSentence(["a"], ["O"], 1), TaggedSentence(["b"], ["O"], 5)]


def test_docstart_without_blank_line_still_separates_sentences(tmp_path: Path) -> None:
    sentences = read_conll(write(tmp_path, "a O\n-DOCSTART- O\nb O\n"))
    assert [s.tokens for s in sentences] == [["a"], ["b"]]


def test_no_break_space_inside_a_token_is_not_a_column_separator(tmp_path: Path) -> None:
    sentences = read_conll(write(tmp_path, "10\u00a0000 O\n"))
    assert sentences[0].tokens == ["10\u00a0000"]


def test_byte_order_mark_does_not_stick_to_the_first_token(tmp_path: Path) -> None:
    sentences = read_conll(write(tmp_path, b"\xef\xbb\xbfJohn B-PER\n"))
    assert sentences[0].tokens == ["John"]


def test_line_with_different_column_count_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "EU NNP B-NP B-ORG\n\nrejects VBZ O\n")
    with pytest.raises(DataError) as caught:
        read_conll(path)
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path}:3: ")
    assert "3 columns" in str(caught.value) and "line 1 has 4" in str(caught.value)


def test_column_count_is_taken_from_first_token_line_not_docstart(tmp_path: Path) -> None:
    sentences = read_conll(write(tmp_path, "-DOCSTART-\n\nJohn B-PER\n"))
    assert sentences == [TaggedSentence(["John"], ["B-PER"], 3)]


def test_single_column_line_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        read_conll(write(tmp_path, "John\n"))
    assert caught.value.line == 1
    assert "one column" in str(caught.value)


@pytest.mark.parametrize("content", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_file_without_sentences_is_an_error(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(DataError, match="no sentences") as caught:
        read_conll(path)
    assert caught.value.path == path


def test_non_utf8_file_is_reported_with_line_of_bad_byte(tmp_path: Path) -> None:
    path = write(tmp_path, b"a O\n\nb O\nM\xfcnchen B-LOC\n")
    with pytest.raises(DataError, match="UTF-8") as caught:
        read_conll(path)
    assert caught.value.line == 4


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_conll(tmp_path / "missing.conll")


# --- split_tag ----------------------------------------------------------------------------------------


def test_split_tag_keeps_hyphens_inside_the_entity_type() -> None:
    assert split_tag("B-GEO-LOC") == ("B", "GEO-LOC")
    assert split_tag("O") == ("O", "")


@pytest.mark.parametrize("tag", ["PER", "X-PER", "B-", "b-PER", "", "o"])
def test_split_tag_rejects_malformed_tags_naming_them(tag: str) -> None:
    with pytest.raises(ValueError, match=repr(tag)):
        split_tag(tag)


# --- detect_scheme ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["S-PER", "E-LOC"])
def test_any_e_or_s_tag_means_bioes(tag: str) -> None:
    assert detect_scheme([["B-PER", "I-PER", "O"], ["O", tag]]) == "BIOES"


def test_entities_starting_with_i_and_b_only_between_same_type_entities_mean_iob1() -> None:
    assert detect_scheme([["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]) == "IOB1"


@pytest.mark.parametrize(
    "tags",
    [
        ["I-PER", "O"],  # sentence-initial
        ["O", "I-PER"],  # after O
        ["I-LOC", "I-PER"],  # after another type
    ],
)
def test_each_way_an_i_tag_can_start_an_entity_means_iob1(tags: list[str]) -> None:
    assert detect_scheme([tags]) == "IOB1"


def test_entity_starting_i_tag_counts_in_any_sentence_not_just_the_first() -> None:
    assert detect_scheme([["O", "O"], ["O", "I-LOC"]]) == "IOB1"


def test_sentence_initial_b_is_not_between_adjacent_entities_even_after_a_same_type_sentence_end() -> None:
    # Read as one stream, the second B-PER would follow B-PER and look like IOB1's separator.
    assert detect_scheme([["I-PER", "B-PER"], ["B-PER"]]) == "IOB2"


def test_b_starting_entities_mean_iob2() -> None:
    assert detect_scheme([["B-PER", "I-PER", "O", "B-LOC"]]) == "IOB2"


def test_b_after_o_outweighs_a_stray_i_start_so_slips_in_iob2_stay_iob2() -> None:
    assert detect_scheme([["O", "I-PER", "O", "B-LOC"]]) == "IOB2"


def test_b_after_entity_of_another_type_rules_out_iob1() -> None:
    assert detect_scheme([["I-PER", "B-LOC"]]) == "IOB2"


def test_corpus_without_entities_is_iob2() -> None:
    assert detect_scheme([["O", "O"], []]) == "IOB2"


# --- to_iob2 ------------------------------------------------------------------------------------------


def test_iob1_i_tags_that_start_entities_become_b() -> None:
    tags = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG"]
    assert to_iob2(tags, "IOB1") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG"]


def test_bioes_singletons_become_b_and_ends_become_i() -> None:
    tags = ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "S-PER", "S-PER"]
    assert to_iob2(tags, "BIOES") == ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O", "B-PER", "B-PER"]


def test_iob2_tags_come_back_unchanged() -> None:
    tags = ["B-PER", "I-PER", "O", "I-LOC"]
    assert to_iob2(tags, "IOB2") == tags


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2", "BIOES"])
def test_malformed_tag_raises_value_error_naming_it(scheme: str) -> None:
    with pytest.raises(ValueError, match="'PER'"):
        to_iob2(["O", "PER"], scheme)


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2"])
def test_bioes_tag_outside_bioes_is_refused_rather_than_passed_through(scheme: str) -> None:
    with pytest.raises(ValueError, match="'S-PER'"):
        to_iob2(["S-PER"], scheme)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="IOBES"):
        to_iob2(["O"], "IOBES")


ENTITY_TYPES = ["PER", "LOC"]


@st.composite
def iob2_sentences(draw: st.DrawFn) -> list[str]:
    """Valid IOB2 sentences: random entities (type, length) separated by zero or more O tags."""
    tags: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        tags += ["O"] * draw(st.integers(0, 2))
        entity_type = draw(st.sampled_from(ENTITY_TYPES))
        tags += [f"B-{entity_type}"] + [f"I-{entity_type}"] * draw(st.integers(0, 2))
    return tags


def iob2_to_iob1(tags: list[str]) -> list[str]:
    """IOB1 keeps B- only where an entity directly follows one of the same type."""
    out = []
    for i, tag in enumerate(tags):
        follows_same_type = i > 0 and tags[i - 1] != "O" and tags[i - 1][2:] == tag[2:]
        out.append(tag if tag == "O" or (tag.startswith("B-") and follows_same_type) else "I-" + tag[2:])
    return out


def iob2_to_bioes(tags: list[str]) -> list[str]:
    out = []
    for i, tag in enumerate(tags):
        continues = i + 1 < len(tags) and tags[i + 1].startswith("I-")
        if tag.startswith("B-") and not continues:
            tag = "S-" + tag[2:]
        elif tag.startswith("I-") and not continues:
            tag = "E-" + tag[2:]
        out.append(tag)
    return out


@given(st.lists(iob2_sentences(), min_size=1, max_size=4))
def test_iob1_encoding_is_detected_and_converts_back_to_the_same_iob2(corpus: list[list[str]]) -> None:
    encoded = [iob2_to_iob1(tags) for tags in corpus]
    has_entities = any(tag != "O" for tags in corpus for tag in tags)
    assert detect_scheme(encoded) == ("IOB1" if has_entities else "IOB2")
    assert [to_iob2(tags, "IOB1") for tags in encoded] == corpus


@given(st.lists(iob2_sentences(), min_size=1, max_size=4))
def test_bioes_encoding_is_detected_and_converts_back_to_the_same_iob2(corpus: list[list[str]]) -> None:
    encoded = [iob2_to_bioes(tags) for tags in corpus]
    has_entities = any(tag != "O" for tags in corpus for tag in tags)
    assert detect_scheme(encoded) == ("BIOES" if has_entities else "IOB2")
    assert [to_iob2(tags, "BIOES") for tags in encoded] == corpus


@given(st.lists(iob2_sentences(), min_size=1, max_size=4))
def test_valid_iob2_corpus_is_detected_as_iob2(corpus: list[list[str]]) -> None:
    assert detect_scheme(corpus) == "IOB2"


# --- BILOU and plain IO -------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["U-PER", "L-LOC"])
def test_any_l_or_u_tag_means_bilou(tag: str) -> None:
    assert detect_scheme([["B-LOC", "I-LOC", "O"], ["O", tag]]) == "BILOU"


def test_bilou_units_become_b_and_lasts_become_i() -> None:
    tags = ["U-PER", "B-LOC", "I-LOC", "L-LOC", "O", "U-PER"]
    assert to_iob2(tags, "BILOU") == ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O", "B-PER"]


@pytest.mark.parametrize(("scheme", "tag"), [("BIOES", "U-PER"), ("BILOU", "S-PER"), ("IOB2", "L-PER")])
def test_a_tag_of_another_scheme_is_refused(scheme: str, tag: str) -> None:
    with pytest.raises(ValueError, match=repr(tag)):
        to_iob2([tag], scheme)


def test_a_corpus_without_any_b_tag_is_described_as_io_and_read_as_iob1() -> None:
    corpus = [["I-PER", "I-PER", "O", "I-LOC"]]
    scheme = detect_scheme(corpus)
    assert describe_scheme(corpus, scheme) == "IO"
    assert to_iob2(corpus[0], scheme) == ["B-PER", "I-PER", "O", "B-LOC"]
    assert describe_scheme([["I-PER", "B-PER"]], "IOB1") == "IOB1"


# --- integer tag ids through the file's own names ------------------------------------------------------


def tagged_folder(folder: Path, names: list[str], sentences: list[tuple[list[str], list]]) -> DataConfig:
    rows = [{"tokens": tokens, "tags": tags} for tokens, tags in sentences]
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "validation.jsonl", rows)
    (folder / "labels.txt").write_text("\n".join(names) + "\n")
    return DataConfig(data=str(folder))


def gold_tags(cfg: DataConfig, caplog=None) -> tuple[list[str], list[list[str]]]:
    labels = resolve_labels(cfg, "token")
    examples = load_split(cfg, "validation", "token", labels, None)
    return labels.names, [[labels.names[t] for t in e.tags] for e in examples]


def test_integer_bioes_tags_map_through_the_files_names_before_conversion(tmp_path: Path, caplog) -> None:
    names = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    words = ["Anna", "Maria", "Smith", "visited", "Rome"]
    tags = [1, 2, 3, 0, 8]  # B-PER I-PER E-PER O S-LOC
    cfg = tagged_folder(tmp_path / "bioes", names, [(words, tags)])
    with caplog.at_level(logging.INFO, logger="lsllama"):
        label_names, gold = gold_tags(cfg)
    assert set(label_names) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
    assert gold == [["B-PER", "I-PER", "I-PER", "O", "B-LOC"]]
    assert "tags: BIOES scheme in" in caplog.text


def test_an_out_of_range_tag_id_is_a_data_error_naming_file_and_line(tmp_path: Path) -> None:
    cfg = tagged_folder(tmp_path / "ids", ["O", "B-PER", "I-PER"], [(["a", "b"], [0, 1]), (["c"], [7])])
    with pytest.raises(DataError, match=r"validation.jsonl:2: tag id 7 is out of range"):
        gold_tags(cfg)


def test_iob1_file_whose_type_never_has_a_b_tag_trains_with_iob2_labels(tmp_path: Path) -> None:
    names = ["O", "I-PER", "I-LOC"]  # an IOB1 labels.txt: no B- at all
    cfg = tagged_folder(tmp_path / "iob1", names, [(["Anna", "Smith", "in", "Rome"], [1, 1, 0, 2])])
    label_names, gold = gold_tags(cfg)
    assert {"B-PER", "B-LOC"} <= set(label_names)
    assert gold == [["B-PER", "I-PER", "O", "B-LOC"]]


def test_bilou_string_tags_are_read(tmp_path: Path) -> None:
    cfg = DataConfig(data=str(tmp_path / "bilou"))
    rows = [{"tokens": ["Anna", "Smith", "in", "Rome"], "tags": ["B-PER", "L-PER", "O", "U-LOC"]}]
    write_jsonl(tmp_path / "bilou" / "train.jsonl", rows)
    write_jsonl(tmp_path / "bilou" / "validation.jsonl", rows)
    assert gold_tags(cfg)[1] == [["B-PER", "I-PER", "O", "B-LOC"]]
