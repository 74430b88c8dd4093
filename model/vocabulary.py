"""What the word searches need to know about each piece of a vocabulary, worked out once per tokenizer.

Per piece, a `Piece` record of its text facts; over the whole vocabulary,
boolean masks (tensors indexed by piece id) for the questions a search asks of
every piece at once: does it settle a unit, begin a word, end a word in
progress, lengthen one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import NamedTuple

import torch

from .tokenizer import Tokenizer
from .units import NOT_TEXT, classify, is_whole, is_word_char, leading_spaces


class Piece(NamedTuple):
    data: bytes  # its UTF-8 bytes
    whole: bool  # whole text on its own (not a fragment of a character)
    lead: str  # the spaces it starts with
    begun: str  # read at the start of a unit: the word it begins and leaves open ("" if none)
    word_text: str | None  # its text when whole and all word characters: it lengthens a word in progress
    begins_word: bool  # `begun` and whole: what follows it reads as the rest of a word


class Vocabulary:
    """`spelling(data)` is the tokenizer's own pieces for a text (None when it cannot
    tell yet: an unfinished UTF-8 character). The searches rely on spellings
    being prefix-closed — the start of a spelling spells its own text — which
    holds for a unigram tokenizer (its best segmentation of a text starts with
    the best segmentation of that start) and is tested on the shipped one.
    """

    def __init__(self, piece_bytes: Sequence[bytes], eos_id: int, spelling: Callable[[bytes], list[int] | None]):
        self.piece_bytes = piece_bytes
        self.eos_id = eos_id
        self.spelling = spelling
        # Read right after the prompt, or after spaces only: the unit each piece settles, or the word it begins.
        settled = [classify(b"", final=True) if i == eos_id else classify(data) for i, data in enumerate(piece_bytes)]
        own = [i == eos_id or self.spells(piece_bytes[i], (i,)) for i in range(len(piece_bytes))]
        self.pieces = [
            Piece(data, whole, leading_spaces(data), begun, _word_text(data), bool(begun) and whole)
            for data, (_, begun), whole in zip(piece_bytes, settled, map(is_whole, piece_bytes))
        ]
        # Bytes that are no text settle nothing: their mass is no unit's.
        settles = [unit is not None and unit != NOT_TEXT and ok for (unit, _), ok in zip(settled, own)]
        self.units = sorted({unit for (unit, _), s in zip(settled, settles) if s})  # what one piece can settle
        unit_ids = {u: i for i, u in enumerate(self.units)}
        self.leads = sorted({p.lead for p in self.pieces})
        lead_ids = {lead: i for i, lead in enumerate(self.leads)}

        # At the start, per piece: whether it settles a unit, and which (an index into `units`); whether it
        # leaves the unit open; its leading spaces (an index into `leads`); whether it begins a word.
        self.start_settles = torch.tensor(settles)
        self.start_unit = torch.tensor([unit_ids.get(unit, 0) for unit, _ in settled])
        self.start_opens = torch.tensor([unit is None and ok for (unit, _), ok in zip(settled, own)])
        self.start_lead_id = torch.tensor([lead_ids[p.lead] for p in self.pieces])
        self.start_word = torch.tensor([p.begins_word for p in self.pieces])
        # After a whole word in progress: pieces whose text starts a new unit end it (so does the end of the
        # text); pieces all of word characters lengthen it.
        first = [_first_char(data) for data in piece_bytes]
        self.ends_word = torch.tensor([i == eos_id or (c is not None and not is_word_char(c))
                                       for i, c in enumerate(first)])
        self.continues_word = torch.tensor([p.word_text is not None for p in self.pieces])
        # Pieces with word characters and then others ("s,"): with them one unit has several spellings
        # (" is," and " is."), so a listed unit's bound takes every node under it, not only those on one spelling.
        self.mixed_words = any((text := _lead_stripped(data)) and is_word_char(text[0])
                               and not all(is_word_char(c) for c in text) for data in piece_bytes)

    def spells(self, data: bytes, path: tuple[int, ...]) -> bool:
        """Whether `path` is the tokenizer's own spelling of `data` (True while a character is unfinished)."""
        spelling = self.spelling(data)
        return spelling is None or tuple(spelling) == path


@lru_cache(maxsize=8)
def vocabulary_of(tokenizer: Tokenizer) -> Vocabulary:
    def spelling(data: bytes) -> list[int] | None:
        try:
            return tokenizer.encode(data.decode("utf-8"))
        except UnicodeError:  # an unfinished character: its spelling is checked once it is whole
            return None

    return Vocabulary(tokenizer.piece_bytes, tokenizer.eos_id, spelling)


def _first_char(data: bytes) -> str | None:
    """The first character of a piece that decodes on its own, else None (empty, or a UTF-8 fragment)."""
    return data.decode("utf-8")[0] if data and is_whole(data) else None


def _word_text(data: bytes) -> str | None:
    """The piece's text when it is whole and only word characters, else None."""
    text = data.decode("utf-8") if data and is_whole(data) else ""
    return text if text and all(is_word_char(c) for c in text) else None


def _lead_stripped(data: bytes) -> str:
    """A piece's whole text after its leading spaces ("" for a fragment of a character)."""
    return data.decode("utf-8").lstrip(" ") if is_whole(data) else ""
