"""The exact next-word distribution restricted to a set of words (rhymes, syllable counts).

`/v1/predict` defines a word and its probability (docs/api.md; `lyricist.model.units`, `lyricist.model.prediction`):
a word is a maximal run of letters, digits and apostrophes after any leading
whitespace, and P(w) is the product of the probabilities of the tokenizer's own
spelling of it times the probability that the piece after it starts a new unit,
summed over the whitespace it may come after (" night", "night", "  night").
For a given set of words that sum is computed directly instead of searched for:

- For every lead `l` (whitespace) and word `w` the path is `spelling(l + w)`, the
  pieces the tokenizer itself writes. All paths form one trie rooted at the
  prompt's state; the model steps its most probable unstepped nodes, whatever
  their depth, many in one batched call, so the cost is one model row per trie
  node and a row budget goes where most of the mass is. A node's children are
  made only when it is stepped, so a branch left out costs nothing.
- A path's leading whitespace-only pieces are trie nodes like any other: from
  every such node `W` that is the tokenizer's spelling of its whitespace, the
  leads tried are `text(W) + s` for each whitespace `s` a piece may start with,
  keeping the paths whose whitespace part is exactly `W` (each counted path has
  one such `W`, so none is counted twice and none is missed).
- At the node that spells `l + w`, the word ends with the probability of the
  pieces that start a new unit (a non-word first character, or the end of the
  text), plus what ends it through a character spread over byte pieces (followed
  down to the character, as the search does). Pieces of word characters then
  others ("s," in some vocabularies) are counted where the tokenizer spells that
  way, as `search_words` counts them.

A node below `tolerance` times the set's estimated mass (or below `floor`, or past
the row budget) is not followed; its probability is added to `unresolved`, an upper
bound on the mass the listed words may still miss (no node left out lies under
another: they are disjoint events, so the bound is their plain sum), and `exact`
says whether that bound is within 1% of the mass found. With `tolerance=0` the
figures are exact to rounding.

Capitalised forms are separate units, exactly as `/v1/predict` lists them:
"Night" is not "night". `surface_forms` gives each dictionary word its lower-case
and capitalised forms ("night", "Night"; "i" -> "i", "I"), which the routes ask
for: a capitalised word is the same word at the start of a line. ALL-CAPS forms
are left out.
"""

from __future__ import annotations

import codecs
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from lyricist.model.network import LanguageModel, evaluating
from lyricist.model.prediction import entropy, next_piece_probs
from lyricist.model.prompt_cache import PromptCache
from lyricist.model.sampling import keep_only
from lyricist.model.steps import Steps, run_to_end
from lyricist.model.tokenizer import Tokenizer
from lyricist.model.units import LINE_BREAKS, classify, is_whole, is_word_char
from lyricist.model.vocabulary import vocabulary_of
from torch import Tensor

TOLERANCE = 3e-5  # a node less probable than this times the set's estimated mass is bounded, not followed
FALLBACK_SCALE = 1e-2  # the scale of that estimate before any word of the set is in sight
EXACT_SHARE = 1e-2  # `exact`: what may be missing is at most this share of the mass found
MAX_ROWS = 2048  # model rows per request (a row is one trie node)
FRAGMENT_SHARE = 1e-2  # of the tolerance: a byte-piece continuation after a word is followed above this
MAX_LEAD_DEPTH = 3  # whitespace-only pieces a path may start with
CHUNK_ROWS = 1024  # rows per model call (memory); a level may take several
# ... where every row also reads the song's memory (model/memory.py): its slots shared, each row's own few, but
# the cache's mixture is per row and per piece of the vocabulary: fewer rows a call keep a step short (a stream
# beside it waits for one)
CHUNK_ROWS_WITH_MEMORY = 128
KEPT_SETS = 64  # word sets checked, and trie levels below whitespace, kept (a request's searches share theirs)
LAY_OUT_PATHS = 8192  # paths laid out between two steps, the first time a word set is searched
NARROW_PIECES = 16  # pieces past the prompt that a row's cut ring holds before it grows back


@dataclass
class ConstrainedPrediction:
    prompt_tokens: int
    distribution: list[tuple[str, float]]  # (word, probability given the constraint), most probable first
    probs: dict[str, float]  # every qualifying word with mass: its unconditional probability (as /v1/predict's)
    constraint_mass: float  # P(the next word is one of the set) = sum(probs)
    unresolved: float  # upper bound on qualifying mass not found (nodes not followed)
    entropy: float  # of the full next-piece distribution, as /v1/predict reports it
    rows: int  # model rows used

    @property
    def exact(self) -> bool:
        """Whether what may be missing is at most EXACT_SHARE of the mass found: each listed (renormalised)
        probability is then within that share of its value."""
        return self.unresolved <= EXACT_SHARE * self.constraint_mass


def surface_forms(words: Iterable[str]) -> list[str]:
    """Each word lower-case and capitalised (the capitalised form starts a line), in a stable order."""
    forms: dict[str, None] = {}
    for word in words:
        low = word.lower()
        forms[low] = None
        forms[low[:1].upper() + low[1:]] = None
    return list(forms)


class _Paths:
    """The paths of the set through one trie node: (pieces from the prompt, the word or None for a mixed
    start). Grouped by their next piece the first time a search steps the node, and kept with the level they
    belong to (`_Tables.level`), so later searches make the node's children without going through its paths."""

    __slots__ = ("_groups", "_paths")

    def __init__(self, paths: list[tuple[tuple[int, ...], str | None]]):
        self._paths = paths
        self._groups: list[tuple[int, str | None, bool, _Paths | None]] | None = None

    def ungrouped(self) -> int:
        """How many paths the next `groups` call goes through (0 once grouped)."""
        return len(self._paths) if self._groups is None else 0

    def groups(self, depth: int) -> list[tuple[int, str | None, bool, _Paths | None]]:
        """By next piece (the piece at `depth`): the word of the set it ends, whether it ends a word beginning
        a mixed piece may finish, and the paths that go on through it."""
        if self._groups is None:
            by_piece: dict[int, list] = {}  # piece -> [word, mixed, deeper paths]
            for path, word in self._paths:
                group = by_piece.setdefault(path[depth], [None, False, []])
                if len(path) == depth + 1:
                    if word is None:
                        group[1] = True
                    else:
                        group[0] = word
                else:
                    group[2].append((path, word))
            self._groups = [(piece, word, mixed, _Paths(deeper) if deeper else None)
                            for piece, (word, mixed, deeper) in by_piece.items()]
            self._paths = []
        return self._groups


class _Node:
    """A piece sequence after the prompt on the way to some words of the set. Its children are made only when it
    is stepped (`entries` holds the paths through it until then), so improbable branches cost nothing."""

    __slots__ = ("data", "depth", "entries", "mixed", "parent", "pending", "piece", "prob", "row", "whitespace",
                 "word")

    def __init__(self, parent: _Node | None, piece: int, data: bytes, depth: int, prob: float = 0.0):
        self.parent, self.piece, self.data, self.depth, self.prob = parent, piece, data, depth, prob
        self.entries: _Paths | None = None  # the paths of the set through it
        self.word: str | None = None  # the word of the set its text spells whole (lead + word)
        self.pending: bytes | None = None  # lead + word + the first bytes of a character: `word` may still end
        self.whitespace = False  # a whitespace-only node spelled its own way: leads are tried from it
        self.mixed = False  # a word beginning from which a mixed piece ("s,") may finish a word of the set
        self.row: tuple[int, int] | None = None  # (batch, row) of its state once stepped

    def path(self) -> tuple[int, ...]:
        pieces, node = [], self
        while node.parent is not None:
            pieces.append(node.piece)
            node = node.parent
        return tuple(reversed(pieces))


class _Tables:
    """Per tokenizer: whitespace pieces, byte pieces, mixed pieces, spellings (cached)."""

    def __init__(self, tokenizer: Tokenizer):
        v = vocabulary_of(tokenizer)
        self.v = v
        self.tokenizer = tokenizer
        data = tokenizer.piece_bytes
        self.whitespace_ids = [i for i, d in enumerate(data) if is_whole(d) and d
                               and all(c.isspace() and c not in LINE_BREAKS for c in d.decode())]
        self.whitespace_set = frozenset(self.whitespace_ids)
        # After a whole word: part of a character that may end it (the first bytes of one), and pieces that
        # are not whole but end it at once (a byte that cannot start a character reads as U+FFFD).
        heads = [_head(d) for d in data]
        self.opens = torch.tensor([bool(d) and not is_whole(d) and heads[i] == "" for i, d in enumerate(data)])
        self.ends_at_once = torch.tensor([bool(d) and not is_whole(d) and heads[i] != ""
                                          and not is_word_char(heads[i][0]) for i, d in enumerate(data)])
        self.mixed = [i for i, d in enumerate(data) if _is_mixed(d)]
        self.leads = [lead for lead in v.leads if all(c.isspace() and c not in LINE_BREAKS for c in lead)]
        lead_id = {lead: i for i, lead in enumerate(v.leads)}
        # Per lead: the first pieces a word after that lead may have (to bound a lead not tried).
        starts = v.start_word | torch.tensor([bool(d) and not is_whole(d) for d in data])
        self.lead_starts = {lead: (v.start_lead_id == lead_id[lead]) & starts for lead in self.leads}
        self._spellings: dict[str, tuple[int, ...]] = {}
        self._after_pending: dict[bytes, tuple[Tensor, Tensor]] = {}
        # Most of a search's own work is laying out every word's path below the whitespace nodes; a request asks
        # about the same set again and again (each partial line, each proposal), so those levels are kept.
        self._word_sets: OrderedDict[tuple[str, ...], tuple[str, ...]] = OrderedDict()
        self._levels: OrderedDict[tuple, list[tuple[int, str | None, bool, _Paths | None]]] = OrderedDict()

    def word_set(self, words: Iterable[str]) -> tuple[str, ...]:
        """`words` without repeats, each checked to be one word unit (ValueError otherwise)."""
        given = tuple(words)
        found = _kept(self._word_sets, given)
        if found is None:
            for word in given:
                if not word or not all(is_word_char(c) for c in word):
                    raise ValueError(f"not one word unit: {word!r}")
            found = _keep(self._word_sets, given, tuple(dict.fromkeys(given)))
        return found

    def level(self, key: tuple, build) -> list[tuple[int, str | None, bool, _Paths | None]]:
        found = _kept(self._levels, key)
        return found if found is not None else _keep(self._levels, key, build())

    def kept_level(self, key: tuple) -> list[tuple[int, str | None, bool, _Paths | None]] | None:
        return self._levels.get(key)

    def after_pending(self, pending: bytes) -> tuple[Tensor, Tensor]:
        """After a word and the first bytes `pending` of a character: the pieces that end the word (they
        finish a character that is no word character, or the text ends) and those that leave it unfinished."""
        found = self._after_pending.get(pending)
        if found is None:
            ends, opens = [], []
            for i, data in enumerate(self.v.piece_bytes):
                head = _head(pending + data)
                ends.append(i == self.v.eos_id or (bool(head) and not is_word_char(head[0])))
                opens.append(not head and bool(data) and len(pending) + len(data) < 4)
            found = self._after_pending[pending] = (torch.tensor(ends), torch.tensor(opens))
        return found

    def spelling(self, text: str) -> tuple[int, ...]:
        path = self._spellings.get(text)
        if path is None:
            path = tuple(self.tokenizer.encode(text))
            if len(self._spellings) < 1_000_000:
                self._spellings[text] = path
        return path


def _kept(kept: OrderedDict, key):
    found = kept.get(key)
    if found is not None:
        kept.move_to_end(key)
    return found


def _keep(kept: OrderedDict, key, value):
    kept[key] = value
    if len(kept) > KEPT_SETS:
        kept.popitem(last=False)
    return value


_TABLES: dict[int, _Tables] = {}


def tables(tokenizer: Tokenizer) -> _Tables:
    found = _TABLES.get(id(tokenizer))
    if found is None or found.tokenizer is not tokenizer:
        found = _TABLES[id(tokenizer)] = _Tables(tokenizer)
    return found


@torch.inference_mode()
def constrained_next_words(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    words: Iterable[str],
    top_k: int | None = None,
    temperature: float = 1.0,
    tolerance: float = TOLERANCE,
    floor: float = 0.0,
    max_rows: int = MAX_ROWS,
    prompts: PromptCache | None = None,
) -> ConstrainedPrediction:
    """The distribution of the next word after `prompt` over `words` (surface forms, each one word unit).

    `distribution` is renormalised over the set (its `top_k` most probable, or all); `probs`
    and `constraint_mass` are the unconditional figures, those `/v1/predict` would list.
    `temperature` is applied to every next-piece distribution, as `/v1/predict` does.
    """
    return run_to_end(constrained_steps(model, tokenizer, prompt, words, top_k, temperature, tolerance, floor,
                                        max_rows, prompts))


@torch.inference_mode()
def constrained_steps(model: LanguageModel, tokenizer: Tokenizer, prompt: str, words: Iterable[str],
                      top_k: int | None = None, temperature: float = 1.0, tolerance: float = TOLERANCE,
                      floor: float = 0.0, max_rows: int = MAX_ROWS,
                      prompts: PromptCache | None = None) -> Steps[ConstrainedPrediction]:
    """`constrained_next_words` one model call per step (model.steps): the engine interleaves them."""
    words = tables(tokenizer).word_set(words)
    with evaluating(model):
        return (yield from _constrained(model, tokenizer, prompt, words, top_k, temperature, tolerance, floor,
                                        max_rows, prompts))


def _constrained(model, tokenizer, prompt, words, top_k, temperature, tolerance, floor, max_rows, prompts):
    t = tables(tokenizer)
    ids, typed = tokenizer.encode_prompt(prompt)
    reading = (prompts or PromptCache(model)).reader(ids)
    yield from reading.steps()
    # Each stepped row carries its own ring of the continuous cache's: only the slots the search fills (a word's
    # few pieces; a deeper row's ring is made whole, model.memory), the prompt's kept once for all of them.
    logits, state = reading.logits, reading.state.narrowed(NARROW_PIECES)
    if typed:  # the words after the prompt's final space
        logits = keep_only(logits, tokenizer.pieces_beginning(typed))
    # The model runs on its device, the trie search on the CPU: one distribution crosses per call.
    root_probs = next_piece_probs(logits, temperature)[0].cpu()
    search = _TrieSearch(t, words, floor, tolerance)
    root = _Node(None, -1, b"", 0, 1.0)
    root.whitespace, root.row = True, (0, 0)
    batches = [state]  # states of stepped nodes: a node's state is row row[1] of batches[row[0]]
    frontier = _Frontier()
    stepped = [(root, root_probs)]
    rows = 0
    chunk_rows = CHUNK_ROWS if state.memory is None else CHUNK_ROWS_WITH_MEMORY
    while stepped:
        paths = 0  # paths sorted since the last step: a level below a large word set takes a while to visit
        for node, node_probs in stepped:
            if node.whitespace:  # the first time a word set is searched, laying out its paths takes a while
                yield from search.lay_out(node, node_probs)
            paths += node.entries.ungrouped() if node.entries is not None else 0
            if paths > LAY_OUT_PATHS:
                paths = 0
                yield 0
            frontier.extend(search.visit(node, node_probs))
        chunk = frontier.take(search, tolerance, floor, min(chunk_rows, max_rows - rows))
        stepped = []
        if chunk:
            by_batch: dict[int, list[_Node]] = {}  # the parents' rows gathered a batch at a time
            for node in chunk:
                by_batch.setdefault(node.parent.row[0], []).append(node)
            chunk = [node for nodes in by_batch.values() for node in nodes]
            state = model.stack_rows([model.select_rows(batches[batch], [node.parent.row[1] for node in nodes])
                                      for batch, nodes in by_batch.items()])
            # The search's batches are its own (the same prompt makes the same rounds), so no blocks: one product.
            logits, state = model.step(model.tokens([n.piece for n in chunk]), state, invariant=False,
                                       in_place=True)  # stacked anew
            chunk_probs = next_piece_probs(logits, temperature).cpu()
            batches.append(state)
            for row, node in enumerate(chunk):
                node.row = (len(batches) - 1, row)
                stepped.append((node, chunk_probs[row]))
            rows += len(chunk)
            yield len(chunk)
    search.unresolved += frontier.mass()  # all that may lie under the nodes not followed

    probs = search.probs
    mass = sum(probs.values())
    ranked = sorted(((w, p) for w, p in probs.items() if p > 0), key=lambda item: -item[1])
    distribution = [(w, p / mass) for w, p in ranked[: top_k or len(ranked)]] if mass > 0 else []
    return ConstrainedPrediction(len(ids) + bool(typed), distribution, dict(ranked), mass, search.unresolved,
                                 entropy(root_probs), rows)


class _Frontier:
    """The nodes made and not yet stepped, most probable first. The search steps the likeliest of them across
    levels, so a row budget goes to the pieces most of the set's mass lies under, wherever they are in the trie."""

    def __init__(self):
        self._heap: list[tuple[float, int, _Node]] = []
        self._order = itertools.count()  # ties keep the order the nodes were made in
        self._words_in_sight = 0.0  # the mass of the nodes here that spell a whole word: at most what they add

    def extend(self, nodes: Iterable[_Node]) -> None:
        for node in nodes:
            heapq.heappush(self._heap, (-node.prob, next(self._order), node))
            if node.word is not None:
                self._words_in_sight += node.prob

    def take(self, search: _TrieSearch, tolerance: float, floor: float, budget: int) -> list[_Node]:
        """Up to `budget` nodes to step next (one batched call), most probable first, each above `floor` and
        above `tolerance` times the set's estimated mass (found so far, plus the whole words in sight)."""
        estimate = search.found + max(0.0, self._words_in_sight)
        threshold = max(floor, tolerance * estimate if estimate > 0 else tolerance * FALLBACK_SCALE)
        taken = []
        while self._heap and len(taken) < budget and -self._heap[0][0] > threshold:
            node = heapq.heappop(self._heap)[2]
            if node.word is not None:
                self._words_in_sight -= node.prob
            taken.append(node)
        return taken

    def mass(self) -> float:
        """The probability of the nodes left (disjoint events: no node here lies under another)."""
        return sum(-negative for negative, _, _ in self._heap)


class _TrieSearch:
    def __init__(self, t: _Tables, words: tuple[str, ...], floor: float, tolerance: float):
        self.t, self.words, self.floor = t, words, floor
        # A character spread over byte pieces after a word is followed only above this; below, it is bounded.
        self.fragment_floor = max(floor, tolerance * FRAGMENT_SHARE)
        self.tolerance = tolerance
        self.wanted = set(words)
        self.probs: dict[str, float] = dict.fromkeys(words, 0.0)
        self.found = 0.0  # sum(probs.values())
        self.unresolved = 0.0
        self.mixed_starts = _mixed_starts(t, words) if t.mixed else []

    def visit(self, node: _Node, node_probs: Tensor) -> list[_Node]:
        """Count what ends at `node` (its next-piece distribution is known); return its children to step."""
        v = self.t.v
        if node.pending is not None:
            return self._pending(node, node_probs)
        out: list[_Node] = []
        if node.word is not None:  # a new unit starts: the word is whole
            self._count(node.word, node.prob * float(node_probs[v.ends_word | self.t.ends_at_once].sum()))
            out.extend(self._open_characters(node, node_probs))
        if self.t.mixed:
            self._settle_mixed(node, node_probs)
        spaces: list[int] = []
        groups: list[tuple[int, str | None, bool, _Paths | None]] = []
        if node.whitespace:
            spaces, groups = self._below_whitespace(node, node_probs)
        elif node.entries is not None:  # the paths through this node, by their next piece
            groups = node.entries.groups(node.depth)
            node.entries = None
        # A child no likelier than this will never be stepped (the threshold only rises with the mass found):
        # its mass is bounded at once rather than made a node.
        never = max(self.floor, self.tolerance * self.found)
        if spaces:
            for piece, p in zip(spaces, (node_probs[spaces] * node.prob).tolist()):
                if p > never:
                    child = _Node(node, piece, node.data + v.piece_bytes[piece], node.depth + 1, p)
                    child.whitespace = True
                    out.append(child)
                else:
                    self.unresolved += p
        if groups:
            pieces = [group[0] for group in groups]
            for (piece, word, mixed, deeper), p in zip(groups, (node_probs[pieces] * node.prob).tolist()):
                if p > never:
                    child = _Node(node, piece, node.data + v.piece_bytes[piece], node.depth + 1, p)
                    child.word, child.mixed, child.entries = word, mixed, deeper
                    out.append(child)
                else:
                    self.unresolved += p
        return out

    def _count(self, word: str, p: float) -> None:
        self.probs[word] += p
        self.found += p

    # -- the trie -----------------------------------------------------------------------------

    def _leads(self, node: _Node, node_probs: Tensor) -> tuple[list[str], float]:
        """The leads tried from whitespace node `node`, and the mass bounded under those that are not."""
        leads, bounded = [], 0.0
        for lead in self.t.leads:
            bound = node.prob * float(node_probs[self.t.lead_starts[lead]].sum())
            if bound <= self.floor:
                bounded += bound
            else:
                leads.append(lead)
        return leads, bounded

    def lay_out(self, node: _Node, node_probs: Tensor) -> Steps[None]:
        """The level below whitespace node `node` made and kept (`_Tables.level`) if it is not yet, a step (no
        model call) after every LAY_OUT_PATHS paths."""
        leads, _ = self._leads(node, node_probs)
        key = (self.words, node.data, tuple(leads))
        if self.t.kept_level(key) is None:
            level = yield from self._level(node, leads)
            self.t.level(key, lambda: level)

    def _below_whitespace(self, node: _Node, node_probs: Tensor) -> tuple[list[int], list]:
        """The children of whitespace node `node`: its whitespace pieces spelled their own way, and the level of
        the set's paths after every lead tried from it (kept: shared with later searches, never changed)."""
        t = self.t
        leads, bounded = self._leads(node, node_probs)
        self.unresolved += bounded
        spaces = []
        if node.depth < MAX_LEAD_DEPTH:
            prefix = node.path()
            for piece in t.whitespace_ids:
                if t.spelling((node.data + t.v.piece_bytes[piece]).decode()) == prefix + (piece,):
                    spaces.append(piece)
        else:  # deeper whitespace: bounded by its mass
            self.unresolved += node.prob * float(node_probs[t.whitespace_ids].sum())
        return spaces, t.level((self.words, node.data, tuple(leads)), lambda: run_to_end(self._level(node, leads)))

    def _level(self, node: _Node, leads: list[str]) -> Steps[list[tuple[int, str | None, bool, _Paths | None]]]:
        """Below whitespace node `node`, by next piece: the word of the set that piece ends, whether it ends a
        word beginning a mixed piece may finish, and the paths that go on through it."""
        t = self.t
        prefix, base, depth = node.path(), node.data.decode(), node.depth
        texts = [(base + lead + word, word) for lead in leads for word in self.words]
        texts += [(base + lead + start, None) for lead in leads for start in self.mixed_starts]
        paths = []
        for number, (text, word) in enumerate(texts, 1):
            if number % LAY_OUT_PATHS == 0:
                yield 0
            path = t.spelling(text)
            # a path whose whitespace is spelled through another whitespace node is that node's
            if len(path) > depth and path[depth] not in t.whitespace_set and path[:depth] == prefix:
                paths.append((path, word))
        return _Paths(paths).groups(depth)

    # -- a character over several byte pieces ---------------------------------------------------

    def _open_characters(self, node: _Node, node_probs: Tensor) -> list[_Node]:
        """After whole word `node.word`: first bytes of a character, which ends it unless it is a word character."""
        t = self.t
        children = node_probs * node.prob
        follow = t.opens & (children > self.fragment_floor)
        self.unresolved += float(children[t.opens & ~follow].sum())
        out = []
        for piece in follow.nonzero().squeeze(1).tolist():
            child = _Node(node, piece, node.data + t.v.piece_bytes[piece], node.depth + 1, float(children[piece]))
            child.word, child.pending = node.word, t.v.piece_bytes[piece]
            out.append(child)
        return out

    def _pending(self, node: _Node, node_probs: Tensor) -> list[_Node]:
        t = self.t
        ends, opens = t.after_pending(node.pending)
        children = node_probs * node.prob
        self._count(node.word, float(children[ends].sum()))
        follow = opens & (children > self.fragment_floor)
        self.unresolved += float(children[opens & ~follow].sum())
        out = []
        for piece in follow.nonzero().squeeze(1).tolist():
            data = t.v.piece_bytes[piece]
            child = _Node(node, piece, node.data + data, node.depth + 1, float(children[piece]))
            child.word, child.pending = node.word, node.pending + data
            out.append(child)
        return out

    # -- word characters then others in one piece -----------------------------------------------

    def _settle_mixed(self, node: _Node, node_probs: Tensor) -> None:
        """Children that are word characters then others: the unit they end, where that is its spelling."""
        t = self.t
        path = None
        for piece in t.mixed:
            p = float(node_probs[piece])
            if p == 0:
                continue
            data = node.data + t.v.piece_bytes[piece]
            unit, _ = classify(data)
            if unit in self.wanted:
                path = path if path is not None else node.path()
                if t.v.spells(data, path + (piece,)):
                    self._count(unit, node.prob * p)


def _mixed_starts(t: _Tables, words: list[str]) -> list[str]:
    """Beginnings of words of the set that a mixed piece may finish ("i" for "is," when "s," is a piece):
    their spellings are trie paths too, though no word of the set may end on them."""
    tails = set()
    for piece in t.mixed:
        text = t.v.piece_bytes[piece].decode().lstrip(" ")
        end = 0
        while end < len(text) and is_word_char(text[end]):
            end += 1
        tails.add(text[:end])
    return sorted({word[:cut] for word in words for cut in range(1, len(word)) if word[cut:] in tails})


def _head(data: bytes) -> str:
    """What `data` decodes to so far (an unfinished last character held back; bad bytes as U+FFFD)."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data)


def _is_mixed(data: bytes) -> bool:
    if not is_whole(data):
        return False
    text = data.decode().lstrip(" ")
    return bool(text) and is_word_char(text[0]) and not all(is_word_char(c) for c in text)
