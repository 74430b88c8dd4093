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
- `line_surprise`: each line's nats per character within a scored text, for
  `/v1/analyze` (the text scored once; each piece's loss spread over the
  characters it spells, so every character's share is counted once).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from lyricist.model.network import LanguageModel
from lyricist.model.prompt_cache import PromptCache
from lyricist.model.scoring import Score
from lyricist.model.tokenizer import Tokenizer

from .constrained import ConstrainedPrediction, constrained_next_words, surface_forms
from .lexicon import Lexicon, counts_of, default_lexicon
from .lines import ConstraintError

_LOCK = threading.Lock()


def lexicon() -> Lexicon:
    """The project's lexicon (its phonology's dictionary), loaded on first use."""
    with _LOCK:
        return default_lexicon()


def word_is_known(word: str) -> bool:
    """Whether the dictionary knows `word` (after folding sung and dialect spellings); False means its
    sound is estimated."""
    phonology = _phonology()
    if phonology is not None:
        for name in ("is_known", "known"):
            test = getattr(phonology, name, None)
            if callable(test):
                return bool(test(word))
        pronunciations = getattr(phonology, "pronunciations", None)
        if callable(pronunciations):
            return any(getattr(p, "known", True) for p in pronunciations(word))
    return word.lower() in lexicon().masks


@lru_cache(maxsize=1)
def _phonology():
    try:
        from .phonology import Phonology
    except ImportError:
        return None
    with _LOCK:
        return Phonology.load()


@lru_cache(maxsize=32)
def _with_syllables(lex_id: int, count: int) -> frozenset[str]:
    lex = lexicon()
    bit = 1 << count
    return frozenset(w for w, mask in lex.masks.items() if mask & bit)


def qualifying_words(rhymes_with: str | None, rhyme: str, syllables: int | None) -> list[str]:
    """The surface forms of every dictionary word that rhymes with `rhymes_with` (`rhyme` kind) and has a
    pronunciation of `syllables` syllables (each constraint optional). Raises ConstraintError naming the
    constraint when no word meets them."""
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
    return surface_forms(sorted(words or ()))


def _listed(counts: list[int]) -> str:
    return ", ".join(map(str, counts[:-1])) + (" or " if len(counts) > 1 else "") + str(counts[-1])


@dataclass
class WordPrediction:
    prediction: ConstrainedPrediction
    rhymes_with_known: bool | None  # None: no rhymes_with


def predict_words(model: LanguageModel, tokenizer: Tokenizer, prompt: str, top_k: int, temperature: float,
                  rhymes_with: str | None, rhyme: str, syllables: int | None,
                  prompts: PromptCache | None = None) -> WordPrediction:
    """The next-word distribution after `prompt` restricted to the qualifying words, renormalised."""
    words = qualifying_words(rhymes_with, rhyme, syllables)
    prediction = constrained_next_words(model, tokenizer, prompt, words, top_k=top_k, temperature=temperature,
                                        prompts=prompts)
    return WordPrediction(prediction, None if rhymes_with is None else word_is_known(rhymes_with))


def analyze(text: str) -> list[dict[str, Any]]:
    """`analysis.analyze_text(text)` as plain data: stanzas, each {"scheme", "lines": [{text, syllables, ...}]},
    the fields of /v1/analyze but `nats_per_char` (which needs a model: `with_surprise`)."""
    from .analysis import analyze_text

    result = analyze_text(text)
    stanzas = _get(result, "stanzas") if not isinstance(result, list) else result
    out = []
    for stanza in stanzas:
        lines = [{name: _plain(_get(line, name)) for name in LINE_FIELDS} for line in _get(stanza, "lines")]
        out.append({"scheme": _get(stanza, "scheme"), "lines": lines})
    return out


LINE_FIELDS = ("text", "syllables", "stress", "end_word", "rhyme_part", "rhyme", "unknown_words")


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, set, frozenset)) else value


def with_surprise(stanzas: list[dict[str, Any]], score: Score, tokenizer: Tokenizer,
                  text: str) -> list[dict[str, Any]]:
    """Each analysed line with its `nats_per_char` within `text` (scored once, as a whole: each line is read
    after the lines before it). A line's characters are its text and the line break that ends it, found in
    `text` in order."""
    spans, cursor = [], 0
    for stanza in stanzas:
        for line in stanza["lines"]:
            start = text.find(line["text"], cursor)
            if start < 0:  # not found as written: no figure rather than a wrong one
                spans.append((0, 0))
                continue
            end = start + len(line["text"])
            if text[end:end + 1] == "\n":
                end += 1
            spans.append((start, end))
            cursor = end
    figures = iter(line_surprise(score, tokenizer, spans))
    return [{**stanza, "lines": [{**line, "nats_per_char": next(figures)} for line in stanza["lines"]]}
            for stanza in stanzas]


def line_surprise(score: Score, tokenizer: Tokenizer, spans: Sequence[tuple[int, int]]) -> list[float | None]:
    """Nats per character of each span [start, end) of the scored text: a piece's loss is spread evenly over
    the characters it spells (a piece that completes no character passes its loss on to the next one that
    does), and a span's figure is the loss of its characters over their number."""
    per_char: list[float] = []
    carried = 0.0
    for token, logprob in zip(tokenizer.token_texts(score.token_ids), score.logprobs.tolist()):
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


def analyze_with_model(text: str, model: LanguageModel, tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """`analyze(text)` with each line's `nats_per_char` under `model` (for `lyricist analyze --model`)."""
    from lyricist.model.scoring import score_text

    return with_surprise(analyze(text), score_text(model, tokenizer, text), tokenizer, text)
