"""The next-word search: the most probable next units after a prompt, with certified bounds.

Pieces do not line up with words, so `search_words` finds the most probable
units by a best-first search over piece sequences: it expands the most
probable unfinished sequences that the result still depends on (a batch of
them per model call) until no listed unit can change by more than `tolerance`
and no other unit can overtake the last listed one, or the budget is spent.
The bounds are tight because a unit is spelled one way: a unit not yet found
can only come from one unfinished sequence per leading whitespace.
docs/serving.md has the argument.

The search knows the model only through a `Step` (advance some states by one
piece each; their next-piece distributions) and the pieces only through a
`Vocabulary`, so a search restricted to a given set of words (a trie of their
spellings, each word's probability its pieces' times that of a piece ending it,
`Vocabulary.ends_word`) can sit beside it on the same two.

Each round the search says what it needs next, as a `Round`: nothing (its
figures are within tolerance), some nodes to expand, or nothing it can expand
although the figures are not within tolerance.
"""

from __future__ import annotations

import enum
import heapq
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .units import EOS_TEXT, NOT_TEXT, classify, is_whole, is_word_char, leading_spaces
from .vocabulary import Vocabulary

TOLERANCE = 1e-3  # how far a listed probability, or an unlisted unit past the last listed one, may still move
NODES_PER_ROUND = 24  # sequences expanded together in one model call
MAX_ROUNDS = 4  # model calls after the prompt's: the latency budget
# The first round takes the nodes that could still pass the k-th unit, but not those below this fraction of a
# guess of where the k-th will end (the k-th of the units and nodes seen so far): on the shipped model that
# halves it (a row costs about a tenth of a call) and rarely needs a second round for it. Later rounds know
# the k-th and take all they need.
GUESS_FRACTION = 0.8
FOLLOW_FLOOR = 0.1  # a word's continuation below this fraction of the tolerance is not followed, only bounded
OPEN_FLOOR = 0.001  # the same for other continuations, whose lost mass adds up in every bound
MAX_FOLLOWED = 256  # continuations of one sequence followed one by one, at most
MAX_FOLLOWED_AT_START = 1024  # the same after the prompt, where every unit begins
START_NODES = 64  # word beginnings after the prompt made nodes at once; the rest wait in bundles (_Bundle)

# `step(states, pieces)`: advance each state by its piece; the next-piece distributions (N, V) and the new states.
Step = Callable[[list[Any], list[int]], tuple[Tensor, list[Any]]]


class _Node:
    """An unfinished piece sequence: its text has not yet settled the next unit."""

    __slots__ = (
        "checked",
        "data",
        "done",
        "in_word",
        "key",
        "lead",
        "parent_state",
        "path",
        "piece",
        "prob",
        "spaces_only",
    )

    def __init__(self, prob: float, data: bytes, key: str, path: tuple[int, ...], lead: str, parent_state: Any,
                 piece: int, checked: bool, whole: bool):
        self.prob, self.data, self.key, self.path, self.lead = prob, data, key, path, lead
        self.parent_state, self.piece = parent_state, piece  # the model reaches this node by `piece` from there
        self.checked = checked  # its path is known to be the tokenizer's spelling of its text
        self.done = False  # expanded or dropped: no longer in the frontier
        # `whole`: the text ends with a whole character
        self.in_word = bool(key) and whole  # the next piece either ends the word or goes on with it
        self.spaces_only = not key and whole  # the next piece reads as it would at the start


class _Bundle:
    """Word beginnings after the prompt, one leading whitespace, not yet made nodes (most probable first).

    Hundreds of pieces may begin a word; most never matter. In the bounds a bundle
    stands as its most probable piece (a unit is spelled by one of them at most)
    and, for a unit looked at closely, as the piece that spells it; when the search
    wants it, its next few become nodes."""

    __slots__ = ("_prob_of", "checked", "done", "items", "lead", "prob")
    in_word = True

    def __init__(self, lead: str, items: list[tuple[float, int]]):
        self.lead, self.items = lead, items  # (probability, piece), most probable first
        self.prob = items[0][0]
        self.done = False
        self.checked = True  # single pieces, each its own spelling
        self._prob_of: dict[int, float] | None = None

    def prob_of(self, piece: int) -> float:
        if self._prob_of is None:
            self._prob_of = {piece: prob for prob, piece in self.items}
        return self._prob_of.get(piece, 0.0)


class Verdict(enum.Enum):
    SETTLED = "settled"  # every listed figure is within tolerance, and no other unit can pass the last one
    EXPAND = "expand"  # the figures still depend on `Round.nodes`: expand them (one model call)
    EXHAUSTED = "exhausted"  # not within tolerance, and nothing left to expand (the floors left out too much)


@dataclass(frozen=True)
class Round:
    """What the search needs next."""

    verdict: Verdict
    nodes: list[_Node] = field(default_factory=list)  # with EXPAND: out of the frontier, to expand


@dataclass(frozen=True)
class _Revision:
    """A change to the frontier that must come before the search can choose: bundles to open into nodes,
    or chosen nodes found not to be the tokenizer's spelling of their text (dropped with all they lead to)."""

    bundles: list[_Bundle] = field(default_factory=list)
    misspelled: list[_Node] = field(default_factory=list)


def search_words(
    probs: Tensor,
    state: Any,
    step: Step,
    vocabulary: Vocabulary,
    top_k: int,
    tolerance: float = TOLERANCE,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[list[tuple[str, float]], bool]:
    """The `top_k` most probable next units and whether their figures are within `tolerance`.

    `probs` is the next-piece distribution after the prompt and `state` the model
    state there; `step(states, pieces)` advances several states by one piece each
    and returns their next-piece distributions (N, V) and the new states.
    """
    search = _Search(vocabulary, tolerance)
    search.expand_start(probs, state)
    exact = False
    for round_index in range(max_rounds + 1):
        wanted = search.next_round(top_k)
        if wanted.verdict is not Verdict.EXPAND:
            exact = wanted.verdict is Verdict.SETTLED
            break
        if round_index == max_rounds:
            break
        next_probs, states = step([n.parent_state for n in wanted.nodes], [n.piece for n in wanted.nodes])
        search.expand(wanted.nodes, next_probs, states)
    ranked = sorted(search.totals.items(), key=lambda item: -item[1])[:top_k]
    return [(text, prob) for text, prob in ranked if prob > 0], exact


class _Search:
    def __init__(self, vocabulary: Vocabulary, tolerance: float):
        self.vocabulary = vocabulary
        self.tolerance = tolerance
        self.floor = tolerance * FOLLOW_FLOOR
        self.open_floor = tolerance * OPEN_FLOOR
        self.floors: dict[int, Tensor] = {}
        self.expanded = False  # whether a round has run
        self.bundles: dict[str, _Bundle] = {}  # by leading whitespace
        self.totals: dict[str, float] = defaultdict(float)  # found mass of each unit
        # Word-in-progress frontier by leading spaces: heaps of (-probability, arrival, node).
        self.heaps: dict[str, list[tuple[float, int, _Node]]] = defaultdict(list)
        self.arrivals = 0
        self.by_key: dict[str, list[_Node]] = defaultdict(list)  # the same nodes by the word begun
        # The rest of the frontier (no word begun, or a character unfinished): it may still become any unit.
        self.open: list[_Node] = []
        # Continuations not followed. A unit is spelled one way per leading whitespace, so it lost at most
        # the largest one of each; what was not followed before any word began may have gone anywhere.
        self.lost_largest: dict[str, float] = defaultdict(float)
        self.lost_open = 0.0
        self.spellings: dict[str, tuple[int, ...]] = {}  # of units after leading spaces

    # -- growing the tree --------------------------------------------------------------

    def expand_start(self, probs: Tensor, state: Any) -> None:
        v = self.vocabulary
        found = torch.zeros(len(v.units), dtype=probs.dtype).index_add_(0, v.start_unit,
                                                                         torch.where(v.start_settles, probs, 0.0))
        for unit, mass in zip(v.units, found.tolist()):
            if mass > 0:
                self.totals[unit] += mass
        opening = torch.where(v.start_opens, probs, 0.0)
        followed = self._followed(opening, self._floors(v.start_word), MAX_FOLLOWED_AT_START)
        followed_probs = opening[followed]
        order = followed_probs.argsort(descending=True)
        waiting: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.start_state = state
        for rank, (piece, prob) in enumerate(zip(followed[order].tolist(), followed_probs[order].tolist())):
            if rank >= START_NODES and v.pieces[piece].begins_word:
                waiting[v.pieces[piece].lead].append((prob, piece))
            else:
                self._push_start(piece, prob)
        for lead, items in waiting.items():
            self._push_bundle(_Bundle(lead, items))
        rest = opening.index_fill(0, followed, 0.0)
        words = torch.where(v.start_word, rest, 0.0)
        self._lose_words(words, "")
        self.lost_open += float(rest.sum() - words.sum())

    def _push_start(self, piece: int, prob: float) -> None:
        facts = self.vocabulary.pieces[piece]
        self._push(_Node(prob, facts.data, facts.begun, (piece,), facts.lead, self.start_state, piece,
                         checked=True, whole=facts.whole))

    def _push_bundle(self, bundle: _Bundle) -> None:
        self.arrivals += 1
        heapq.heappush(self.heaps[bundle.lead], (-bundle.prob, self.arrivals, bundle))
        self.bundles[bundle.lead] = bundle

    def _open_bundle(self, bundle: _Bundle) -> None:
        """Make the bundle's next pieces nodes; the rest stay bundled."""
        bundle.done = True
        del self.bundles[bundle.lead]
        for prob, piece in bundle.items[:START_NODES]:
            self._push_start(piece, prob)
        if len(bundle.items) > START_NODES:
            self._push_bundle(_Bundle(bundle.lead, bundle.items[START_NODES:]))

    def _bundled(self, unit: str) -> tuple[float, list[_Bundle]]:
        """What the bundles may still give `unit`: the piece that spells it after each one's whitespace."""
        if not is_word_char(unit[0]) or unit == EOS_TEXT:
            return 0.0, []
        total, holding = 0.0, []
        for bundle in self.bundles.values():
            spelling = self._spelling(bundle.lead + unit)
            mass = bundle.prob_of(spelling[0]) if spelling else 0.0
            if mass > 0:
                total += mass
                holding.append(bundle)
        return total, holding

    def _spelling(self, text: str) -> tuple[int, ...]:
        if text not in self.spellings:
            self.spellings[text] = tuple(self.vocabulary.spelling(text.encode("utf-8")) or ())
        return self.spellings[text]

    def expand(self, nodes: list[_Node], next_probs: Tensor, states: list[Any]) -> None:
        """Settle and grow the children of `nodes`, whose next-piece distributions are the rows of `next_probs`."""
        self.expanded = True
        words = [i for i, n in enumerate(nodes) if n.in_word]
        if words:
            self._expand_words([nodes[i] for i in words], next_probs[words], [states[i] for i in words])
        for i, node in enumerate(nodes):
            if not node.in_word:
                self._expand_other(node, next_probs[i], states[i])

    def _expand_words(self, nodes: list[_Node], next_probs: Tensor, states: list[Any]) -> None:
        """Words in progress, all at once: every piece that starts a new unit ends the word, in one sum; a
        unit's spelling goes on through one word-continuing child, so of those not followed only the largest
        counts in a bound; other children (fragments of a character) may share units, so all their mass counts."""
        v = self.vocabulary
        children = next_probs * torch.tensor([n.prob for n in nodes], dtype=next_probs.dtype).unsqueeze(1)
        ended = children.masked_fill(~v.ends_word, 0.0).sum(1).tolist()
        children.masked_fill_(v.ends_word, 0.0)
        follow = children > self._floors(v.continues_word)
        crowded = follow.sum(1) > MAX_FOLLOWED
        if crowded.any():  # rare: keep each crowded row's most probable only
            for row in crowded.nonzero().squeeze(1).tolist():
                follow[row] = False
                follow[row, children[row].topk(MAX_FOLLOWED).indices] = True
        rest = children.masked_fill(follow, 0.0)
        lost_words = rest.masked_fill(~v.continues_word, 0.0)
        self.lost_open += float(rest.sum() - lost_words.sum())
        for node, mass, lost in zip(nodes, ended, lost_words.amax(1).tolist()):
            self.totals[node.key] += mass
            self.lost_largest[node.lead] = max(self.lost_largest[node.lead], lost)
        rows, pieces = follow.nonzero(as_tuple=True)
        for row, piece, prob in zip(rows.tolist(), pieces.tolist(), children[rows, pieces].tolist()):
            node, text = nodes[row], v.pieces[piece].word_text
            if text is not None:  # the word goes on: no need to classify
                self._push(_Node(prob, node.data + v.piece_bytes[piece], node.key + text, node.path + (piece,),
                                 node.lead, states[row], piece, checked=False, whole=True))
            else:
                self._settle_or_push(node, piece, prob, states[row])

    def _expand_other(self, node: _Node, next_probs: Tensor, state: Any) -> None:
        """Spaces only (the next piece reads as at the start), or a character unfinished."""
        v = self.vocabulary
        children = next_probs * node.prob
        followed = self._followed(children, self._floors(v.start_word) if node.spaces_only else self.open_floor)
        rest = children.index_fill(0, followed, 0.0)
        if node.spaces_only:  # word beginnings keep one spelling per unit, as at the start
            words = rest.masked_fill(~v.start_word, 0.0)
            self._lose_words(words, node.lead)
            rest = rest - words
        self.lost_open += float(rest.sum())
        for piece, prob in zip(followed.tolist(), children[followed].tolist()):
            self._settle_or_push(node, piece, prob, state)

    def _lose_words(self, words: Tensor, lead: str) -> None:
        """Word-beginning children not followed, after `lead`: the largest per leading whitespace."""
        v = self.vocabulary
        largest = torch.zeros(len(v.leads), dtype=words.dtype).scatter_reduce_(0, v.start_lead_id, words, "amax")
        for piece_lead, mass in zip(v.leads, largest.tolist()):
            self.lost_largest[lead + piece_lead] = max(self.lost_largest[lead + piece_lead], mass)

    def _floors(self, word_mask: Tensor) -> Tensor:
        """Per piece: the floor for word children where `word_mask` is set, the open floor elsewhere."""
        key = id(word_mask)
        if key not in self.floors:
            self.floors[key] = torch.where(word_mask, self.floor, self.open_floor)
        return self.floors[key]

    def _followed(self, children: Tensor, floor: Tensor | float, most: int = MAX_FOLLOWED) -> Tensor:
        followed = (children > floor).nonzero().squeeze(1)
        if followed.numel() > most:
            followed = children.topk(most).indices
        return followed

    def _settle_or_push(self, node: _Node, piece: int, prob: float, state: Any) -> None:
        v = self.vocabulary
        if piece == v.eos_id:  # the end of the text ends a word, or is the unit itself
            self._count(classify(node.data, final=True)[0], prob)
            return
        data = node.data + v.piece_bytes[piece]
        unit, key = classify(data)
        path = node.path + (piece,)
        if unit is None:
            lead = node.lead if node.key else leading_spaces(data)
            self._push(_Node(prob, data, key, path, lead, state, piece, checked=False, whole=is_whole(data)))
        # Counted when the unit's text ends with the node's (whose spelling was checked), or when the
        # pieces up to the one where it ends are its spelling.
        elif classify(node.data, final=True)[0] == unit or v.spells(data, path):
            self._count(unit, prob)

    def _count(self, unit: str, prob: float) -> None:
        if unit != NOT_TEXT:  # bytes that are no text are no unit: their mass is nobody's
            self.totals[unit] += prob

    def _push(self, node: _Node) -> None:
        if node.in_word:
            self.arrivals += 1
            heapq.heappush(self.heaps[node.lead], (-node.prob, self.arrivals, node))
            self.by_key[node.key].append(node)
        else:
            self.open.append(node)

    def _drop(self, node: _Node) -> None:
        node.done = True
        if node.in_word:
            self.by_key[node.key].remove(node)
        else:
            self.open.remove(node)

    # -- deciding what the result still depends on ------------------------------------------

    def next_round(self, top_k: int) -> Round:
        """What the result depends on now; the nodes of an EXPAND leave the frontier."""
        while True:
            choice = self._choose(top_k)
            if isinstance(choice, Round):
                for node in choice.nodes:
                    self._drop(node)
                return choice
            for bundle in choice.bundles:
                self._open_bundle(bundle)
            for node in choice.misspelled:  # no continuation of a misspelled path is ever spelled that way
                self._drop(node)

    def _choose(self, top_k: int) -> Round | _Revision:
        tolerance = self.tolerance
        ranked = sorted(self.totals.items(), key=lambda item: -item[1])
        listed, rest = ranked[:top_k], ranked[top_k:]
        kth = listed[-1][1] if len(listed) == top_k else 0.0
        slack = sum(n.prob for n in self.open) + self.lost_open + sum(self.lost_largest.values())
        wanted: dict[int, _Node] = {}

        def want(nodes: list[_Node]) -> None:
            for n in nodes:
                wanted[id(n)] = n

        if slack > tolerance:
            want(self.open)
        bundled_most = sum(b.prob for b in self.bundles.values())
        for unit, _ in listed:  # a listed unit may still gain what lies on its own spelling
            if slack + self._under(unit) + bundled_most > tolerance:
                on_path = self._on_path(unit)
                bundled, holding = self._bundled(unit)
                if slack + sum(n.prob for n in on_path) + bundled > tolerance:
                    want(on_path + holding)
        # An outsider may gain one node per leading whitespace: the best under its own word, or the best anywhere.
        tops = {lead: self._top(heap) for lead, heap in self.heaps.items()}
        best_anywhere = sum(n.prob for n in tops.values() if n is not None)
        limit = kth + tolerance - slack
        for unit, mass in rest:
            if mass + min(self._under(unit) + bundled_most, best_anywhere) > limit:
                on_path = self._on_path(unit)
                bundled, holding = self._bundled(unit)
                if mass + sum(n.prob for n in on_path) + bundled > limit:
                    want(on_path + holding)
        popped: list[tuple[float, int, _Node]] = []
        guess = 0.0
        if not self.expanded:
            seen = sorted([-entry[0] for heap in self.heaps.values() for entry in heapq.nsmallest(top_k, heap)]
                          + [mass for _, mass in listed], reverse=True)
            guess = GUESS_FRACTION * seen[top_k - 1] if len(seen) >= top_k else 0.0
        while best_anywhere > limit and len(wanted) < NODES_PER_ROUND:
            # a unit not found yet could still overtake: take the best nodes
            live = [(lead, n) for lead, n in tops.items() if n is not None]
            if not live:
                break
            lead, node = max(live, key=lambda item: item[1].prob)
            if wanted and node.prob <= guess:
                break
            popped.append(heapq.heappop(self.heaps[lead]))
            want([node])
            best_anywhere -= node.prob
            tops[lead] = self._top(self.heaps[lead])
            if tops[lead] is not None:
                best_anywhere += tops[lead].prob
        for entry in popped:  # they stay in the frontier until expanded (or found misspelled)
            heapq.heappush(self.heaps[entry[2].lead], entry)
        bundles = [n for n in wanted.values() if isinstance(n, _Bundle)]
        if bundles:  # open them and look again, with their pieces as nodes
            return _Revision(bundles=bundles)
        chosen = sorted(wanted.values(), key=lambda n: -n.prob)[:NODES_PER_ROUND]
        misspelled = [n for n in chosen if not n.checked and not self._check(n)]
        if misspelled:
            return _Revision(misspelled=misspelled)
        if chosen:
            return Round(Verdict.EXPAND, chosen)
        if slack > tolerance or best_anywhere > limit:
            return Round(Verdict.EXHAUSTED)
        return Round(Verdict.SETTLED)

    def _check(self, node: _Node) -> bool:
        node.checked = self.vocabulary.spells(node.data, node.path)
        return node.checked

    def _top(self, heap: list[tuple[float, int, _Node]]) -> _Node | None:
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        return heap[0][2] if heap else None

    def _under(self, unit: str) -> float:
        """All frontier mass under words that `unit` starts with (a quick bound)."""
        return sum(n.prob for end in range(1, len(unit) + 1) for n in self.by_key.get(unit[:end], ()))

    def _on_path(self, unit: str) -> list[_Node]:
        """The frontier nodes on the tokenizer's spelling of `unit` (after their own leading spaces)."""
        if not is_word_char(unit[0]) or unit == EOS_TEXT:
            return []
        nodes = []
        for end in range(1, len(unit) + 1):
            for n in self.by_key.get(unit[:end], ()):
                if self.vocabulary.mixed_words:
                    nodes.append(n)
                    continue
                if self._spelling(n.lead + unit)[: len(n.path)] == n.path:
                    nodes.append(n)
        return nodes
