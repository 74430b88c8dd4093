"""Other words for a part of one line, read with both sides (`/v1/alternatives`, `lyricist alternatives`).

A songwriter revises: "a better word than *cold* here". The part is a span of one line (a word, a phrase,
or an empty span to insert at). Two passes, and at a line's end the stanza's rhyme:

1. **Proposals, from the left.** The model reads the text before the part and proposes replacements of 1 to
   `max_words` words, each word the exact next-word distribution over the words allowed
   (constrained.py): the model's training words the dictionary knows (`words.json`) and the text's own
   dictionary words (a name, a word the model never read), narrowed by `syllables`, `stress` (meter.py) and
   `rhymes_with` (its last word). A longer replacement grows word by word from `BEAM` partial ones, the
   likeliest that open with different words, and never by the word it ends on. The `POOL` likeliest complete
   ones go on.
2. **Ranking, with the right.** Each proposal is put in place and read with the rest of its line (at most
   `NEAR_CHARS`); the `RANKED` best by that are read again with the text up to the end of the part's stanza
   (at most `RIGHT_CHARS` characters after the part). The text before the part, up to the last place where
   the tokenizer's pieces cannot depend on what follows (`_last_cut`), is read once, and so are the pieces
   every version of both readings shares after it (model.scoring `read_prefix`); then every version's own
   pieces side by side (`read_continuations`). `logprob` is the log probability of the text from its start to
   the stanza's end with the candidate in place, as `/v1/score` would give it; `prob` is its share among the
   candidates returned and the original. Where the checkpoint carries a backward model, that model reads the
   `RANKED` too, from the stanza's end back to the start of the line before the part's (at most
   `BACKWARD_LEFT_CHARS` before the part), and a candidate's weight mixes the two readings
   (`BACKWARD_SHARE`): two estimates of one text's probability, the second reading the right side first. (Reading every proposal so, before the cut, found the same words.)
3. **The stanza's rhyme, at a line's end.** Where the part ends its line, the words rhyming with the ends of
   the stanza's nearby lines join the proposals, and a candidate that rhymes so is weighed `RHYME_BONUS`
   (in log probability) in both rankings and in `prob`: the model reads pieces, not sounds, and keeps a
   rhyme far more weakly than songs do (docs/songwriting.md gives the fit).

Words are joined with one space; a space is added before a candidate that follows a word character or a mark
that closes (`Saturday,` then *Sunday*: a gap taken out after a comma) and after one that a word character or a
mark that opens follows, so that no candidate fuses with its neighbours. Case variants of a
word ("cold", "Cold") are one candidate: the one the model finds likelier in place. A text that writes its
apostrophes ’ gets its candidates so ("won’t"), each read in place as it is shown (a model whose vocabulary
lacks ’ reads it as ': docs/tokenizer.md). The `n` shown are the best, but for one that differs from
`SAME_OPENING` better ones only in its last word, which gives way to the next while others are left.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lyricist.model.memory import State
from lyricist.model.network import MIN_CALL_PIECES, LanguageModel
from lyricist.model.prompt_cache import CHUNK, PromptCache
from lyricist.model.scoring import read_continuations, read_prefix
from lyricist.model.steps import Steps, run_to_end
from lyricist.model.tokenizer import Tokenizer
from lyricist.model.units import is_word_char

from .constrained import constrained_steps, surface_forms
from .lexicon import MAX_SYLLABLES, Lexicon, add_word, is_whole_word, lowest
from .lines import ConstraintError, check_stress
from .meter import scansion
from .phonology import Phonology
from .spelling import APOSTROPHES

MAX_WORDS = 4  # the longest replacement
MAX_N = 32  # candidates a request may ask for
POOL = 160  # proposals read with the rest of their line
RANKED = 31  # the best of them by that, read with the whole right side (with the original: 32 rows)
SONG_WORDS = 40  # the text's own words added to them
NEAR_CHARS = 60  # the most of the rest of the line read in the first pass
BEAM = 4  # partial replacements extended by a word
NEXT_WORDS = 8  # words each partial replacement is extended by
RIGHT_CHARS = 400  # the most right-hand text read with each candidate
RHYME_BONUS = 4.0  # log-weight for a line end that rhymes with another in its stanza (fitted: docs/songwriting.md)
RHYME_LINES = 4  # the stanza's lines either side of the part's whose ends count as its rhymes
PROPOSAL_ROWS = 1024  # model rows one next-word search may spend
NEXT_WORD_ROWS = 384  # ... one that extends a partial replacement, of which only NEXT_WORDS words are kept
BACKWARD_SHARE = 0.5  # the backward reading's share in a candidate's weight
BACKWARD_LINES = 1  # lines before the part's that the backward model reads after the candidate
BACKWARD_LEFT_CHARS = 200  # ... at most this much of them (a line may be a whole pasted paragraph)
ENCODE_STEP_CHARS = 100_000  # characters of versions encoded between two steps (model.steps)
SAME_OPENING = 2  # candidates shown that differ only in their last word, while others are left
PROPOSAL_TOLERANCE = 1e-3  # a proposal search follows pieces down to this share of the words' mass (constrained.py)
_WORD = re.compile(r"(?:[^\W_]|['\u2019])+")
_CLOSING_MARKS = frozenset(",.;:!?)]}”…")  # a word after one stands a space apart
_OPENING_MARKS = frozenset("([{“")  # ... and before one
_STANZA_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclass
class Alternative:
    text: str
    logprob: float  # of the text up to the right side's end, with this in place
    prob: float = 0.0  # its share among the candidates returned and the original
    syllables: int | None = None  # None: a word the dictionary lacks (the original only)
    stress: str | None = None
    rhymes_with: str | None = None  # the end of another line of the stanza it rhymes with (a line end only)
    backward: float | None = None  # a backward model's log probability of what it reads with this in place

    @property
    def weight(self) -> float:
        """What candidates are ranked by: the model's log probability (mixed with a backward model's reading,
        whose missing start is the same for every candidate), and the stanza's rhyme."""
        reading = self.logprob if self.backward is None else (
            (1 - BACKWARD_SHARE) * self.logprob + BACKWARD_SHARE * self.backward)
        return reading + _rhyme_weight(self.rhymes_with)

    def as_dict(self) -> dict:
        return {"text": self.text, "prob": self.prob, "syllables": self.syllables, "stress": self.stress,
                "logprob": self.logprob, "rhymes_with": self.rhymes_with}


@dataclass
class AlternativesResult:
    original: Alternative
    rank: int  # the original's place among every candidate ranked and itself, from 1
    alternatives: list[Alternative]  # best first; the original among them when it ranks in (and is not empty)
    prompt_tokens: int  # the pieces of the text read, as given: its start marker, up to where the reading ends
    rows: int  # model rows spent proposing


def part_of_line(text: str, start: int, end: int) -> None:
    """Raises ValueError (naming `start` or `end`) unless text[start:end] is a part of one line that begins
    and ends at word boundaries."""
    if not 0 <= start <= len(text):
        raise PartError("start", f"start must be an offset from 0 to {len(text)} (the text's length), got {start}")
    if not 0 <= end <= len(text):
        raise PartError("end", f"end must be an offset from 0 to {len(text)} (the text's length), got {end}")
    if end < start:
        raise PartError("end", f"end ({end}) must not be before start ({start})")
    if "\n" in text[start:end]:
        raise PartError("end", "the part must lie within one line: text[start:end] crosses a line break")
    for name, at in (("start", start), ("end", end)):
        if 0 < at < len(text) and is_word_char(text[at - 1]) and is_word_char(text[at]):
            raise PartError(name, f"{name} ({at}) falls inside the word {_word_at(text, at)!r}: a part begins "
                                    f"and ends between words")


class PartError(ValueError):
    """A bad part or value, naming its field."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def _word_at(text: str, at: int) -> str:
    left, right = at, at
    while left > 0 and is_word_char(text[left - 1]):
        left -= 1
    while right < len(text) and is_word_char(text[right]):
        right += 1
    return text[left:right]


def default_max_words(part: str) -> int:
    return min(MAX_WORDS, max(1, len(_WORD.findall(part))))


def generate_alternatives(*args, **kwargs) -> AlternativesResult:
    """`alternative_steps` run to its end (the command line, the tests)."""
    return run_to_end(alternative_steps(*args, **kwargs))


@torch.inference_mode()
def alternative_steps(
    model: LanguageModel,
    tokenizer: Tokenizer,
    lexicon: Lexicon,
    phonology: Phonology,
    text: str,
    start: int,
    end: int,
    vocabulary: frozenset[str],
    n: int = 10,
    syllables: int | None = None,
    stress: str | None = None,
    rhymes_with: str | None = None,
    rhyme: str = "perfect",
    max_words: int | None = None,
    prompts: PromptCache | None = None,
    backward: LanguageModel | None = None,
) -> Steps[AlternativesResult]:
    """Up to `n` replacements for text[start:end], best first (module docstring). `vocabulary`: the lower-case
    words a candidate may use besides the text's own (the model's training words the dictionary knows). Raises
    ValueError for a bad part or value, ConstraintError when no word meets the constraints. One model call per
    step."""
    part_of_line(text, start, end)
    if not 1 <= n <= MAX_N:
        raise PartError("n", f"n must be from 1 to {MAX_N}, got {n}")
    if stress is not None:
        check_stress(stress, syllables)
        syllables = len(stress)
    if syllables is not None and not 1 <= syllables <= MAX_SYLLABLES:
        raise PartError("syllables", f"syllables must be from 1 to {MAX_SYLLABLES}, got {syllables}")
    max_words = default_max_words(text[start:end]) if max_words is None else max_words
    if not 1 <= max_words <= MAX_WORDS:
        raise PartError("max_words", f"max_words must be from 1 to {MAX_WORDS}, got {max_words}")
    vocabulary = vocabulary | _text_words(text, lexicon)
    in_style = _apostrophe_style(text)
    rule = _PhraseRule(lexicon, vocabulary, syllables, stress, rhymes_with, rhyme)
    if max_words == 1 and not rule.next_forms(1, last_word=True):
        wanted = [f"stress {stress!r}" if stress is not None else f"{syllables} syllables" if syllables else "",
                  f"a rhyme with {rhymes_with!r}" if rhymes_with is not None else ""]
        field = "stress" if stress is not None else "syllables" if syllables is not None else "rhymes_with"
        raise ConstraintError(field, f"no word the model read in training or the text uses has "
                                     f"{' and '.join(w for w in wanted if w)} (with max_words 1)")
    prompts = prompts or PromptCache(model)
    left, original = text[:start], text[start:end]
    line_start = text.rfind("\n", 0, start) + 1
    head = _last_cut(text, line_start, start)  # the text before it is the same in every version: read once
    if head == line_start and _cut_at_insert(text, start, end):  # a line with no space before the part
        head = start
    prefix_logprob, *after = yield from _read_before(model, tokenizer.encode(text[:head], add_bos=True), prompts)
    proposals, rows = yield from _propose(model, tokenizer, rule, left, max_words, prompts)
    doubled = _neighbours(text, start, end)
    versions = [original] + _first_words([in_style(words) for words, _ in proposals
                                          if _plain(words).lower() != _plain(original).lower()
                                          and not _doubles(words, doubled)], POOL)
    versions += [words for words in _song_words(text, start, end, rule, versions) if not _doubles(words, doubled)]
    line_ends = _other_line_ends(text, start, end) if rhymes_with is None else []
    versions += [in_style(word) for word in _rhyming_words(line_ends, rule, versions) if not _doubles(word, doubled)]
    if not proposals and len(versions) == 1:
        field = "rhymes_with" if rule.rhyming is not None else ("stress" if rule.stress else "syllables")
        raise ConstraintError(field, "no replacement the model proposes or the text holds meets the constraints")
    rhyme_of = [_rhyme_in(words, line_ends, lexicon) for words in versions]

    stanza = _STANZA_BREAK.search(text, end)
    right = text[end:stanza.start() if stanza else len(text)][:RIGHT_CHARS]
    line_end = right.find("\n")
    near = right[: min(NEAR_CHARS, len(right) if line_end < 0 else line_end + 1)]
    # First every proposal with the rest of its line, then the best of them with the whole right side; the pieces
    # every version of both begins with are read once.
    bodies = yield from _encoded(tokenizer, [text[head:start] + _in_place(left, words, side) + side
                                             for side in (near, right) for words in versions])
    near_bodies, right_bodies = bodies[:len(versions)], bodies[len(versions):]
    shared, shared_logprob = (0 if not all(bodies) else _shared_length(bodies)), 0.0
    if shared:
        shared_logprob, *after = yield from read_prefix(model, bodies[0][:shared], tuple(after))
    near_logprobs = yield from _read_versions(model, [body[shared:] for body in near_bodies], after)
    near_weights = [Alternative(words, value, rhymes_with=rhyme).weight
                    for words, value, rhyme in zip(versions, near_logprobs, rhyme_of)]
    likelier_case: dict[str, int] = {}  # case variants ("o", "O") are one candidate: the likelier in place
    for i in range(1, len(versions)):
        key = versions[i].lower()
        if key not in likelier_case or near_weights[i] > near_weights[likelier_case[key]]:
            likelier_case[key] = i
    kept = [0] + sorted(likelier_case.values(), key=lambda i: -near_weights[i])[:RANKED]
    versions = [versions[i] for i in kept]
    logprobs = yield from _read_versions(model, [right_bodies[i][shared:] for i in kept], after)
    backs: list[float | None] = [None] * len(versions)
    if backward is not None:  # the whole right side for every version: it reads it once, before them
        stanza_break = stanza.group() if stanza and len(right) == stanza.start() - end else ""
        back_from = line_start
        for _ in range(BACKWARD_LINES):
            back_from = text.rfind("\n", 0, max(back_from - 1, 0)) + 1 if back_from else 0
        if start - back_from > BACKWARD_LEFT_CHARS:
            back_from = _first_cut(text, start - BACKWARD_LEFT_CHARS, start)
        backs = yield from _read_backward(backward, tokenizer, text[back_from:start], left, versions,
                                          right + stanza_break)
    scored = [Alternative(words, prefix_logprob + shared_logprob + value, rhymes_with=rhyme_of[i], backward=back)
              for i, words, value, back in zip(kept, versions, logprobs, backs)]

    first = scored[0]
    ranked = sorted(scored, key=lambda a: -a.weight)  # stable: the original first among equals
    rank = ranked.index(first) + 1
    listed = bool(original) and rule.meets(original, max_words)  # what is asked for, and nothing else
    shown = _varied_list([a for a in ranked if a is not first or listed], n)
    weighed = shown if first in shown else [*shown, first]
    shares = torch.softmax(torch.tensor([a.weight for a in weighed], dtype=torch.float64), 0).tolist()
    for alternative, share in zip(weighed, shares):
        alternative.prob = share
        alternative.syllables, alternative.stress = rule.sounds(alternative.text, phonology)
    read = len(tokenizer.encode(text[:end] + right, add_bos=True))
    return AlternativesResult(first, rank, shown, read, rows)


def _text_words(text: str, lexicon: Lexicon) -> frozenset[str]:
    """The dictionary words the text itself uses, lower-case: a songwriter's own words (a name, a word of today)
    are candidates whether or not the model read them in training."""
    return frozenset(word for word in map(_plain, _WORD.findall(text.lower()))
                     if word in lexicon.masks and is_whole_word(word))


def _plain(word: str) -> str:
    """A word as the dictionary spells it: with the ASCII apostrophe."""
    return word.translate(APOSTROPHES)


def _apostrophe_style(text: str):
    """How candidates are written in `text`: with ’ where the text writes its apostrophes so (a songwriter's
    typography kept; the models read both alike, model/tokenizer.py), as the dictionary spells them otherwise."""
    if text.count("\u2019") > text.count("'"):
        return lambda words: words.replace("'", "\u2019")
    return lambda words: words


def _read_before(model, ids: list[int], prompts: PromptCache) -> Steps[tuple[float, torch.Tensor, State]]:
    """`read_prefix` of the lines before the part's, the state at its last CHUNK boundary kept in the prompt
    cache: the proposals then read the part's line after it, not the whole text again."""
    boundary = (len(ids) - MIN_CALL_PIECES) // CHUNK * CHUNK
    if boundary < CHUNK:
        return (yield from read_prefix(model, ids))
    head_logprob, logits, state = yield from read_prefix(model, ids[:boundary])
    prompts.keep(ids[:boundary], state)
    rest_logprob, logits, state = yield from read_prefix(model, ids[boundary:], (logits, state))
    return head_logprob + rest_logprob, logits, state


def _neighbours(text: str, start: int, end: int) -> tuple[str | None, str | None]:
    """The words just before and just after the part with only spaces between, lower-case (None at a line's
    edge, or where a mark stands between: "Sunday, Sunday" repeats a word on purpose, as songs do)."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    before = list(_WORD.finditer(text, line_start, start))
    after = list(_WORD.finditer(text, end, len(text) if line_end < 0 else line_end))[:1]
    before = [m for m in before[-1:] if not text[m.end():start].strip()]
    after = [m for m in after if not text[end:m.start()].strip()]
    return (_plain(before[0].group().lower()) if before else None), (_plain(after[0].group().lower()) if after else None)


def _doubles(words: str, neighbours: tuple[str | None, str | None]) -> bool:
    """A replacement that repeats the word beside it ("little little star", "with thine thine"): the cache
    makes such echoes likely, and a songwriter asking for another word does not want the last one again."""
    found = _WORD.findall(_plain(words.lower()))
    return bool(found) and (found[0] == neighbours[0] or found[-1] == neighbours[1])


def _other_line_ends(text: str, start: int, end: int) -> list[str]:
    """When the part ends its line (nothing but punctuation after it there): the last words of the stanza's
    other lines, up to RHYME_LINES either side, lower-case, the nearest lines first. Otherwise none: only a
    line's end is held to a rhyme."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    if _WORD.search(text, end, line_end):
        return []
    breaks = [m.end() for m in _STANZA_BREAK.finditer(text, 0, line_start)]
    stanza_start = breaks[-1] if breaks else 0
    stanza = _STANZA_BREAK.search(text, end)
    stanza_end = stanza.start() if stanza else len(text)
    before = text[stanza_start:line_start].split("\n")[:-1][::-1][:RHYME_LINES]
    after = text[line_end:stanza_end].split("\n")[1:][:RHYME_LINES]
    found = []
    for distance in range(RHYME_LINES):
        for lines in (before, after):
            words = _WORD.findall(lines[distance]) if distance < len(lines) else []
            if words:
                found.append(words[-1].lower())
    return found


def _rhyming_words(line_ends: list[str], rule: _PhraseRule, proposed: list[str]) -> list[str]:
    """The one-word replacements that meet the constraints and rhyme with one of `line_ends`, not proposed yet:
    a line end that keeps the stanza's rhyme may be too unlikely after the left side alone to be proposed."""
    seen = {_plain(words.lower()) for words in proposed}
    found = {word for line_end in line_ends for word in rule.lexicon.rhymes(line_end)
             if word in rule.vocabulary and word not in seen}
    return sorted(word for word in found if rule.complete(rule.add(1, word), word))


def _rhyme_weight(rhymes_with: str | None) -> float:
    return RHYME_BONUS if rhymes_with else 0.0


def _rhyme_in(words: str, line_ends: list[str], lexicon: Lexicon) -> str | None:
    """The first of `line_ends` that the last word of `words` rhymes with (perfectly), if any."""
    found = _WORD.findall(words.lower())
    if not found:
        return None
    return next((line_end for line_end in line_ends if _plain(found[-1]) in lexicon.rhymes(line_end)), None)


def _song_words(text: str, start: int, end: int, rule: _PhraseRule, proposed: list[str]) -> list[str]:
    """The words of the text around the part that could replace it, not proposed yet: songs repeat their own
    words ("her cake and wine" ... "Eat well of my cake"), which the model reading the left alone may not
    offer. As written in the text (its first use), up to SONG_WORDS of them, the nearest first."""
    seen = {_plain(words.lower()) for words in proposed}
    found: dict[str, str] = {}
    matches = sorted(_WORD.finditer(text), key=lambda m: min(abs(m.start() - start), abs(m.start() - end)))
    for match in matches:
        word, low = match.group(), _plain(match.group().lower())
        if low in seen or low in found or start <= match.start() < end:
            continue
        if low in rule.lexicon.masks and low in rule.vocabulary and rule.complete(rule.add(1, low), low):
            found[low] = word
            if len(found) == SONG_WORDS:
                break
    return list(found.values())


def _read_versions(model, bodies: list[list[int]], after: list) -> Steps[list[float]]:
    """The log probability of each version's own pieces (`bodies`), read side by side after the pieces they all
    begin with (`after`: the logits and state there)."""
    values = [0.0] * len(bodies)  # a version with no pieces (nothing there, nothing after): nothing to read
    read = [i for i, body in enumerate(bodies) if body]
    if read:
        found = yield from read_continuations(model, *after, [bodies[i] for i in read])
        for i, value in zip(read, found):
            values[i] = value
    return values


def _read_backward(model, tokenizer, line_left: str, left: str, versions: list[str], right: str) -> Steps[list[float]]:
    """The backward model's log probability of each version of the text from the end of `right` back to the
    start of `line_left`: the pieces all versions end with once, then each version's own."""
    bodies = [tokenizer.encode(line_left + _in_place(left, words, right) + right)[::-1] for words in versions]
    values = [0.0] * len(bodies)
    read = [i for i, body in enumerate(bodies) if body]
    if not read:
        return values
    shared = _shared_length([bodies[i] for i in read])
    shared_logprob, logits, state = yield from read_prefix(model, [tokenizer.bos_id] + bodies[read[0]][:shared])
    found = yield from read_continuations(model, logits, state, [bodies[i][shared:] for i in read])
    for i, value in zip(read, found):
        values[i] = shared_logprob + value
    return values


def _first_words(proposed: list[str], count: int) -> list[str]:
    """The proposals of the first `count` different words, with their case variants."""
    keys: set[str] = set()
    first = []
    for words in proposed:
        key = words.lower()
        if key not in keys and len(keys) == count:
            continue
        keys.add(key)
        first.append(words)
    return first


def _last_cut(text: str, lowest: int, highest: int) -> int:
    """The last place in text[lowest:highest] where the pieces of what comes before it do not depend on what comes
    after it (the tokenizer splits before a space that follows a non-space; docs/tokenizer.md), else `lowest`."""
    for at in range(highest - 1, lowest, -1):
        if text[at] == " " and not text[at - 1].isspace():
            return at
    return lowest


def _cut_at_insert(text: str, start: int, end: int) -> bool:
    """Whether an insert's place is such a place in every version: after a word character or a mark that closes,
    each candidate begins with the space `_in_place` puts before it, and the text as it is goes on with a space
    there or ends."""
    return start == end and _space_before(text[:start]) and text[end:end + 1] in ("", " ")


def _first_cut(text: str, lowest: int, highest: int) -> int:
    """The first such place in text[lowest:highest], else `lowest` (a run of text with no space)."""
    for at in range(max(lowest, 1), highest):
        if text[at] == " " and not text[at - 1].isspace():
            return at
    return lowest


def _in_place(left: str, words: str, right: str) -> str:
    """`words` as they stand between `left` and `right`: a space where they would touch a word character,
    follow a mark that closes or precede one that opens."""
    if not words:
        return ""
    after = " " if right and (is_word_char(right[0]) or right[0] in _OPENING_MARKS) else ""
    return (" " if _space_before(left) else "") + words + after


def _space_before(left: str) -> bool:
    """Whether a word put after `left` needs a space: after a word character or a mark that closes."""
    return bool(left) and (is_word_char(left[-1]) or left[-1] in _CLOSING_MARKS)


def _encoded(tokenizer: Tokenizer, texts: list[str]) -> Steps[list[list[int]]]:
    """Each text's pieces, with a step (no model call) after every ENCODE_STEP_CHARS characters: the versions of
    a part of a very long line take a while to encode, and others wait for a step to end."""
    found, since = [], 0
    for text in texts:
        found.append(tokenizer.encode(text))
        since += len(text)
        if since >= ENCODE_STEP_CHARS:
            since = 0
            yield 0
    return found


def _shared_length(bodies: Sequence[list[int]]) -> int:
    """Pieces every version begins with, leaving each at least one of its own."""
    first, shared = bodies[0], min(len(body) for body in bodies) - 1
    for body in bodies[1:]:
        if body[:shared] != first[:shared]:  # the first difference, by halves (a slice compares at C speed)
            low, high = 0, shared
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if body[:middle] == first[:middle] else (low, middle)
            shared = low
    return max(shared, 0)


class _PhraseRule:
    """Which words may come next in a replacement, and when it is complete: syllables (bit masks of the totals
    so far, as the line search keeps them), the stress pattern, the rhyme of its last word."""

    def __init__(self, lexicon: Lexicon, vocabulary: frozenset[str], syllables: int | None, stress: str | None,
                 rhymes_with: str | None, rhyme: str):
        self.lexicon, self.stress, self.syllables = lexicon, stress, syllables
        self.high = syllables if syllables is not None else MAX_SYLLABLES
        self.cap = (1 << (self.high + 1)) - 1
        self.vocabulary = vocabulary
        self.words = sorted(w for w in vocabulary if w in lexicon.masks and lexicon.masks[w] & self.cap)
        # A word's step depends only on its counts (and scansions, with a stress pattern): thousands of words
        # share a few dozen of them, and a request asks after the same totals again and again (each partial).
        self._sound_of = {w: (lexicon.masks[w], lexicon.scansions(w) if stress is not None else ()) for w in self.words}
        self._sounds = frozenset(self._sound_of.values())
        self._next: dict[tuple[int, bool], list[str]] = {}
        self.rhyming: frozenset[str] | None = None
        if rhymes_with is not None:
            rhyming = lexicon.rhymes(rhymes_with, rhyme)
            if not rhyming:
                raise ConstraintError("rhymes_with", f"no word in the dictionary rhymes with {rhymes_with!r} ({rhyme})")
            self.rhyming = frozenset(w for w in rhyming if w in vocabulary)
            if not self.rhyming:
                raise ConstraintError("rhymes_with", f"no word the model read in training or the text uses rhymes "
                                                     f"with {rhymes_with!r} ({rhyme})")

    def add(self, totals: int, word: str) -> int:
        scans = self.lexicon.scansions(word) if self.stress is not None else ()
        return add_word(totals, self.lexicon.masks[word], scans, self.stress) & self.cap

    def complete(self, totals: int, last: str) -> bool:
        if self.rhyming is not None and last not in self.rhyming:
            return False
        return bool(totals >> self.syllables & 1) if self.syllables is not None else bool(totals)

    def meets(self, text: str, max_words: int) -> bool:
        """Whether `text` (the original) meets the request as a candidate must: at most `max_words` words and,
        where anything is asked of its sounds, dictionary words that meet it by one of their pronunciations."""
        words = [_plain(word.lower()) for word in _WORD.findall(text)]
        if len(words) > max_words:
            return False
        if self.syllables is None and self.stress is None and self.rhyming is None:
            return True
        if not words or not all(word in self.lexicon.masks for word in words):
            return False
        totals = 1
        for word in words:
            totals = self.add(totals, word)
        return self.complete(totals, words[-1])

    def can_grow(self, totals: int) -> bool:
        return bool(totals) and lowest(totals) < self.high

    def next_forms(self, totals: int, last_word: bool) -> list[str]:
        """The words that keep a replacement feasible after `totals` (`last_word`: that also complete it), as the
        next-word search takes them (constrained.surface_forms)."""
        key = (totals, last_word)
        found = self._next.get(key)
        if found is None:
            after_sound = {sound: add_word(totals, *sound, self.stress) & self.cap for sound in self._sounds}
            words = []
            for word in self.words:
                after = after_sound[self._sound_of[word]]
                if after and (not last_word or self.complete(after, word)):
                    words.append(word)
            found = self._next[key] = surface_forms(words)
        return found

    def sounds(self, text: str, phonology: Phonology) -> tuple[int | None, str | None]:
        """The syllables and stress ("1" stressed, "0" not, a digit a syllable) of a replacement, with the
        first pronunciation of each word that meets the constraints (the dictionary's first, for the
        original); None for a text with a word the dictionary lacks."""
        words = _WORD.findall(text)
        options = []
        for word in words:
            prons = phonology.pronunciations(word)
            if not prons or not all(p.known for p in prons):
                return None, None
            options.append(prons)
        choices: list[tuple[int, str, int]] = [(0, "", 1)]  # (syllables, stress, totals) per way of reading
        for word, prons in zip(words, options):
            grown = []
            for count, pattern, totals in choices:
                for pron in prons:
                    after = totals
                    if self.stress is not None or self.syllables is not None:
                        after = add_word(totals, 1 << pron.syllables, (scansion(pron.phones),), self.stress) & self.cap
                        if not after:
                            continue
                    grown.append((count + pron.syllables, pattern + pron.stress, after))
            choices = grown or [(count + prons[0].syllables, pattern + prons[0].stress, 0)
                                for count, pattern, _ in choices]
        fitting = [c for c in choices if self.syllables is None or c[0] == self.syllables]
        count, pattern, _ = (fitting or choices)[0]
        return count, pattern


@dataclass
class _Partial:
    words: str  # joined by single spaces
    last: str  # its last word, lower-case
    totals: int
    logprob: float  # under the model reading the left side only


def _varied_list(ranked: list[Alternative], n: int) -> list[Alternative]:
    """The `n` best of `ranked` (best first), with a candidate that differs from SAME_OPENING better ones only in
    its last word ("in the valley spring", "in the valley flowers", ...) passed over while others are left:
    a songwriter asking for other words wants other ideas, not one phrase ending ten ways."""
    chosen, passed = [], []
    openings: dict[str, int] = {}
    for alternative in ranked:
        opening = " ".join(alternative.text.lower().split()[:-1])  # "" for one word: never passed over
        if opening and openings.get(opening, 0) >= SAME_OPENING:
            passed.append(alternative)
        else:
            openings[opening] = openings.get(opening, 0) + 1
            chosen.append(alternative)
    return sorted((chosen + passed)[:n], key=lambda a: -a.weight)


def _varied_beam(partials: list[_Partial], count: int) -> list[_Partial]:
    """The `count` likeliest partial replacements, those opening with a word no likelier one opens with first:
    a beam of "loud and", "loud the", "loud in" would make every longer replacement one phrase four ways."""
    opened, first, rest = set(), [], []
    for partial in sorted(partials, key=lambda p: -p.logprob):
        opening = partial.words.split(" ", 1)[0].lower()
        (rest if opening in opened else first).append(partial)
        opened.add(opening)
    return (first + rest)[:count]


def _propose(model, tokenizer, rule: _PhraseRule, left: str, max_words: int,
             prompts: PromptCache) -> Steps[tuple[list[tuple[str, float]], int]]:
    """Complete replacements, likeliest first by the left side alone (none where every word that fits is too
    unlikely to follow), and the model rows spent."""
    # The model proposes the next word after the left side without its trailing spaces: the word search counts
    # the spaces before a word itself, and a text that ends in a bare space reads to the model as a word cut off.
    base = left.rstrip(" \t")
    joiner = " " if base and not base.endswith("\n") else ""
    partials = [_Partial("", "", 1, 0.0)]
    complete: dict[str, tuple[str, float]] = {}  # text -> (text, logprob); case variants are kept apart
    rows = 0
    for depth in range(1, max_words + 1):
        grown = []
        for partial in partials:
            words = rule.next_forms(partial.totals, last_word=depth == max_words)
            if not words:
                continue
            prompt = base + (joiner + partial.words if partial.words else "")
            prediction = yield from constrained_steps(model, tokenizer, prompt, words, top_k=None,
                                                      tolerance=PROPOSAL_TOLERANCE,
                                                      max_rows=PROPOSAL_ROWS if depth == 1 else NEXT_WORD_ROWS,
                                                      prompts=prompts)
            rows += prediction.rows
            cases: dict[str, list[tuple[str, float]]] = {}  # lower-case word -> its case variants, likeliest first
            for word, prob in sorted(prediction.probs.items(), key=lambda item: -item[1]):
                if prob > 0:
                    cases.setdefault(word.lower(), []).append((word, prob))
            ranked = sorted(cases.values(), key=lambda variants: -variants[0][1])
            for (word, prob), *others in ranked[: max(NEXT_WORDS, POOL if depth == 1 else 0)]:
                low = word.lower()
                if low == partial.last:  # "was was": an echo inside the replacement, as beside it (_doubles)
                    continue
                totals = rule.add(partial.totals, low)
                text = f"{partial.words} {word}" if partial.words else word
                logprob = partial.logprob + math.log(prob)
                if rule.complete(totals, low):
                    # the right side may want the other case ("o" after "--", but "O God"): read both in place
                    for variant, variant_prob in [(word, prob), *others]:
                        variant_text = f"{partial.words} {variant}" if partial.words else variant
                        variant_logprob = partial.logprob + math.log(variant_prob)
                        if variant_text not in complete or variant_logprob > complete[variant_text][1]:
                            complete[variant_text] = (variant_text, variant_logprob)
                if depth < max_words and rule.can_grow(totals):
                    grown.append(_Partial(text, low, totals, logprob))
        partials = _varied_beam(grown, BEAM)
        if not partials:
            break
    return sorted(complete.values(), key=lambda item: -item[1]), rows

