"""What the songwriting endpoints and commands run on a model, knowing nothing of HTTP.

The HTTP side (`app/serving/songwriting.py`) runs these on the model's engine worker
(`ModelEngine.call`), so a model is never used from two threads; the command line
(`commands.py`) runs them directly. A request no line or word can meet raises
`ConstraintError` (lines.py) with the field to blame: the HTTP side's 422.

- `lexicon()`: the project's dictionary, loaded once per process (a few seconds),
  under a lock so that two engines asking at once do not both load it.
- `qualifying_words`: the words `rhymes_with` / `syllables` allow, as the surface
  forms `/v1/predict` lists ("night" and "Night").
- `predict_words`: `/v1/predict` under those constraints (`constrained.py`).
- `analyze`: `/v1/analyze`'s stanzas (analysis.py), each line with its nats per
  character when the text's score is given (`scored_lines`; `model_scorer` for
  the command): the text is scored once, as a whole, and each piece's loss is
  spread over the characters it spells (`line_surprise`), so every character's
  share is counted once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lyricist.model.checkpoint import Checkpoint
from lyricist.model.network import LanguageModel
from lyricist.model.prompt_cache import PromptCache
from lyricist.model.scoring import Score
from lyricist.model.steps import Steps
from lyricist.model.tokenizer import Tokenizer
from lyricist.model.words import read_words

from .constrained import ConstrainedPrediction, constrained_steps, surface_forms
from .lexicon import Lexicon, counts_of, default_lexicon, is_whole_word
from .lines import ConstraintError

_LOCK = threading.Lock()


def lexicon() -> Lexicon:
    """The project's lexicon (its phonology's dictionary), loaded on first use."""
    with _LOCK:
        return default_lexicon()


def prepare(tokenizer: Tokenizer) -> Lexicon:
    """Everything the searches build once per dictionary and tokenizer (the lexicon, the rhyme indexes, the
    tokenizer's pieces as dictionary words, the common words a rhyme needs, the trie tables), built now: the HTTP side calls this off
    the engine's worker, so that no search's first step holds up the streams (hundreds of milliseconds)."""
    from .constrained import tables
    from .lines import common_words, piece_table
    from .phonology import Phonology

    lex = lexicon()
    with _LOCK:
        Phonology.load().warm_rhymes()
        piece_table(tokenizer, lex)
        common_words(tokenizer, lex)
        tables(tokenizer)
    return lex


_END_WORDS: dict[tuple, frozenset[str]] = {}


def end_words(checkpoint: Checkpoint) -> frozenset[str]:
    """The words a line may end on and a part of a line may be replaced by: the dictionary words the model read
    as words in its training text (its checkpoint's `words.json`, model/words.py; no fragment of one letter);
    for a checkpoint without them, those its tokenizer writes in at most two pieces (words its training text
    used often)."""
    from .lines import common_words

    key = (str(checkpoint.path), id(checkpoint.tokenizer))
    found = _END_WORDS.get(key)
    if found is None:
        lex, words = lexicon(), read_words(checkpoint.path)
        found = frozenset(w for w in words if w in lex.masks and is_whole_word(w)) if words else common_words(
            checkpoint.tokenizer, lex)
        _END_WORDS[key] = found
    return found


def word_is_known(word: str) -> bool:
    """Whether the dictionary knows `word` (after folding sung and dialect spellings); False means its
    sound is estimated."""
    from .phonology import Phonology

    return Phonology.load().is_known(word)


@lru_cache(maxsize=32)
def _with_syllables(lex_id: int, count: int) -> frozenset[str]:
    lex = lexicon()
    bit = 1 << count
    return frozenset(w for w, mask in lex.masks.items() if mask & bit)


def qualifying_words(rhymes_with: str | None, rhyme: str, syllables: int | None) -> tuple[str, ...]:
    """The surface forms of every dictionary word that rhymes with `rhymes_with` (`rhyme` kind) and has a
    pronunciation of `syllables` syllables (each constraint optional). Raises ConstraintError naming the
    constraint when no word meets them."""
    return _qualifying_words(id(lexicon()), rhymes_with, rhyme, syllables)


@lru_cache(maxsize=64)  # the page asks for the same few sets at every keystroke; a large one takes ~50 ms
def _qualifying_words(lex_id: int, rhymes_with: str | None, rhyme: str, syllables: int | None) -> tuple[str, ...]:
    lex = lexicon()
    words: frozenset[str] | None = None
    if rhymes_with is not None:
        words = lex.rhymes(rhymes_with, rhyme)
        if not words:
            raise ConstraintError("rhymes_with", f"no word in the dictionary rhymes with {rhymes_with!r} ({rhyme})")
    if syllables is not None:
        if words is None:
            words = _with_syllables(id(lex), syllables)
        else:
            fitting = frozenset(w for w in words if lex.masks[w] >> syllables & 1)
            if not fitting:
                counts = sorted({s for w in words for s in counts_of(lex.masks[w])})
                raise ConstraintError("syllables", f"no word that rhymes with {rhymes_with!r} ({rhyme}) has "
                                                   f"{syllables} syllables (they have {_listed(counts)})")
            words = fitting
        if not words:
            raise ConstraintError("syllables", f"no word in the dictionary has {syllables} syllables")
    return tuple(surface_forms(sorted(words or ())))


def _listed(counts: list[int]) -> str:
    return ", ".join(map(str, counts[:-1])) + (" or " if len(counts) > 1 else "") + str(counts[-1])


@dataclass
class WordPrediction:
    prediction: ConstrainedPrediction
    rhymes_with_known: bool | None  # None: no rhymes_with


def predict_words(model: LanguageModel, tokenizer: Tokenizer, prompt: str, top_k: int, temperature: float,
                  rhymes_with: str | None, rhyme: str, syllables: int | None,
                  prompts: PromptCache | None = None) -> Steps[WordPrediction]:
    """The next-word distribution after `prompt` restricted to the qualifying words, renormalised; one model
    call per step (model.steps)."""
    words = qualifying_words(rhymes_with, rhyme, syllables)
    prediction = yield from constrained_steps(model, tokenizer, prompt, words, top_k=top_k, temperature=temperature,
                                              prompts=prompts)
    return WordPrediction(prediction, None if rhymes_with is None else word_is_known(rhymes_with))


def analyze(text: str, score: Score | None = None, tokenizer: Tokenizer | None = None) -> list[dict[str, Any]]:
    """`/v1/analyze`'s stanzas (analysis.py); with the text's `score` under a model (and its tokenizer), each
    line also gets its `nats_per_char`."""
    from .analysis import analyze_text
    from .phonology import Phonology

    scorer = scored_lines(score, tokenizer) if score is not None else None
    return analyze_text(text, Phonology.load(), scorer=scorer)


def scored_lines(score: Score, tokenizer: Tokenizer) -> Callable[[str, Sequence[tuple[int, int]]], list[float]]:
    """analysis.py's `LineScorer` over a text already scored: a line's characters are its own and the line
    break that ends it, read in context."""

    def scorer(whole: str, spans: Sequence[tuple[int, int]]) -> list[float]:
        ends = [(a, b + 1 if whole[b:b + 1] == "\n" else b) for a, b in spans]
        return [math.nan if x is None else x for x in line_surprise(score, tokenizer, whole, ends)]

    return scorer


def model_scorer(model: LanguageModel, tokenizer: Tokenizer) -> Callable[[str, Sequence[tuple[int, int]]], list[float]]:
    """analysis.py's `LineScorer` with a model: the whole text scored once (for `lyricist analyze --model`)."""
    from lyricist.model.scoring import score_text

    return lambda whole, spans: scored_lines(score_text(model, tokenizer, whole), tokenizer)(whole, spans)


def line_surprise(score: Score, tokenizer: Tokenizer, text: str, spans: Sequence[tuple[int, int]]
                  ) -> list[float | None]:
    """Nats per character of each span [start, end) of the scored `text`: a piece's loss is spread evenly over
    the characters it spells (a piece that completes no character passes its loss on to the next one that
    does), and a span's figure is the loss of its characters over their number."""
    per_char: list[float] = []
    carried = 0.0
    for token, logprob in zip(tokenizer.token_texts(score.token_ids, text), score.logprobs.tolist()):
        carried -= logprob
        if token.text:
            share = carried / len(token.text)
            per_char.extend([share] * len(token.text))
            carried = 0.0
    if per_char and carried:
        per_char[-1] += carried
    out: list[float | None] = []
    for start, end in spans:
        chars = per_char[start:end]
        out.append(sum(chars) / len(chars) if chars else None)
    return out
