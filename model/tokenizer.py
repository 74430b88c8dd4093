"""A sentencepiece tokenizer that round-trips any Unicode string exactly, but the typographic quotes, dashes and
ellipsis its vocabulary lacks, which it reads as ASCII, and line breaks, which it reads as LF (a CRLF or a lone CR,
as typed on Windows or an old Mac, is read as the LF of every training text).

Why each setting is what it is: docs/tokenizer.md.
"""

from __future__ import annotations

import bisect
import codecs
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import sentencepiece as spm

from .units import lf_line_breaks

SPACE_MARK = "\u2581"  # sentencepiece's stand-in for a space
LITERAL_SPACE_MARK = "<literal-u2581>"  # control piece for a U+2581 in the text itself
USER_SYMBOLS = ("\n", "\t", "\r")
MIN_VOCAB_SIZE = 300  # 256 byte pieces + specials + the symbols above + room to learn
MAX_CHUNK_CHARS = 2000  # training "sentences": multi-line chunks of at most this many chars
# Typographic quotes, dashes and the ellipsis, which a corpus is often cleaned of (data/songs/build.py folds the
# quotes) and pasted lyrics are full of: a vocabulary without a piece for one reads it as the ASCII it stands for,
# not as bytes its model never saw (docs/tokenizer.md, "Typographic quotes, dashes and the ellipsis").
TYPOGRAPHIC_FOLDS = {"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u02bc": "'",
                     "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
                     "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
                     "\u2212": "-", "\u2026": "..."}

TRAINER_SETTINGS = {
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": False,
    "byte_fallback": True,
    "character_coverage": 1.0,
    "user_defined_symbols": list(USER_SYMBOLS),
    "control_symbols": [LITERAL_SPACE_MARK],
    "allow_whitespace_only_pieces": True,
    "split_digits": False,
    "hard_vocab_limit": False,
    "max_sentence_length": 4 * MAX_CHUNK_CHARS,  # bytes; a code point is at most 4
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
}


class TokenText(NamedTuple):
    """A piece as the API shows a token: the text it completes and its own bytes.

    A character spread over several byte pieces belongs to the piece that ends it
    (the others have ""), so the texts of a sequence's pieces join to its text."""

    text: str
    data: bytes


class Tokenizer:
    """Text <-> piece ids. `decode(encode(text)) == text` for every string but those with a CR or a character of
    `folds` (module docstring); `token_texts` gives even those back as typed."""

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self._sp.get_piece_size()
        self.bos_id = self._sp.bos_id()
        self.eos_id = self._sp.eos_id()
        self.unk_id = self._sp.unk_id()
        self._literal_mark_id = self._sp.piece_to_id(LITERAL_SPACE_MARK)
        if self._sp.id_to_piece(self._literal_mark_id) != LITERAL_SPACE_MARK:
            raise ValueError("tokenizer model was not trained by lyricist (no literal U+2581 piece)")
        self.piece_bytes = [self._bytes_of(i) for i in range(self.vocab_size)]
        # The characters this vocabulary reads as ASCII: those it has no piece for, where it has the ASCII's.
        self.folds = {typographic: plain for typographic, plain in TYPOGRAPHIC_FOLDS.items()
                      if not self._has_piece(typographic) and all(self._has_piece(c) for c in plain)}
        self._fold_table = str.maketrans(self.folds)
        self.pieces = [self._sp.id_to_piece(i) for i in range(self.vocab_size)]
        # Each piece's text when it is text on its own; None for a byte of a longer character and for the
        # unknown piece (U+FFFD), which a list of next pieces never shows.
        self.piece_texts = [_text_of(data) for data in self.piece_bytes]
        self._beginning: dict[str, list[int]] = {}
        # Pieces of spaces alone that longer pieces begin with: a prompt ending in one is read without it.
        self._leading_spaces = frozenset(
            i for i, text in enumerate(self.piece_texts) if text and not text.strip(" ") and not self._sp.is_byte(i)
            and any(len(self.piece_bytes[j]) > len(text) for j in self.pieces_beginning(text)))

    # -- building ---------------------------------------------------------------

    @classmethod
    def train(cls, text: str, vocab_size: int, model_type: str = "unigram") -> Tokenizer:
        """Learn a vocabulary of at most `vocab_size` pieces from `text`."""
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE}, got {vocab_size}")
        if model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
        if not text:
            raise ValueError("cannot train a tokenizer on an empty text")
        check_unicode(text)
        text = lf_line_breaks(text)
        writer = _BytesSink()
        spm.SentencePieceTrainer.train(
            sentence_iterator=_training_chunks(text),
            model_writer=writer,
            vocab_size=vocab_size,
            model_type=model_type,
            minloglevel=2,
            num_threads=1,  # a given corpus always yields the same vocabulary
            **TRAINER_SETTINGS,
        )
        return cls(writer.data)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        return cls(Path(path).read_bytes())

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.model_proto)

    # -- use --------------------------------------------------------------------

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Piece ids of `text`; `add_bos` marks it as the start of a text. A typographic quote, dash or ellipsis
        the vocabulary lacks is read as the ASCII it stands for (`folds`), a CRLF or lone CR as LF."""
        text = lf_line_breaks(text)
        if not text.isascii():
            check_unicode(text)
            if self.folds:
                text = text.translate(self._fold_table)
        ids = [self.bos_id] if add_bos else []
        # sentencepiece would read a literal U+2581 as a space, so the text is cut
        # at each one and the cuts are joined by a control piece that decodes to it.
        # One string per call: given a list, sentencepiece starts a thread pool (20 us to over 1 ms a call).
        for index, part in enumerate(text.split(SPACE_MARK)):
            if index:
                ids.append(self._literal_mark_id)
            ids.extend(self._sp.encode(part))
        return ids

    def encode_prompt(self, prompt: str) -> tuple[list[int], str]:
        """The pieces of a prompt the model reads (its start marker first), and the text the next piece must
        begin with. A prompt ending in spaces ends in a piece of spaces that the tokenizer spells a following
        word with ("red " + "rose" is "red", " rose"): read as a piece, it tells the model a word was cut off.
        So it is left unread and the next piece must begin with it (docs/model.md, "A prompt that ends in a
        space"); it still counts among the prompt's pieces (`prompt_tokens`)."""
        ids = self.encode(prompt, add_bos=True)
        if len(ids) > 1 and ids[-1] in self._leading_spaces:
            return ids[:-1], self.piece_texts[ids[-1]]
        return ids, ""

    def pieces_beginning(self, text: str) -> list[int]:
        """The pieces whose text begins with `text`."""
        if text not in self._beginning:
            data = text.encode("utf-8")
            self._beginning[text] = [i for i, piece in enumerate(self.piece_bytes) if piece.startswith(data)]
        return self._beginning[text]

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self.piece_bytes[i] for i in ids).decode("utf-8", errors="replace")

    def incremental_decoder(self, typed: str = "") -> IncrementalDecoder:
        """`typed`: the text the first piece begins with that the prompt already has (`encode_prompt`)."""
        return IncrementalDecoder(self, typed)

    def token_texts(self, ids: Iterable[int], text: str | None = None) -> list[TokenText]:
        """Each piece of a text as a token: joined, the texts are `decode(ids)`. Given the `text` that `ids` encode,
        each token shows that text's own characters instead (a folded character as it was typed, on the piece
        that ends its reading, as a character spelt in bytes is: an ellipsis read as three full stops shows "",
        "", "…"; a CRLF, on the piece of its LF): joined, the texts are `text` and their bytes its UTF-8."""
        decoder = self.incremental_decoder()
        tokens = [decoder.token(i) for i in ids]
        if tokens and (rest := decoder.flush()):  # an unfinished last character: U+FFFD, as `decode` has it
            tokens[-1] = tokens[-1]._replace(text=tokens[-1].text + rest)
        if text is not None and ("\r" in text or self.folds and not text.isascii()):
            # where each character of the text begins in the text as read (the CR of a CRLF is read as nothing)
            places = list(itertools.accumulate(
                (0 if c == "\r" and text[i + 1:i + 2] == "\n" else len(self.folds.get(c, c))
                 for i, c in enumerate(text)), initial=0))
            read = begin = 0
            for index, token in enumerate(tokens):
                read += len(token.text)
                end = bisect.bisect_right(places, read) - 1  # the characters read in full by this piece
                while end > begin and places[end] == places[end - 1]:  # a CR goes with the LF it comes before
                    end -= 1
                own = text[begin:end]
                if own != token.text:
                    tokens[index] = TokenText(own, own.encode())
                begin = end
        return tokens

    def _has_piece(self, text: str) -> bool:
        return not self._sp.is_unknown(self._sp.piece_to_id(text))

    def _bytes_of(self, piece_id: int) -> bytes:
        sp = self._sp
        if piece_id == self._literal_mark_id:
            return SPACE_MARK.encode()
        if sp.is_byte(piece_id):
            return bytes([int(sp.id_to_piece(piece_id)[3:5], 16)])  # "<0xE2>"
        if sp.is_unknown(piece_id):
            return "\ufffd".encode()
        if sp.is_control(piece_id):
            return b""
        return sp.id_to_piece(piece_id).replace(SPACE_MARK, " ").encode()


class IncrementalDecoder:
    """Feeds ids one at a time and returns exactly the text each one completes.

    A character spread over several byte pieces is held back until its last
    byte arrives, so the concatenation of what `push` returns always equals
    `Tokenizer.decode` of all the ids pushed (after `flush`).
    """

    def __init__(self, tokenizer: Tokenizer, typed: str = ""):
        self._piece_bytes = tokenizer.piece_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._typed = typed.encode("utf-8")  # the first piece's start that is the prompt's already

    def push(self, piece_id: int) -> str:
        return self.token(piece_id).text

    def token(self, piece_id: int) -> TokenText:
        """The text a piece completes, and its bytes: the one place a token's text and bytes are made."""
        data = self._piece_bytes[piece_id]
        if self._typed:  # the first piece: a piece that does not begin so is ruled out where it is chosen
            data, self._typed = data.removeprefix(self._typed), b""
        return TokenText(self._utf8.decode(data), data)

    def peek(self, piece_id: int) -> TokenText:
        """What `token(piece_id)` would give, the decoder left as it is (an alternative to the next piece)."""
        state, typed = self._utf8.getstate(), self._typed
        try:
            return self.token(piece_id)
        finally:
            self._utf8.setstate(state)
            self._typed = typed

    def flush(self) -> str:
        """The text still held back (an unfinished character decodes as U+FFFD)."""
        return self._utf8.decode(b"", final=True)


def _text_of(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\ufffd" in text else text


def check_unicode(text: str) -> str:
    """`text`, refusing lone surrogates (JSON can carry "\\ud800"): they are not Unicode characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"text is not valid Unicode: lone surrogate U+{ord(text[error.start]):04X} at position {error.start}"
        ) from None
    return text


def _training_chunks(text: str) -> Iterator[str]:
    """Multi-line pieces of `text`, so the trainer sees newlines; cut as `encode` cuts."""
    yield " "  # a space piece must exist even if the corpus has none, or spaces fall back to bytes
    for part in text.split(SPACE_MARK):
        lines = part.splitlines(keepends=True)
        chunk = ""
        for line in lines:
            while len(line) > MAX_CHUNK_CHARS:
                yield line[:MAX_CHUNK_CHARS]
                line = line[MAX_CHUNK_CHARS:]
            if len(chunk) + len(line) > MAX_CHUNK_CHARS:
                yield chunk
                chunk = ""
            chunk += line
        if chunk:
            yield chunk


class _BytesSink:
    """The file-like object sentencepiece writes its model into."""

    def __init__(self):
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data
