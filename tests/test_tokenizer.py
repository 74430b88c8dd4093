import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lyricist.model import Tokenizer
from lyricist.model.tokenizer import MIN_VOCAB_SIZE

TRICKY = ["\n", "\r", "\r\n", "\t", " ", "  ", "\u2581", "\x00", "\ufeff", "\u200b", "\u00a0", "\u3000", "\U0010ffff",
          "\ufffd", "\uffff", "😀", "👩‍👩‍👧", "漢", "e\u0301", "<0x41>", "<s>", "</s>", "<unk>", "<literal-u2581>",
          "\u2019", "\u201c", "\u02bc", "\u2013", "\u2014", "\u2212", "\u2026"]
# Every Unicode scalar value (codec="utf-8" leaves out only lone surrogates, which are not characters).
any_text = st.lists(st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY)), max_size=120).map("".join)
hypothesis_settings = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def as_read(text: str) -> str:
    """The text as the test tokenizer reads it: its corpus (tiny shakespeare, ASCII) has the apostrophe, the
    hyphen and the full stop and no double quote, so the typographic apostrophes, dashes and ellipsis are read as
    those and the double quotes stay bytes; and every line break as LF, whatever system typed it."""
    return re.sub("[\u2010-\u2015\u2212]", "-", re.sub("[\u2018\u2019\u201b\u02bc]", "'", text)).replace(
        "\u2026", "...").replace("\r\n", "\n").replace("\r", "\n")


def test_the_typographic_quotes_a_vocabulary_lacks_are_read_as_ascii(tokenizer):
    assert tokenizer.encode("I don\u2019t \u2018know\u2019") == tokenizer.encode("I don't 'know'")
    assert tokenizer.encode("\u201cwhy\u201d") != tokenizer.encode('"why"')  # no piece for '"' either: bytes
    # a corpus that writes them gets pieces for them, and reads them as they are
    own = Tokenizer.train("I don\u2019t know, \u201cwhy\u201d, I don't know\n" * 200, 400)
    assert "\u2019" not in own.folds and "\u201c" not in own.folds and "\u2018" in own.folds
    assert own.decode(own.encode("don\u2019t \u201cwhy\u201d")) == "don\u2019t \u201cwhy\u201d"


def test_an_ellipsis_a_vocabulary_lacks_is_read_as_three_full_stops_and_shown_as_typed(tokenizer):
    text = "I waited\u2026 and waited\u2026"
    ids = tokenizer.encode(text)
    assert ids == tokenizer.encode("I waited... and waited...")
    tokens = [t.text for t in tokenizer.token_texts(ids, text)]
    assert "".join(tokens) == text and tokens[-3:] == ["", "", "\u2026"]  # on the piece that ends its reading


def test_the_typographic_dashes_a_vocabulary_lacks_are_read_as_the_hyphen(tokenizer):
    assert tokenizer.encode("well\u2010known \u2013 and gone \u2014 1\u22122") == tokenizer.encode(
        "well-known - and gone - 1-2")
    own = Tokenizer.train("so \u2014 it goes, well-known\n" * 200, 400)  # a corpus that writes the em dash
    assert "\u2014" not in own.folds and own.folds["\u2013"] == "-"
    assert own.decode(own.encode("so \u2014 it goes")) == "so \u2014 it goes"


@hypothesis_settings
@given(text=any_text)
def test_any_string_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == as_read(text)


@hypothesis_settings
@given(text=any_text)
def test_incremental_decoding_of_encoded_text_rebuilds_it(tokenizer, text):
    decoder = tokenizer.incremental_decoder()
    emitted = [decoder.push(i) for i in tokenizer.encode(text)] + [decoder.flush()]
    assert "".join(emitted) == as_read(text)
    assert all("\ufffd" not in part for part in emitted if "\ufffd" not in text)


@hypothesis_settings
@given(ids=st.lists(st.integers(min_value=0, max_value=999), max_size=60))
def test_incremental_decoding_of_any_ids_equals_decode(tokenizer, ids):
    # Random ids include byte pieces in any order: broken UTF-8 must come out
    # exactly as the one-shot decode shows it.
    decoder = tokenizer.incremental_decoder()
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == tokenizer.decode(ids)


@hypothesis_settings
@given(left=any_text, right=any_text)
def test_a_text_cut_before_a_space_that_follows_a_non_space_encodes_as_its_two_parts(tokenizer, left, right):
    # sentencepiece splits before each space: what follows such a cut never changes the pieces before it
    # (/v1/alternatives reads the part of a line before a gap once for every candidate: docs/tokenizer.md)
    left = (left or "a").rstrip() or "a"
    if left[-1].isspace():
        left += "a"
    right = " " + right
    assert tokenizer.encode(left + right) == tokenizer.encode(left) + tokenizer.encode(right)


def test_whole_corpus_round_trips(tokenizer, shakespeare_text):
    ids = tokenizer.encode(shakespeare_text)
    assert len(ids) < len(shakespeare_text) / 2  # it learned real pieces, not just characters
    assert tokenizer.decode(ids) == shakespeare_text
    decoder = tokenizer.incremental_decoder()
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == shakespeare_text


def test_spaces_and_newlines_are_kept_exactly(tokenizer):
    text = "  ROMEO:\n\n\tBut soft!   what light\n through yonder window breaks?  "
    assert tokenizer.decode(tokenizer.encode(text)) == text
    newline = tokenizer.encode("\n")
    assert len(newline) == 1 and tokenizer.pieces[newline[0]] == "\n"


def test_windows_and_old_mac_line_breaks_are_read_as_lf_and_shown_as_typed(tokenizer):
    lf = "ROMEO:\nBut soft!\n\nwhat light\n"
    for typed in (lf.replace("\n", "\r\n"), lf.replace("\n", "\r"), "ROMEO:\r\nBut soft!\r\rwhat light\n"):
        ids = tokenizer.encode(typed)
        assert ids == tokenizer.encode(lf)
        tokens = [t.text for t in tokenizer.token_texts(ids, typed)]
        assert "".join(tokens) == typed
        assert all(t in ("\n", "\r\n", "\r") for t in tokens if "\r" in t or "\n" in t)  # one token a break
    assert tokenizer.token_texts(tokenizer.encode("a\r\n"), "a\r\n")[-1].text == "\r\n"  # the CR with its LF


def test_multibyte_character_is_emitted_only_when_complete(tokenizer):
    ids = tokenizer.encode("😀")
    assert len(ids) == 4  # not in the vocabulary: four byte pieces
    decoder = tokenizer.incremental_decoder()
    assert [decoder.push(i) for i in ids] == ["", "", "", "😀"]


def test_literal_space_mark_is_not_a_space(tokenizer):
    assert tokenizer.encode("a\u2581b") != tokenizer.encode("a b")
    assert tokenizer.decode(tokenizer.encode("a\u2581b")) == "a\u2581b"


def test_start_of_text_marker(tokenizer):
    ids = tokenizer.encode("hi", add_bos=True)
    assert ids[0] == tokenizer.bos_id and ids[1:] == tokenizer.encode("hi")
    assert tokenizer.decode(ids) == "hi"


def test_save_and_load_keep_the_vocabulary(tokenizer, tmp_path, shakespeare_text):
    tokenizer.save(tmp_path / "t.model")
    loaded = Tokenizer.load(tmp_path / "t.model")
    sample = shakespeare_text[:5000]
    assert loaded.encode(sample) == tokenizer.encode(sample)
    assert loaded.pieces == tokenizer.pieces


def test_training_is_deterministic():
    text = "the cat sat on the mat\nthe dog sat on the log\n" * 200
    assert Tokenizer.train(text, 400).model_proto == Tokenizer.train(text, 400).model_proto


@pytest.mark.parametrize(
    "text, vocab_size, message",
    [("", 1000, "empty"), ("abc", 10, f"at least {MIN_VOCAB_SIZE}"), ("abc", 1000, None)],
)
def test_training_input_is_checked(text, vocab_size, message):
    if message is None:
        tokenizer = Tokenizer.train(text, vocab_size)  # tiny text: the vocabulary is what it can be
        assert tokenizer.decode(tokenizer.encode("abc cab")) == "abc cab"
    else:
        with pytest.raises(ValueError, match=message):
            Tokenizer.train(text, vocab_size)


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff", "\U0001F600\udc00"])
def test_lone_surrogates_are_refused_by_position(tokenizer, text):
    position = next(i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF)
    with pytest.raises(ValueError, match=f"lone surrogate U\\+{ord(text[position]):04X} at position {position}"):
        tokenizer.encode(text)


MIXED = "Ça va? 你好 🎸"


@hypothesis_settings
@given(text=any_text)
def test_token_texts_join_to_the_text_and_their_bytes_to_its_utf8(tokenizer, text):
    ids = tokenizer.encode(text)
    tokens = tokenizer.token_texts(ids, text)  # each token as the text has it, a quote read as ASCII as typed
    assert "".join(t.text for t in tokens) == text
    assert b"".join(t.data for t in tokens) == text.encode("utf-8")
    plain = tokenizer.token_texts(ids)
    assert len(plain) == len(tokens) and "".join(t.text for t in plain) == as_read(text)
    if "\u2026" not in text:  # else an ellipsis read as three pieces shows on the last: below
        assert [t.text for t in plain] == [as_read(t.text) for t in tokens]


def test_a_character_spread_over_byte_pieces_belongs_to_the_piece_that_ends_it(tokenizer):
    ids = tokenizer.encode(MIXED)
    tokens = tokenizer.token_texts(ids)
    guitar = [t for t in tokens if t.data in (b"\xf0", b"\x9f", b"\x8e", b"\xb8")]
    assert [t.text for t in guitar] == ["", "", "", "🎸"]  # not in this vocabulary: four byte pieces
    assert "".join(t.text for t in tokens) == MIXED and "\ufffd" not in "".join(t.text for t in tokens)
    assert [t.data for t in tokens] == [tokenizer.piece_bytes[i] for i in ids]


def test_peeking_at_a_next_piece_leaves_the_decoder_as_it_was(tokenizer):
    ids = tokenizer.encode("🎸")
    decoder = tokenizer.incremental_decoder()
    decoder.push(ids[0])
    decoder.push(ids[1])
    assert decoder.peek(ids[2]).text == "" and decoder.peek(ids[2]).data == b"\x8e"
    space = tokenizer.encode(" ")[0]
    assert decoder.peek(space).text == "\ufffd "  # what that piece would put in the text: a broken character
    assert decoder.push(ids[2]) == "" and decoder.peek(ids[3]).text == "🎸" and decoder.push(ids[3]) == "🎸"


def test_a_piece_has_a_text_of_its_own_unless_it_is_a_byte_of_a_longer_character(tokenizer):
    texts = dict(zip(tokenizer.piece_bytes, tokenizer.piece_texts))
    assert texts[b"\xf0"] is None and texts[b"\x8e"] is None and texts[b"A"] == "A"
    assert tokenizer.piece_texts[tokenizer.unk_id] is None  # U+FFFD
    assert tokenizer.piece_texts[tokenizer.encode(" the")[0]] == " the"
