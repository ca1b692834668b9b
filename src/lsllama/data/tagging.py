"""Reading CoNLL-style NER files and bringing their tags to one scheme.

Corpora ship in IOB1 (the original CoNLL-2003 release), plain IO, IOB2, BIOES or BILOU (BIOES with L- for
E- and U- for S-). Training and scoring use IOB2 only, so that one label set and one chunking rule
(conlleval's) serve every corpus.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lsllama.errors import DataError

Scheme = Literal["IOB1", "IOB2", "BIOES", "BILOU"]
SCHEMES: tuple[Scheme, ...] = ("IOB1", "IOB2", "BIOES", "BILOU")
_SINGLE_AND_END = {"BIOES": ("S", "E"), "BILOU": ("U", "L")}
"""The prefixes that IOB2 lacks, per scheme: a one-word entity's and an entity's last word's."""

DOCSTART = "-DOCSTART-"
# Only space and tab separate columns: str.split() would also split on no-break spaces inside tokens.
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")
_ENTITY_PREFIXES = frozenset("BIESLU")


@dataclass(frozen=True)
class TaggedSentence:
    """One sentence of a CoNLL file.

    `line` is the 1-based line of the first token, so that checks made long after reading (unknown tags,
    bad prefixes) can still point the user at the place in the file.
    """

    tokens: list[str]
    tags: list[str]
    line: int


def read_conll(path: str | Path) -> list[TaggedSentence]:
    """Read a CoNLL file whose first column is the token and whose last column is the tag.

    Taking the last column lets the same reader take 2-column files and the 4-column CoNLL-2003 layout
    (token, POS, chunk, NER). Every token line must have as many columns as the first one: a line that
    differs is almost always a token containing a space or a lost column, which would silently shift tags.
    """
    text = _read_utf8(path)
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    expected: tuple[int, int] | None = None  # (number of columns, line it was taken from)
    # The trailing "" closes a final sentence that has no blank line after it.
    for number, raw in enumerate([*text.split("\n"), ""], start=1):
        stripped = raw.strip(" \t\r")
        columns = _COLUMN_SEPARATOR.split(stripped) if stripped else []
        if not columns or columns[0] == DOCSTART:
            if tokens:
                sentences.append(TaggedSentence(tokens, tags, first_line))
                tokens, tags = [], []
            continue
        if len(columns) < 2:
            raise DataError("expected a token and a tag, found only one column", path, number)
        if expected is None:
            expected = (len(columns), number)
        elif len(columns) != expected[0]:
            raise DataError(f"found {len(columns)} columns but line {expected[1]} has {expected[0]}", path, number)
        if not tokens:
            first_line = number
        tokens.append(columns[0])
        tags.append(columns[-1])
    if not sentences:
        raise DataError("no sentences found", path)
    return sentences


def _read_utf8(path: str | Path) -> str:
    """Decode the whole file up front so that an encoding error is reported with its line, not mid-training."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"cannot read file: {error.strerror or error}", path) from error
    # Editors on Windows often prepend a byte-order mark; it would otherwise glue itself to the first token.
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(f"file is not valid UTF-8 (byte 0x{data[error.start]:02x})", path, line) from error


def split_tag(tag: str) -> tuple[str, str]:
    """Split a tag into prefix and entity type ("O" gives ("O", "")), refusing anything malformed.

    A tag without a recognised prefix would otherwise be chunked as garbage (seqeval reads "PER" as prefix
    "P", type "ER"), so it is rejected at the boundary instead.
    """
    if tag == "O":
        return "O", ""
    prefix, dash, entity_type = tag.partition("-")
    if dash and entity_type and prefix in _ENTITY_PREFIXES:
        return prefix, entity_type
    raise ValueError(f"invalid tag {tag!r}: expected O or a B-, I-, E-, S-, L- or U- prefix followed by an entity type")


def detect_scheme(tag_seqs: Iterable[Sequence[str]]) -> Scheme:
    """Guess the tagging scheme of a corpus, so users need not declare it.

    The rule, applied over all sentences:

    - BIOES if any tag starts with "E-" or "S-" (neither exists in IOB1 or IOB2), BILOU if any starts
      with "L-" or "U-";
    - IOB1 if some I-X starts an entity (it is sentence-initial, or follows O, or follows a tag of another
      type) and every B-X directly follows a B-X or I-X, i.e. B- only separates two adjacent entities of
      the same type, which is the one place IOB1 uses it;
    - IOB2 otherwise. This includes IOB2 files with a few I-X that start an entity (annotation slips):
      their B-X starting entities after O show the file is not IOB1, and conlleval scores such an I-X as
      the start of an entity anyway.

    Malformed tags are ignored here; to_iob2 reports them, where the caller knows the sentence's line.
    """
    i_starts_entity = False
    b_starts_entity = False
    for tags in tag_seqs:
        previous_type = ""
        for tag in tags:
            if tag.startswith(("E-", "S-")):
                return "BIOES"
            if tag.startswith(("L-", "U-")):
                return "BILOU"
            prefix, _, entity_type = tag.partition("-")
            if prefix in ("B", "I") and entity_type != previous_type:
                if prefix == "I":
                    i_starts_entity = True
                else:
                    b_starts_entity = True
            previous_type = entity_type if prefix in ("B", "I") else ""
    return "IOB1" if i_starts_entity and not b_starts_entity else "IOB2"


def describe_scheme(tag_seqs: Iterable[Sequence[str]], scheme: Scheme) -> str:
    """The scheme's name for a message: an IOB1 corpus without any B- tag is plain IO (read the same way)."""
    if scheme == "IOB1" and not any(tag.startswith("B-") for tags in tag_seqs for tag in tags):
        return "IO"
    return scheme


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Rewrite one sentence's tags in IOB2, the scheme training and scoring use.

    IOB1 (and plain IO, read the same way): an I-X that does not continue an X entity becomes B-X. BIOES:
    S-X becomes B-X and E-X becomes I-X; BILOU likewise with U-X and L-X. IOB2 tags come back unchanged but
    checked. Raises ValueError for a malformed tag, or for a tag of another scheme (E-/S- outside BIOES,
    L-/U- outside BILOU: the output would not be IOB2); the caller adds the file and line.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    converted: list[str] = []
    previous_type = ""
    for tag in tags:
        prefix, entity_type = split_tag(tag)
        single, end = _SINGLE_AND_END.get(scheme, ("", ""))
        if prefix in (single, end):
            prefix = "B" if prefix == single else "I"
        elif prefix in ("E", "S", "L", "U"):
            owner = "BIOES" if prefix in ("E", "S") else "BILOU"
            raise ValueError(f"tag {tag!r} belongs to {owner}, but the scheme is {scheme}")
        elif scheme == "IOB1" and prefix == "I" and entity_type != previous_type:
            prefix = "B"
        converted.append("O" if prefix == "O" else f"{prefix}-{entity_type}")
        previous_type = entity_type
    return converted
