"""What a unit of text is: the "word" that `/v1/predict` lists and scoring counts.

A word (docs/api.md) is a maximal run of letters, digits and apostrophes; any
other character except a leading space (a punctuation mark, a line break) is a
unit of its own; the end of the text is the unit `EOS_TEXT`. Leading spaces
belong to no unit. Bytes that are not text (an unfinished or broken UTF-8
character) decode to U+FFFD, `NOT_TEXT`, which is never listed as a unit.
"""

from __future__ import annotations

import codecs

EOS_TEXT = "</s>"  # the unit "end of the text"; text never spells it as one unit ("<" is a unit)
NOT_TEXT = "\ufffd"  # what bytes that are no character decode to: no unit
APOSTROPHES = "'\u2019"
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def classify(data: bytes, final: bool = False) -> tuple[str | None, str]:
    """(unit, "") when `data` (the text after the prompt) already settles the next unit,
    else (None, the word begun so far, "" when none has begun). `final`: the text ends there."""
    if final:
        unit, key = classify(data + b"\0")  # any non-word character ends the text's last unit
        return unit if unit != "\0" else EOS_TEXT, key
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # rare: decode again, holding an unfinished last character back
        text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data)
    start = 0
    while start < len(text) and text[start].isspace() and text[start] not in LINE_BREAKS:
        start += 1
    if start == len(text):
        return None, ""
    if not is_word_char(text[start]):
        return text[start], ""
    end = start
    while end < len(text) and is_word_char(text[end]):
        end += 1
    if end < len(text):
        return text[start:end], ""
    return None, text[start:end]


def lf_line_breaks(text: str) -> str:
    """`text` with each CRLF and each lone CR as LF: every text is read with the line breaks the models were
    trained on, whatever system typed it (docs/tokenizer.md, "Line breaks")."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def is_word_char(char: str) -> bool:
    return char.isalnum() or char in APOSTROPHES


def count_units(text: str) -> int:
    """How many units `text` holds: words, punctuation marks and line breaks (spaces are none)."""
    units, in_word = 0, False
    for char in text:
        if is_word_char(char):
            units += not in_word
            in_word = True
        else:
            in_word = False
            units += not char.isspace() or char in LINE_BREAKS
    return units


def is_whole(data: bytes) -> bool:
    """Whether `data` is whole UTF-8 text (no character unfinished or broken)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def leading_spaces(data: bytes) -> str:
    """The spaces a text starts with (line breaks are units, not spaces)."""
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data)
    end = 0
    while end < len(text) and text[end].isspace() and text[end] not in LINE_BREAKS:
        end += 1
    return text[:end]
