"""Next lines and verses that meet syllable and rhyme constraints by construction.

The method: sequential Monte Carlo over pieces (Lew et al. 2023, "Sequential
Monte Carlo steering of large language models").

- `particles` copies of the line are sampled piece by piece from the model at the
  request's temperature and filters, all in one batched model call per step.
- Each particle carries what the constraints need: the word it is in (lower-case),
  the syllable totals its finished words can reach (a bit mask: a word with two
  pronunciations reaches two totals) and whether the line could end now.
- Before each draw, pieces that would break a constraint are masked: a piece may
  only extend the word to a prefix of a dictionary word that can still fit (as a
  word with more words after it, or as a qualifying end word: right syllables,
  rhymes, not used before); a word may only end if it is a dictionary word and its
  syllables leave the line completable; the line break only comes after a
  qualifying end word with the syllable total in range (an end word counts only
  the pronunciations that rhyme: "trying" rhymes with "crying" in two syllables,
  not in its one-syllable reading). So every finished line
  meets every constraint, by the same dictionary an outside reader would use
  (`lexicon.py` says why only words the dictionary knows as written are used).
- Masking alone is greedy about the constraint: it steers every particle into
  whatever ending is still allowed, however unlikely the model finds it. Each
  particle's importance weight is multiplied by the mass the mask allowed (the
  normaliser of its proposal), so the weights are those of the model's own
  distribution conditioned on the constraints, and particles whose weight falls
  behind are resampled away (systematic resampling of the live particles when
  their effective sample size drops below half).
- Among the distinct finished lines the model's fluency decides: the `n` with the
  fewest nats per character under the model (temperature 1) are returned, most
  fluent first (`choose="sample"` draws them by their summed importance weights
  instead: a sample of the model at the request's temperature conditioned on the
  constraints). A line's `logprob` is that of the tokenizer's own spelling of the
  line and its line break after the prompt.
- Temperature 0 is searched at MIN_TEMPERATURE: a greedy line is one line, and the
  search needs spread (the choice among lines is by fluency anyway).
- A run of pieces without word characters is cut at `MAX_RUN` (". . . . ." would
  otherwise put off a hard rhyme for ever at no cost in weight), and a line does
  not end in a space.
- A word begins after a space, or after an opening quote or bracket that a space or
  the line's start comes before (`PieceTable.word_starts`): the old books' misprints
  ("floors,Then") and the model's hyphenated coinages ("boy-bos-speed") are left out,
  so the line splits into dictionary words at its spaces, as a reader outside reads it.

Why this and not a model trained on reversed lines (Deep-speare, DeepRapper): it
works with any checkpoint as it is, and the constraint is exact by construction;
why not masking alone: the weights, at one batched model call per step.
Measured with `bench/songwriting.py` (docs/benchmarks.md).

A request has a work budget (`max_rows`: model rows, a row being one particle's
step): an impossible or too hard request ends with `ConstraintError` naming the
constraint that could not be met, never with an endless search.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from lyricist.model.network import LanguageModel, evaluating
from lyricist.model.prompt_cache import PromptCache
from lyricist.model.sampling import (
    SamplingParams,
    filter_logits,
    gumbel,
    inverse_cdf,
    make_generator,
    penalise,
    random_seed,
)
from lyricist.model.steps import Steps, run_to_end
from lyricist.model.tokenizer import Tokenizer
from lyricist.model.units import is_word_char
from torch import Tensor

from .lexicon import MAX_SYLLABLES, Lexicon, add_word, counts_of, lowest

PARTICLES = 32
ROUNDS = 4  # rounds of `PARTICLES` when fewer than `n` distinct lines have finished
MAX_ROWS = 12_000
MIN_TEMPERATURE = 0.25  # temperature 0 (greedy) leaves one line; a search needs spread
RHYME_KINDS = ("perfect", "near")
CHOICES = ("fluent", "sample")  # how the returned lines are picked among those found (Search.select)

MAX_RUN = 3  # pieces without word characters in a row, at most
# Words a song line does not end on (articles, possessive determiners, conjunctions, the prepositions that need
# what follows them): a line ending "...and the" is unfinished. Allowed when the rhyme asked for is one of them.
FUNCTION_WORDS = frozenset(
    "a an the and or but nor if than as of to with from at by into onto upon unto my your our their its thy "
    "whose every o' wi' an' i' th' o wi th".split())
OPENERS = frozenset("\"'\u201c\u2018([{")  # marks a word may follow at once: quotes and brackets that open
OPENING_WORDS = 3  # candidates differ in their first three words where enough distinct lines were found
CONT, BREAK, NEWLINE, BAD = 0, 1, 2, 3
NONE = 99  # "no word": a syllable minimum larger than any budget


class ConstraintError(ValueError):
    """No line can meet the constraints (or none was found within the work budget): the route's 422."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class EndRule:
    """Which words may end a line."""

    allowed: Mapping[str, int] | None = None  # lower-case word -> its syllable mask as an end word; None: any
    excluded: frozenset[str] = frozenset()
    accept: Callable[[str], bool] | None = None  # a further test, for "has enough rhymes left"
    target: str | None = None  # the word it must rhyme with, if any (for the report)
    kind: str = "perfect"
    vocabulary: frozenset[str] | None = None  # words a line may end on: the model's training words; None: any

    def ok(self, word: str) -> bool:
        return ((self.allowed is None or word in self.allowed) and word not in self.excluded
                and (self.vocabulary is None or word in self.vocabulary)
                and (self.accept is None or self.accept(word)))

    def worth_ending(self, vocabulary: frozenset[str] | None) -> EndRule:
        """This rule, ending only on words a song would end on: no bare function word (unless the rhyme asked
        for is one), and only words the model read as words in its training text (`vocabulary`), not a
        fragment it can spell ("a-", "wy")."""
        keep = vocabulary if vocabulary is not None else self.vocabulary
        asked = self.target is not None and self.target in FUNCTION_WORDS
        excluded = self.excluded if asked else self.excluded | FUNCTION_WORDS
        allowed = self.allowed
        if allowed is not None and keep is not None:
            allowed = {w: m for w, m in allowed.items() if w in keep}
        return dataclasses.replace(self, allowed=allowed, excluded=excluded, vocabulary=keep)


@dataclass
class Line:
    text: str  # without its line break
    syllables: int
    end_word: str
    rhymes: bool  # the end word rhymes with the request's word (False when none was asked for)
    logprob: float  # true log-probability (temperature 1) of the line and its line break after the prompt
    nats_per_char: float
    pieces: int
    weight: float = 0.0  # log of the summed importance weight of the particles that wrote it

    def as_dict(self) -> dict:
        return {"text": self.text, "syllables": self.syllables, "end_word": self.end_word, "rhymes": self.rhymes,
                "logprob": self.logprob, "nats_per_char": self.nats_per_char}


@dataclass
class EndWord:
    """A word the line may end on: the share of the search's finished lines that end on it (case variants as one),
    and the most fluent of those lines."""

    word: str
    prob: float
    line: str

    def as_dict(self) -> dict:
        return {"word": self.word, "prob": self.prob, "line": self.line}


END_WORDS = 10  # the likeliest end words a search reports


@dataclass
class LinesResult:
    lines: list[Line]
    end_words: list[EndWord]
    seed: int
    prompt_tokens: int
    completion_tokens: int  # pieces of the lines returned
    rows: int  # model rows spent (the work)
    rounds: int


@dataclass
class Verse:
    text: str
    lines: list[tuple[Line, str]]  # each with its scheme letter
    seed: int
    prompt_tokens: int
    completion_tokens: int
    rows: int


# -- what each piece does to a line ------------------------------------------------------------


class PieceTable:
    """Per (tokenizer, lexicon): each piece's part in a line, and the dictionary prefixes it may begin."""

    def __init__(self, tokenizer: Tokenizer, lexicon: Lexicon):
        self.tokenizer, self.lexicon = tokenizer, lexicon
        size = tokenizer.vocab_size
        self.kind = [BAD] * size
        self.text = [""] * size  # the piece's text (whole pieces only)
        self.word = [""] * size  # CONT: its (lower-case) word characters; BREAK: the word it begins, or ""
        for i, data in enumerate(tokenizer.piece_bytes):
            if i == tokenizer.eos_id or not data:
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            self.text[i] = text
            kind, word = _piece_kind(text)
            self.kind[i], self.word[i] = kind, word.lower()
        kinds = torch.tensor(self.kind)
        self.is_cont = kinds == CONT
        self.is_newline = kinds == NEWLINE
        self.is_break_empty = (kinds == BREAK) & torch.tensor([not w for w in self.word])
        self.is_break_word = (kinds == BREAK) & ~self.is_break_empty
        self.spaced_start = torch.tensor([t[:1].isspace() for t in self.text])  # " rose", "  ": no line begins so
        # What stands before the word a BREAK piece begins, for `word_starts`: a space, an opening mark, a space
        # anywhere in it.
        before = [self.text[i][: len(self.text[i]) - len(self.word[i])] if self.word[i] else "" for i in range(size)]
        self.break_after_space = self.is_break_word & torch.tensor([b[-1:].isspace() for b in before])
        self.break_after_opener = self.is_break_word & torch.tensor([b[-1:] in OPENERS for b in before])
        self.break_spaced = self.is_break_word & torch.tensor([any(c.isspace() for c in b) for b in before])
        self._word_starts: dict[tuple[bool, bool], Tensor] = {}
        # Where a piece begins a new word (CONT after a boundary, or a BREAK piece's word): the union of the
        # syllable masks of the dictionary words that begin so, and its least count.
        self.start_mask = torch.tensor([lexicon.prefixes.get(w, 0) if w else 0 for w in self.word], dtype=torch.int64)
        self.start_min = torch.tensor([lowest(m) if m else NONE for m in self.start_mask.tolist()])
        self.cont_trie: dict = {}  # CONT pieces' (lower-case) texts as a character trie; "" holds the ids ending there
        for i, kind in enumerate(self.kind):
            if kind == CONT:
                node = self.cont_trie
                for char in self.word[i]:
                    node = node.setdefault(char, {})
                node.setdefault("", []).append(i)
        self._continuations: dict[str, tuple[list[int], list[str]]] = {}

    def word_starts(self, glued: bool, spaced: bool) -> Tensor:
        """The pieces allowed at a word boundary, by `_gap` of the line so far: a word begins after a space, or
        after an opening mark that a space or the line's start comes before. The pieces that begin no word are
        all allowed."""
        key = (glued, spaced)
        found = self._word_starts.get(key)
        if found is None:
            opened = self.break_after_opener if spaced else self.break_after_opener & self.break_spaced
            starts = self.break_after_space | opened
            if not glued:
                starts = starts | self.is_cont
            found = self._word_starts[key] = starts | ~(self.is_cont | self.is_break_word)
        return found

    def continuations(self, prefix: str) -> tuple[Tensor, list[str], Tensor, Tensor]:
        """The CONT pieces that keep `prefix` a dictionary prefix: their ids, the prefixes they make, those
        prefixes' completion masks and least counts."""
        found = self._continuations.get(prefix)
        if found is None:
            ids, words = [], []
            prefixes = self.lexicon.prefixes
            stack = [(self.cont_trie, prefix)]  # walk both tries at once: a dead prefix ends its branch
            while stack:
                node, text = stack.pop()
                for char, child in node.items():
                    if char == "":
                        ids.extend(child)
                        words.extend([text] * len(child))
                    elif text + char in prefixes:
                        stack.append((child, text + char))
            masks = [prefixes[q] for q in words]
            found = (torch.tensor(ids, dtype=torch.long), words, torch.tensor(masks, dtype=torch.int64),
                     torch.tensor([lowest(m) for m in masks], dtype=torch.int64))
            if len(self._continuations) < 100_000:
                self._continuations[prefix] = found
        return found


def _piece_kind(text: str) -> tuple[int, str]:
    if text == "\n":
        return NEWLINE, ""
    if any(not c.isprintable() and c != " " for c in text) or "\ufffd" in text or "\u2581" in text:
        return BAD, ""  # control characters, other line breaks, replacement characters: never in a line
    if all(is_word_char(c) for c in text):
        return CONT, text
    end = len(text)
    while end > 0 and is_word_char(text[end - 1]):
        end -= 1
    if is_word_char(text[0]) or any(is_word_char(c) for c in text[:end]):
        return BAD, ""  # word characters then others ("s,"): left out, a unit would end inside the piece
    return BREAK, text[end:]


_TABLES: dict[tuple[int, int], PieceTable] = {}


def piece_table(tokenizer: Tokenizer, lexicon: Lexicon) -> PieceTable:
    key = (id(tokenizer), id(lexicon))
    found = _TABLES.get(key)
    if found is None or found.tokenizer is not tokenizer or found.lexicon is not lexicon:
        found = _TABLES[key] = PieceTable(tokenizer, lexicon)
    return found


# -- the constraints of one line, as masks -------------------------------------------------------


class _LineRule:
    """One line's constraints turned into next-piece masks, cached by the particle's state. With a `stress`
    pattern, a word moves the line's syllable totals only by the pronunciations whose scansion fits the
    pattern where the word falls (songwriting/meter.py); the look-ahead inside a word counts syllables only."""

    def __init__(self, table: PieceTable, low: int, high: int, end: EndRule, stress: str | None = None):
        self.table, self.lexicon, self.end = table, table.lexicon, end
        self.low, self.high = low, high
        self.stress = stress
        self.cap = (1 << (high + 1)) - 1
        self.range = self.cap & ~((1 << low) - 1)
        if end.allowed is not None:
            allowed = [w for w in end.allowed if w not in end.excluded and w in self.lexicon.masks]
            self.end_prefixes: dict[str, int] | None = {}
            end_any = 0
            for word in allowed:
                mask = end.allowed[word]
                end_any |= mask
                for cut in range(1, len(word) + 1):
                    self.end_prefixes[word[:cut]] = self.end_prefixes.get(word[:cut], 0) | mask
            self.start_end_mask = torch.tensor([self.end_prefixes.get(w, 0) if w else 0 for w in table.word],
                                               dtype=torch.int64)
        else:
            self.end_prefixes = None
            end_any = self.lexicon.any_mask
            self.start_end_mask = table.start_mask
        self.end_any = end_any
        self.end_min = lowest(end_any) if end_any else NONE
        self._boundary: dict[tuple[int, bool], Tensor] = {}
        self._inside: dict[tuple[str, int], Tensor] = {}

    def add(self, totals: int, word_mask: int, word: str) -> int:
        """The totals after `word` of these syllable counts (with a stress pattern: of its pronunciations that
        fit the pattern where the word falls)."""
        scans = self.lexicon.scansions(word) if self.stress is not None else ()
        return add_word(totals, word_mask, scans, self.stress) & self.cap

    def end_shifts(self, totals: int) -> int:
        """Syllable counts s for which an end word of s syllables lands the total in range."""
        return sum(1 << s for s in range(self.high + 1) if (totals << s) & self.range)

    def end_totals(self, word: str, before: int) -> int:
        """The line's totals in range if `word` (lower-case), after words totalling `before`, ends it: only
        the counts of its pronunciations that meet the end rule (that rhyme) count. 0: it cannot end it."""
        if word not in self.lexicon.masks or not self.end.ok(word):
            return 0
        mask = self.end.allowed[word] if self.end.allowed is not None else self.lexicon.masks[word]
        return self.add(before, mask, word) & self.range

    def boundary(self, totals: int, can_end: bool) -> Tensor:
        """At a word boundary: pieces that start a word that can still fit, punctuation if the line can go
        on or end, the line break if it can end."""
        key = (totals, can_end)
        found = self._boundary.get(key)
        if found is None:
            t = self.table
            mask = (t.is_cont | t.is_break_word) & self._starts(totals)
            if can_end or self._can_go_on(totals):
                mask |= t.is_break_empty
            if can_end:
                mask |= t.is_newline
            found = self._boundary[key] = mask
        return found

    def inside(self, word: str, totals: int) -> Tensor:
        """Inside word `word` (lower-case): pieces that keep it a prefix that can still fit, and if it is a
        whole dictionary word whose syllables fit, what may come after it."""
        key = (word, totals)
        found = self._inside.get(key)
        if found is None:
            t = self.table
            mask = torch.zeros(len(t.kind), dtype=torch.bool)
            ids, prefixes, pm, least = t.continuations(word)
            if len(ids):
                em = (torch.tensor([self.end_prefixes.get(q, 0) for q in prefixes], dtype=torch.int64)
                      if self.end_prefixes is not None else pm)
                mask[ids] = self._fits(totals, least, em)
            word_mask = self.lexicon.masks.get(word, 0)
            if word_mask:
                after = self.add(totals, word_mask, word)
                if after:
                    mask |= self.boundary(after, bool(self.end_totals(word, totals))) & ~t.is_cont
            found = self._inside[key] = mask
        return found

    def _starts(self, totals: int) -> Tensor:
        return self._fits(totals, self.table.start_min, self.start_end_mask)

    def _fits(self, totals: int, least: Tensor, end_masks: Tensor) -> Tensor:
        """Prefixes that can still be finished: as a word with more after it (its least count plus the least
        end word still fit), or as an end word that lands the total in range."""
        if not totals:
            return torch.zeros_like(least, dtype=torch.bool)
        first = lowest(totals)
        more = least + first + self.end_min <= self.high
        last = (end_masks & self.end_shifts(totals)) != 0
        return more | last

    def _can_go_on(self, totals: int) -> bool:
        """Whether an end word still fits after these totals."""
        return bool(totals) and lowest(totals) + self.end_min <= self.high


# -- the particles -------------------------------------------------------------------------------


@dataclass
class _Particle:
    text: str = ""
    word: str | None = None  # the word in progress, as written; None at a boundary
    totals: int = 1  # bit t: the finished words can total t syllables
    primary: int = 0  # their total with each word's first pronunciation
    end_totals: int = 0  # the totals in range if the last word ends the line (its rhyming pronunciations)
    can_end: bool = False
    run: int = 0  # pieces without word characters in a row
    last_word: str = ""  # the last finished word, as written
    pieces: list[int] = field(default_factory=list)
    finished: bool = False
    logprob: float = 0.0  # of its pieces under the model at temperature 1


def _advance(p: _Particle, piece: int, table: PieceTable, rule: _LineRule) -> None:
    kind = table.kind[piece]
    if kind == CONT:
        p.word = (p.word or "") + table.text[piece]
        p.run = 0
    else:  # the word in progress, if any, ends here
        if p.word is not None:
            low = p.word.lower()
            p.end_totals = rule.end_totals(low, p.totals) if well_cased(p.word) else 0
            p.totals = rule.add(p.totals, rule.lexicon.masks[low], low)
            p.primary += rule.lexicon.primary.get(low, lowest(rule.lexicon.masks[low]))
            p.can_end = bool(p.end_totals)
            p.last_word = p.word
            p.word = None
        if kind == BREAK:
            start = len(table.text[piece]) - len(table.word[piece])
            if table.word[piece]:
                p.word = table.text[piece][start:]
            p.run = 0 if table.word[piece] else p.run + 1
        elif kind == NEWLINE:
            p.finished = True
    if kind != NEWLINE:
        p.text += table.text[piece]
    p.pieces.append(piece)


def _hangs(text: str) -> bool:
    """The text ends in one hyphen after a word (a dash of two or more is punctuation a line may end on)."""
    return text.endswith("-") and not text.endswith("--") and is_word_char(text[-2:-1] or " ")


def _mask(p: _Particle, rule: _LineRule) -> Tensor:
    if p.word is None:
        mask = rule.boundary(p.totals, p.can_end)
        if not p.text:  # a line begins with a word or a mark, never a space (none of the training songs' lines do)
            mask = mask & ~rule.table.spaced_start
        # nor ends in a space, on a hyphen ("fired-") or on a stray mark ('said John, "', 'rain, }')
        if p.can_end and (p.text[-1:].isspace() or _hangs(p.text) or _stray_mark(p.text)):
            mask = mask & ~rule.table.is_newline
        if p.run >= MAX_RUN:  # nor runs on in punctuation (". . . . ." puts off the rhyme for ever)
            mask = mask & ~rule.table.is_break_empty
        return mask & rule.table.word_starts(*_gap(p.text))
    mask = rule.inside(p.word.lower(), p.totals)
    if well_cased(p.word):
        return mask
    return mask & ~rule.table.is_newline  # "theY" may not end the line


def _stray_mark(text: str) -> bool:
    """After the last word, a mark after a space, which 4 in 10,000 lines of the training songs end on, most of
    them an ellipsis or a dash (those stay: 'and so . . .', 'and then --'): a quote that opens ('said John, "'),
    a stray bracket or stop ('rain, }', 'walls, .'). A quote that closes follows its mark at once ('as you;"')."""
    cut = len(text)
    while cut > 0 and not is_word_char(text[cut - 1]):
        cut -= 1
    gap = text[cut:]
    for at in range(1, len(gap)):
        if gap[at - 1].isspace() and not gap[at].isspace():
            mark, before = gap[at], gap[:at].rstrip()[-1:]
            dots = mark == "." and (before == "." or gap[at:].replace(" ", "").startswith(".."))
            if not (mark in "-\u2026" or dots):
                return True
    return False


def _gap(text: str) -> tuple[bool, bool]:
    """`word_starts`' two questions of a line's text at a word boundary: whether a word may not follow its gap
    since the last word at once (the gap ends neither in a space nor in an opening mark that a space or the
    line's start comes before), and whether the gap holds a space or no word came before it."""
    cut = len(text)
    while cut > 0 and not is_word_char(text[cut - 1]):
        cut -= 1
    gap = text[cut:]
    spaced = cut == 0 or any(c.isspace() for c in gap)
    end = gap[-1:]
    return bool(end) and not end.isspace() and not (end in OPENERS and spaced), spaced


# -- one line ------------------------------------------------------------------------------------


def generate_lines(*args, **kwargs) -> LinesResult:
    """`line_steps` run to its end (the command line, the tests)."""
    return run_to_end(line_steps(*args, **kwargs))


@torch.inference_mode()
def line_steps(
    model: LanguageModel,
    tokenizer: Tokenizer,
    lexicon: Lexicon,
    prompt: str,
    n: int = 3,
    syllables: int | Sequence[int] | None = None,
    rhymes_with: str | None = None,
    rhyme: str = "perfect",
    params: SamplingParams = SamplingParams(temperature=0.8),
    end_rule: EndRule | None = None,
    particles: int = PARTICLES,
    max_rows: int = MAX_ROWS,
    choose: str = "fluent",
    prompts: PromptCache | None = None,
    end_words: frozenset[str] | None = None,
    stress: str | None = None,
) -> Steps[LinesResult]:
    """Up to `n` distinct next lines after `prompt` that meet `syllables` (an int or [min, max]; None: 1 to 24)
    and rhyme with `rhymes_with` (`rhyme`: "perfect" or "near"). Raises ConstraintError when none can be found.

    `end_rule` replaces the rhyme constraint by an explicit rule (verses use it). `end_words`: the words a
    line may end on (the model's training words; EndRule.worth_ending). The `n` lines differ in their first
    three words where enough distinct lines were found. `stress` ("0101...", a digit a syllable) is met by
    construction as the syllable count is (songwriting/meter.py has the rule). A prompt that does not end in
    a line break gets one:
    the line is the next line. One model call per step (model.steps): the engine interleaves them with other
    work.
    """
    low, high = syllable_range(syllables)
    if stress is not None:
        check_stress(stress, syllables)
        low = high = len(stress)
    if rhyme not in RHYME_KINDS:
        raise ValueError(f"rhyme must be one of {', '.join(RHYME_KINDS)}, got {rhyme!r}")
    if choose not in CHOICES:
        raise ValueError(f"choose must be one of {', '.join(CHOICES)}, got {choose!r}")
    if end_rule is None:
        end_rule = EndRule()
        if rhymes_with is not None:
            end_rule = EndRule(allowed=lexicon.rhyme_masks(rhymes_with, rhyme), target=rhymes_with.lower(),
                               kind=rhyme)
    _check_feasible(lexicon, end_rule, low, high)  # the dictionary's verdict first: it names the constraint
    end_rule = end_rule.worth_ending(end_words)
    _check_feasible(lexicon, end_rule, low, high, "that the model read as an end word in its training text")
    seed = random_seed() if params.seed is None else params.seed
    generator = make_generator(seed)
    rule = _LineRule(piece_table(tokenizer, lexicon), low, high, end_rule, stress)
    with evaluating(model):
        search = _Search(model, tokenizer, rule, params, generator, prompts, prompt)
        yield from search.read_prompt()
        rounds = 0
        while search.rows < max_rows and rounds < ROUNDS:
            rounds += 1
            yield from search.run_round(particles, max_rows)
            if search.openings() >= max(n, 2) or (rounds >= 2 and search.openings() >= n):
                break
        if not search.finished:
            raise ConstraintError(_hardest(end_rule), f"no line meeting {_describe(low, high, end_rule)} was "
                                                      f"found within the work budget ({search.rows} model rows)")
        lines = yield from search.select(n, generator, choose)
    return LinesResult(lines, search.end_words(END_WORDS), seed, search.prompt_tokens,
                       sum(line.pieces for line in lines), search.rows, rounds)


def check_stress(stress: str, syllables: int | Sequence[int] | None = None) -> None:
    """A stress pattern: 1 to 24 digits 0 or 1, as many as `syllables` when that is given too."""
    if not isinstance(stress, str) or not 1 <= len(stress) <= MAX_SYLLABLES or set(stress) - {"0", "1"}:
        raise ValueError(f"stress must be 1 to {MAX_SYLLABLES} digits 0 or 1 (a digit a syllable), got {stress!r}")
    if syllables is not None:
        low, high = syllable_range(syllables)
        if not low <= len(stress) <= high:
            raise ValueError(f"syllables ({syllables!r}) must allow the stress pattern's {len(stress)} syllables")


def syllable_range(syllables: int | Sequence[int] | None) -> tuple[int, int]:
    if syllables is None:
        return 1, MAX_SYLLABLES
    if isinstance(syllables, int):
        low = high = syllables
    else:
        if len(syllables) != 2:
            raise ValueError(f"syllables must be an integer or [min, max], got {syllables!r}")
        low, high = syllables
    if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high <= MAX_SYLLABLES):
        raise ValueError(f"syllables must be between 1 and {MAX_SYLLABLES} (min <= max), got {syllables!r}")
    return low, high


def _check_feasible(lexicon: Lexicon, end: EndRule, low: int, high: int, among: str = "") -> None:
    """Refuse at once what no line can meet. `among`: what the words are further held to, for the message."""
    if end.allowed is None:
        return
    allowed = [w for w in end.allowed if w not in end.excluded]
    what = f"rhymes with {end.target!r} ({end.kind})" if end.target else "may end this line"
    words = f"no word {among}" if among else "no word in the dictionary"
    if not allowed:
        raise ConstraintError("rhymes_with", f"{words} {what}" +
                              (" that is not used already" if end.allowed and not among else ""))
    if not any(lowest(end.allowed[w]) <= high for w in allowed):
        raise ConstraintError("syllables", f"{words} that {what} has at most {high} syllables")


def _hardest(end: EndRule) -> str:
    return "rhymes_with" if end.target else ("scheme" if end.allowed is not None or end.excluded else "syllables")


def _describe(low: int, high: int, end: EndRule) -> str:
    count = f"syllables={low}" if low == high else f"syllables=[{low}, {high}]"
    if end.target:
        return f"{count} and rhymes_with={end.target!r} ({end.kind})"
    if end.allowed is not None or end.excluded:
        return f"{count} and the rhyme scheme"
    return count


class _Search:
    def __init__(self, model, tokenizer, rule: _LineRule, params: SamplingParams, generator, prompts, prompt: str):
        self.model, self.tokenizer, self.rule, self.params, self.generator = model, tokenizer, rule, params, generator
        if prompt and not prompt.endswith("\n"):
            prompt += "\n"
        self.prompt = prompt
        ids = tokenizer.encode(prompt, add_bos=True)
        self.prompt_ids = ids
        self.prompt_tokens = len(ids)
        self.prompts = prompts or PromptCache(model)
        self.prompt_logits = self.prompt_state = None
        self.rows = 0
        self.finished: dict[str, list] = {}  # text -> [log weight (summed), particle, particles that wrote it]
        self.temperature = max(params.temperature, MIN_TEMPERATURE)
        self.filters = SamplingParams(top_k=params.top_k, top_p=params.top_p, min_p=params.min_p)
        self.penalty = params.repetition_penalty
        self.noise = params.noise

    def _probs(self, logits: Tensor, seen: Tensor | None) -> tuple[Tensor, Tensor]:
        """The target's next-piece probabilities (penalty, temperature, filters) and the proposal's logits
        (the same plus Gumbel noise when asked for), per row."""
        z = logits.float()
        if seen is not None and self.penalty != 1:
            z = penalise(z, seen, torch.tensor(self.penalty))
        z = (z - z.amax(-1, keepdim=True)) / self.temperature
        z = filter_logits(z, [self.filters] * z.shape[0])
        target = torch.softmax(z.double(), -1)
        if self.noise > 0:
            noise = gumbel(z.shape, self.generator, torch.float64)
            noisy = torch.where(torch.isinf(z), z.double(), z.double() + self.noise * noise)
            return target, torch.softmax(noisy, -1)
        return target, target

    def read_prompt(self) -> Steps[None]:
        """The prompt, a slice per step (the same bits as one read: model.prompt_cache)."""
        reading = self.prompts.reader(self.prompt_ids, mix_cache=False)  # writing: the model's own (step)
        yield from reading.steps()
        self.prompt_logits, self.prompt_state = reading.logits, reading.state

    def run_round(self, count: int, max_rows: int) -> Steps[None]:
        rule, table = self.rule, self.rule.table
        parts = [_Particle() for _ in range(count)]
        logw = torch.zeros(count, dtype=torch.float64)
        model = self.model
        state = model.repeat_rows(self.prompt_state, count)
        logits = self.prompt_logits.expand(count, -1)
        seen = None
        if self.penalty != 1:
            seen = torch.zeros(count, self.tokenizer.vocab_size, dtype=torch.bool)
            seen[:, self.prompt_ids] = True
        max_pieces = 12 + 3 * rule.high
        for _ in range(max_pieces):
            if not parts or self.rows + len(parts) > max_rows:
                break
            # The model's states stay on its device; the particles' bookkeeping is on the CPU.
            logits = logits.cpu()
            target, proposal = self._probs(logits, seen)
            masks = torch.stack([_mask(p, rule) for p in parts])
            allowed = proposal * masks
            z_prop = allowed.sum(-1)
            alive = z_prop > 0
            choice = torch.zeros(len(parts), dtype=torch.long)
            if alive.any():
                u = torch.rand(len(parts), generator=self.generator, dtype=torch.float64)
                choice = inverse_cdf(allowed, u, z_prop)
            rows = torch.arange(len(parts))
            if self.noise > 0:  # importance weight of a noisy proposal: target / proposal
                inc = target[rows, choice].log() - (allowed[rows, choice] / z_prop).log()
            else:
                inc = z_prop.log()
            logw = torch.where(alive, logw + inc, torch.full_like(logw, -math.inf))
            true_logp = torch.log_softmax(logits.double(), -1)[rows, choice].tolist()
            keep = []
            for i, p in enumerate(parts):
                if not alive[i]:
                    continue
                p.logprob += true_logp[i]
                _advance(p, int(choice[i]), table, rule)
                if p.finished:
                    self._finish(p, float(logw[i]))
                else:
                    keep.append(i)
            if not keep:
                break
            keep_t = torch.tensor(keep)
            parts = [parts[i] for i in keep]
            logw, choice = logw[keep_t], choice[keep_t]
            state = model.select_rows(state, keep_t.to(model.device))
            if seen is not None:
                seen = seen[keep_t]
                seen[torch.arange(len(keep)), choice] = True
            parts, logw, state, choice, seen = self._resample(parts, logw, state, choice, seen)
            logits, state = model.step(choice.to(model.device), state, mix_cache=False)
            self.rows += len(parts)
            yield len(parts)

    def _resample(self, parts, logw, state, choice, seen):
        """Systematic resampling of the live particles when their effective sample size falls below half;
        their total weight is kept, so finished lines and live ones stay comparable."""
        count = len(parts)
        total = torch.logsumexp(logw, 0)
        weights = torch.exp(logw - total)
        ess = 1.0 / float((weights ** 2).sum())
        if ess >= count / 2:
            return parts, logw, state, choice, seen
        u = float(torch.rand(1, generator=self.generator, dtype=torch.float64))
        positions = (torch.arange(count, dtype=torch.float64) + u) / count
        index = torch.searchsorted(weights.cumsum(0), positions).clamp_max(count - 1)
        copies = [_copy(parts[i]) for i in index.tolist()]
        new_logw = torch.full((count,), float(total) - math.log(count), dtype=torch.float64)
        return (copies, new_logw, self.model.select_rows(state, index.to(self.model.device)), choice[index],
                seen[index] if seen is not None else None)

    def _finish(self, p: _Particle, logw: float) -> None:
        entry = self.finished.get(p.text)
        if entry is None:
            self.finished[p.text] = [logw, p, 1]
        else:
            entry[0] = float(torch.logaddexp(torch.tensor(entry[0]), torch.tensor(logw)))
            entry[2] += 1

    def select(self, n: int, generator: torch.Generator, choose: str) -> Steps[list[Line]]:
        """`n` distinct finished lines, most fluent first. "fluent": the n with the fewest nats per character
        under the model; "sample": n drawn by their summed importance weights, without replacement (a sample of
        the model at the request's temperature, conditioned on the constraints)."""
        texts = list(self.finished)
        if choose == "sample":
            weights = torch.tensor([self.finished[t][0] for t in texts], dtype=torch.float64)
            u = torch.rand(len(texts), generator=generator, dtype=torch.float64).clamp(1e-20, 1 - 1e-16)
            keys = weights - torch.log(-torch.log(u))  # Gumbel top-n: a sample without replacement
        else:
            keys = torch.tensor([self.finished[t][1].logprob / (len(t) + 1) for t in texts], dtype=torch.float64)
        ranked = [texts[i] for i in keys.argsort(descending=True, stable=True).tolist()]
        lines = []
        for text in distinct_lines(ranked, n):
            lines.append((yield from self._line(text)))
        return sorted(lines, key=lambda line: line.nats_per_char)

    def end_words(self, limit: int) -> list[EndWord]:
        """The `limit` commonest end words of the lines the search wrote, each with its share of the particles that
        finished (docs/songwriting.md: why particles and not their importance weights) and its most fluent line."""
        total = sum(count for _, _, count in self.finished.values())
        found: dict[str, list] = {}  # lower-cased word -> [share, spelling, line, nats per char]
        for text, (_, p, count) in self.finished.items():
            fluency = -p.logprob / (len(text) + 1)
            entry = found.setdefault(p.last_word.lower(), [0.0, p.last_word, text, fluency])
            entry[0] += count / total
            if fluency < entry[3]:
                entry[1:] = [p.last_word, text, fluency]
        ranked = sorted(found.values(), key=lambda entry: -entry[0])[:limit]
        return [EndWord(word, share, line) for share, word, line, _ in ranked]

    def openings(self) -> int:
        """How many different openings (first words) the finished lines have."""
        return len({opening(text) for text in self.finished})

    def _line(self, text: str) -> Steps[Line]:
        weight, p, _ = self.finished[text]
        rule = self.rule
        ids = self.tokenizer.encode(text + "\n")
        logprob = score_continuation(self.model, self.prompt_state, self.prompt_logits, ids)
        self.rows += len(ids)
        yield len(ids)
        count = p.primary if (1 << p.primary) & p.end_totals else _nearest(p.end_totals, p.primary)
        end = p.last_word.lower()
        rhymes = rule.end.target is not None and end in (rule.end.allowed or ())
        return Line(text, count, p.last_word, rhymes, logprob, -logprob / (len(text) + 1), len(ids), weight)


def well_cased(word: str) -> bool:
    """Written as a word is: lower-case, capitalised or in capitals ("theY" is a spelling the model made up)."""
    return word in (word.lower(), word.capitalize(), word.upper())


def distinct_lines(ranked: Sequence[str], n: int) -> list[str]:
    """Up to `n` of the lines `ranked` (best first): the best of each opening first; then, if too few, the best
    of the rest that say other words (not the same line a comma less, nor in other case)."""
    chosen, openings = [], set()
    for text in ranked:
        if len(chosen) < n and opening(text) not in openings:
            chosen.append(text)
            openings.add(opening(text))
    said = {_words(text) for text in chosen}
    for text in ranked:
        if len(chosen) < n and _words(text) not in said:
            chosen.append(text)
            said.add(_words(text))
    return chosen


def opening(text: str) -> tuple[str, ...]:
    """A line's first OPENING_WORDS words, lower-case: two candidates that share them read as one line."""
    return _words(text)[:OPENING_WORDS]


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.lower() for word in _WORDS.findall(text))


_WORDS = re.compile(r"(?:[^\W_]|['\u2019])+")


def _copy(p: _Particle) -> _Particle:
    return _Particle(p.text, p.word, p.totals, p.primary, p.end_totals, p.can_end, p.run, p.last_word,
                     list(p.pieces), p.finished, p.logprob)


def _nearest(mask: int, value: int) -> int:
    return min(counts_of(mask), key=lambda s: (abs(s - value), s))


def score_continuation(model: LanguageModel, state: Tensor, logits: Tensor, ids: list[int]) -> float:
    """log P(ids | the prompt whose final state and next-piece logits are given), at temperature 1."""
    logp = torch.log_softmax(logits.double(), -1)[0, ids[0]].cpu()
    if len(ids) > 1:
        steps, _ = model.read(model.tokens(ids[:-1]), state, every_piece=True, mix_cache=False)
        steps = torch.log_softmax(steps.double(), -1).cpu()
        logp = logp + steps[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum()
    return float(logp)


# -- verses --------------------------------------------------------------------------------------


def parse_scheme(scheme: str) -> str:
    if not isinstance(scheme, str) or not 1 <= len(scheme) <= 16 or not all("A" <= c <= "Z" for c in scheme):
        raise ValueError(f"scheme must be 1 to 16 letters A-Z (X: a line that need not rhyme), got {scheme!r}")
    return scheme


def generate_verse(*args, **kwargs) -> Verse:
    """`verse_steps` run to its end (the command line, the tests)."""
    return run_to_end(verse_steps(*args, **kwargs))


@torch.inference_mode()
def verse_steps(
    model: LanguageModel,
    tokenizer: Tokenizer,
    lexicon: Lexicon,
    prompt: str,
    scheme: str,
    syllables: int | Sequence[int | Sequence[int]] | None = None,
    rhyme: str = "perfect",
    params: SamplingParams = SamplingParams(temperature=0.8),
    particles: int = PARTICLES,
    max_rows: int = 4 * MAX_ROWS,
    prompts: PromptCache | None = None,
    end_words: frozenset[str] | None = None,
    stress: str | Sequence[str] | None = None,
) -> Steps[Verse]:
    """A stanza to `scheme` (e.g. "ABAB"; X = free): lines with one letter rhyme with each other (`rhyme`
    kind), lines with different letters do not, no end word twice; `syllables` one for every line or a list
    (each an int or [min, max]). Raises ConstraintError when it cannot be done within the budget."""
    scheme = parse_scheme(scheme)
    if syllables is None or isinstance(syllables, int):
        per_line = [syllables] * len(scheme)
    else:
        per_line = list(syllables)
        if len(per_line) != len(scheme):
            raise ValueError(f"syllables must be one integer or a list with one entry per line of the scheme "
                             f"({len(scheme)}), got {len(per_line)} entries")
    for value in per_line:
        syllable_range(value)
    stresses = [stress] * len(scheme) if stress is None or isinstance(stress, str) else list(stress)
    if len(stresses) != len(scheme):
        raise ValueError(f"stress must be one pattern or a list with one per line of the scheme ({len(scheme)}), "
                         f"got {len(stresses)}")
    for pattern, count in zip(stresses, per_line):
        if pattern is not None:
            check_stress(pattern, count)
    seed = random_seed() if params.seed is None else params.seed
    sub = make_generator(seed)
    common = common_words(tokenizer, lexicon)
    rows = 0
    banned: set[str] = set()  # end words given up on: a letter's first word whose rhymes could not be found
    attempts = 0
    while True:
        attempts += 1
        result, failure = yield from _verse_attempt(model, tokenizer, lexicon, prompt, scheme, per_line, rhyme,
                                                    params, sub, particles, max_rows - rows, prompts, common, banned,
                                                    end_words, stresses)
        rows += result[2]
        if failure is None:
            lines, prompt_tokens, _ = result
            text = "\n".join(line.text for line, _ in lines)
            return Verse(text, lines, seed, prompt_tokens, sum(line.pieces for line, _ in lines), rows)
        error, give_up = failure
        if give_up is None or attempts >= 3 or rows >= max_rows:
            raise error
        banned.add(give_up)


def _verse_attempt(model, tokenizer, lexicon, prompt, scheme, per_line, rhyme, params, generator, particles,
                   max_rows, prompts, common, banned, end_words, stresses):
    ends: dict[str, str] = {}  # letter -> its first end word (lower-case)
    used: set[str] = set()
    lines: list[tuple[Line, str]] = []
    rows = 0
    prompt_tokens = 0
    context = prompt if not prompt or prompt.endswith("\n") else prompt + "\n"
    for index, letter in enumerate(scheme):
        others = frozenset().union(*(lexicon.rhymes(e, rhyme) | {e} for k, e in ends.items() if k != letter))
        if letter == "X":
            rule = EndRule(excluded=frozenset(used))
        elif letter in ends:
            rule = EndRule(allowed=lexicon.rhyme_masks(ends[letter], rhyme), excluded=frozenset(used) | others,
                           target=ends[letter], kind=rhyme)
        else:
            needed = scheme.count(letter, index + 1)
            excluded = frozenset(used) | others | frozenset(banned)

            def enough(word: str, needed=needed, excluded=excluded) -> bool:
                if not needed:
                    return True
                partners = [w for w in lexicon.rhymes(word, rhyme) if w not in excluded and w in common]
                return len(partners) >= 2 * needed

            rule = EndRule(excluded=excluded, accept=enough)
        sub_params = SamplingParams(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                                    min_p=params.min_p, repetition_penalty=params.repetition_penalty,
                                    noise=params.noise, seed=int(torch.randint(0, 2**62, (1,), generator=generator)))
        try:
            result = yield from line_steps(model, tokenizer, lexicon, context, n=1, syllables=per_line[index],
                                    params=sub_params, end_rule=rule, particles=particles,
                                    max_rows=max(0, min(MAX_ROWS, max_rows - rows)),
                                    prompts=prompts, end_words=end_words, stress=stresses[index])
        except ConstraintError as error:
            first = scheme.index(letter)
            give_up = ends.get(letter) if letter != "X" and first < index else None
            message = f"line {index + 1} ({letter}) of scheme {scheme}: {error}"
            return ([], 0, rows), (ConstraintError("scheme" if give_up else error.field, message), give_up)
        rows += result.rows
        prompt_tokens = prompt_tokens or result.prompt_tokens
        line = result.lines[0]
        end = line.end_word.lower()
        if letter != "X" and letter not in ends:
            ends[letter] = end
        used.add(end)
        lines.append((line, letter))
        context += line.text + "\n"
    for line, letter in lines:  # a line rhymes when its letter has other lines
        line.rhymes = letter != "X" and scheme.count(letter) > 1
    return (lines, prompt_tokens, rows), None


_COMMON: dict[tuple[int, int], frozenset[str]] = {}


def common_words(tokenizer: Tokenizer, lexicon: Lexicon) -> frozenset[str]:
    """Dictionary words the tokenizer writes (after a space) in at most two pieces: words its training text
    used often, the ones a model will actually write. A rhyme letter's first word needs enough of them."""
    key = (id(tokenizer), id(lexicon))
    if key not in _COMMON:
        table = piece_table(tokenizer, lexicon)
        singles = {table.word[i] for i, t in enumerate(table.text) if t.startswith(" ") and table.kind[i] == BREAK}
        words = {w for w in singles if w in lexicon.masks}
        # two pieces: a word piece after a space and a continuation
        conts = {table.word[i] for i, k in enumerate(table.kind) if k == CONT}
        for w in lexicon.masks:
            for cut in range(1, len(w)):
                if w[:cut] in singles and w[cut:] in conts:
                    words.add(w)
                    break
        _COMMON[key] = frozenset(words)
    return _COMMON[key]

