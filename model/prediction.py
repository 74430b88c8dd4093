"""What comes next: the distribution over the next piece, or over the next whole word.

A word (API.md) is a maximal run of letters, digits and apostrophes; any other
character except a leading space (a punctuation mark, a line break) is a unit
of its own; the end of the text is the unit `EOS_TEXT`. As API.md defines it, a
unit's probability is the product of the probabilities of *its* pieces (the
tokenizer's own spelling of the text, which is what the model was trained on)
times the probability that the piece after it starts a new unit, summed over
the spaces it may come after (" up", "up", "  up").

Pieces do not line up with words, so `search_words` finds the most probable
units by a best-first search over piece sequences: it expands the most
probable unfinished sequences that the result still depends on (a batch of
them per model call) until no listed unit can change by more than `tolerance`
and no other unit can overtake the last listed one, or the budget is spent.
The bounds are tight because a unit is spelled one way: a unit not yet found
can only come from one unfinished sequence per leading whitespace.
docs/serving.md has the argument.
"""

from __future__ import annotations

import codecs
import heapq
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from .network import STATE_BATCH_DIM, LanguageModel
from .prompt_cache import PromptCache
from .tokenizer import Tokenizer

EOS_TEXT = "</s>"  # the unit "end of the text"; text never spells it as one unit ("<" is a unit)
APOSTROPHES = "'\u2019"
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
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


@dataclass
class Prediction:
    unit: str  # "word" or "token"
    prompt_tokens: int
    distribution: list[tuple[str, float]]  # (text, probability), most probable first
    entropy: float  # nats, of the full next-piece distribution
    exact: bool = True  # False when the word search ran out of budget before `tolerance` held

    @property
    def coverage(self) -> float:
        return sum(p for _, p in self.distribution)


def next_piece_probs(logits: Tensor, temperature: float) -> Tensor:
    """softmax(logits / T) in float64; T = 0 puts all the mass on the argmax."""
    z = logits.double()
    if temperature == 0:
        return torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).double()
    # Shift before dividing: at a tiny T, z / T overflows to inf and inf - inf is NaN.
    return torch.softmax((z - z.amax(-1, keepdim=True)) / temperature, dim=-1)


def entropy(probs: Tensor) -> float:
    return float(-(probs * probs.clamp_min(1e-300).log()).sum())


@torch.inference_mode()
def predict(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: str,
    top_k: int = 10,
    unit: str = "word",
    temperature: float = 1.0,
    logits_fn: Callable[[Tensor], Tensor] | None = None,
    prompts: PromptCache | None = None,
) -> Prediction:
    """The next-`unit` distribution after `prompt` (read as the start of a text).

    `logits_fn(hidden (N, H)) -> (N, V)` lets a caller compute the decoder its own
    way (the serving engine's batch-invariant one); default `model.logits`.
    `prompts` reads the prompt through a cache of prefix states.
    """
    if unit not in ("word", "token"):
        raise ValueError(f"unit must be 'word' or 'token', got {unit!r}")
    model.eval()
    logits_fn = logits_fn or model.logits
    ids = tokenizer.encode(prompt, add_bos=True)
    features = prompts.prefill(ids) if prompts else model.features(torch.tensor([ids]))
    probs = next_piece_probs(logits_fn(features.dropped[:, -1])[0], temperature)
    if unit == "token":
        values, index = probs.topk(min(top_k, probs.shape[0]))
        distribution = [(tokenizer.decode([i]), float(p)) for p, i in zip(values.tolist(), index.tolist())]
        return Prediction("token", len(ids), distribution, entropy(probs))

    def step(parents: list[tuple[Tensor, int]], pieces: list[int]) -> tuple[Tensor, list[tuple[Tensor, int]]]:
        # A state is (a batch's state tensor, row): rows are sliced only when a child is expanded.
        state = torch.cat([s.narrow(STATE_BATCH_DIM, row, 1) for s, row in parents], dim=STATE_BATCH_DIM)
        out = model.features(torch.tensor(pieces).view(-1, 1), state)
        next_probs = next_piece_probs(logits_fn(out.dropped[:, -1]), temperature)
        return next_probs, [(out.state, row) for row in range(len(pieces))]

    words, exact = search_words(probs, (features.state, 0), step, vocabulary(tokenizer), top_k)
    return Prediction("word", len(ids), words, entropy(probs), exact)


@lru_cache(maxsize=8)
def vocabulary(tokenizer: Tokenizer) -> Vocabulary:
    def spelling(data: bytes) -> list[int] | None:
        try:
            return tokenizer.encode(data.decode("utf-8"))
        except UnicodeError:  # an unfinished character: its spelling is checked once it is whole
            return None

    return Vocabulary(tokenizer.piece_bytes, tokenizer.eos_id, spelling)


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


class Vocabulary:
    """What the word search needs to know about the pieces, worked out once per tokenizer.

    `spelling(data)` is the tokenizer's own pieces for a text (None when it cannot
    tell yet: an unfinished UTF-8 character). The search relies on spellings
    being prefix-closed — the start of a spelling spells its own text — which
    holds for a unigram tokenizer (its best segmentation of a text starts with
    the best segmentation of that start) and is tested on the shipped one.
    """

    def __init__(self, piece_bytes: Sequence[bytes], eos_id: int, spelling: Callable[[bytes], list[int] | None]):
        self.piece_bytes = piece_bytes
        self.eos_id = eos_id
        self.spelling = spelling
        size = len(piece_bytes)
        # After the prompt, or after spaces only: the unit each piece settles, or the word it begins.
        settled = [classify(b"", final=True) if i == eos_id else classify(data) for i, data in enumerate(piece_bytes)]
        own = [i == eos_id or self.spells(piece_bytes[i], (i,)) for i in range(size)]
        self.start_key = [key for _, key in settled]
        self.whole = [_complete(data) for data in piece_bytes]
        self.start_lead = [_lead(data) for data in piece_bytes]
        self.units = sorted({unit for (unit, _), ok in zip(settled, own) if unit is not None and ok})
        unit_ids = {u: i for i, u in enumerate(self.units)}
        self.start_settles = torch.tensor([unit is not None and ok for (unit, _), ok in zip(settled, own)])
        self.start_unit = torch.tensor([unit_ids.get(unit, 0) for unit, _ in settled])
        self.start_opens = torch.tensor([unit is None and ok for (unit, _), ok in zip(settled, own)])
        self.leads = sorted(set(self.start_lead))
        lead_ids = {lead: i for i, lead in enumerate(self.leads)}
        self.start_lead_id = torch.tensor([lead_ids[lead] for lead in self.start_lead])
        self.start_word = torch.tensor([bool(key) and whole for key, whole in zip(self.start_key, self.whole)])
        self.starts_word = self.start_word.tolist()
        # After a whole word in progress: pieces whose text starts a new unit end it; pieces all of
        # word characters lengthen it (their text is kept to build the longer word without classify).
        first = [_first_char(data) for data in piece_bytes]
        self.ends_word = torch.tensor([i == eos_id or (c is not None and not is_word_char(c)) for i, c in enumerate(first)])
        self.word_text = [_word_text(data) for data in piece_bytes]
        self.continues_word = torch.tensor([text is not None for text in self.word_text])
        # Pieces with word characters and then others ("s,"): with them one unit has several spellings
        # (" is," and " is."), so a listed unit's bound takes every node under it, not only those on one spelling.
        self.mixed_words = any((text := _lead_stripped(data)) and is_word_char(text[0])
                               and not all(is_word_char(c) for c in text) for data in piece_bytes)

    def spells(self, data: bytes, path: tuple[int, ...]) -> bool:
        """Whether `path` is the tokenizer's own spelling of `data` (True while a character is unfinished)."""
        spelling = self.spelling(data)
        return spelling is None or tuple(spelling) == path


def _first_char(data: bytes) -> str | None:
    """The first character of a piece that decodes on its own, else None (empty, or a UTF-8 fragment)."""
    return data.decode("utf-8")[0] if data and _complete(data) else None


def _word_text(data: bytes) -> str | None:
    """The piece's text when it is whole and only word characters, else None."""
    text = data.decode("utf-8") if data and _complete(data) else ""
    return text if text and all(is_word_char(c) for c in text) else None


def _complete(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _lead_stripped(data: bytes) -> str:
    """A piece's whole text after its leading spaces ("" for a fragment of a character)."""
    return data.decode("utf-8").lstrip(" ") if _complete(data) else ""


def _lead(data: bytes) -> str:
    """The spaces a text starts with (line breaks are units, not spaces)."""
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data)
    end = 0
    while end < len(text) and text[end].isspace() and text[end] not in LINE_BREAKS:
        end += 1
    return text[:end]


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


def search_words(
    probs: Tensor,
    state: Any,
    step: Callable[[list[Any], list[int]], tuple[Tensor, list[Any]]],
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
        chosen = search.unsettled(top_k)
        if not chosen:
            exact = chosen is not None
            break
        if round_index == max_rounds:
            break
        next_probs, states = step([n.parent_state for n in chosen], [n.piece for n in chosen])
        search.expand(chosen, next_probs, states)
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
            if rank >= START_NODES and v.starts_word[piece]:
                waiting[v.start_lead[piece]].append((prob, piece))
            else:
                self._push_start(piece, prob)
        for lead, items in waiting.items():
            self._push_bundle(_Bundle(lead, items))
        rest = opening.index_fill(0, followed, 0.0)
        words = torch.where(v.start_word, rest, 0.0)
        self._lose_words(words, "")
        self.lost_open += float(rest.sum() - words.sum())

    def _push_start(self, piece: int, prob: float) -> None:
        v = self.vocabulary
        self._push(_Node(prob, v.piece_bytes[piece], v.start_key[piece], (piece,), v.start_lead[piece],
                         self.start_state, piece, checked=True, whole=v.whole[piece]))

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
            node, text = nodes[row], v.word_text[piece]
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
            self.totals[classify(node.data, final=True)[0]] += prob
            return
        data = node.data + v.piece_bytes[piece]
        unit, key = classify(data)
        path = node.path + (piece,)
        if unit is None:
            lead = node.lead if node.key else _lead(data)
            self._push(_Node(prob, data, key, path, lead, state, piece, checked=False, whole=_complete(data)))
        # Counted when the unit's text ends with the node's (whose spelling was checked), or when the
        # pieces up to the one where it ends are its spelling.
        elif classify(node.data, final=True)[0] == unit or v.spells(data, path):
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

    def unsettled(self, top_k: int) -> list[_Node] | None:
        """The nodes to expand next: [] when the result is within tolerance, None when the frontier is empty
        but it is not."""
        while True:
            opened = len(self.bundles), self.arrivals
            chosen, misspelled = self._choose(top_k)
            if misspelled:
                for node in misspelled:  # no continuation of a misspelled path is ever spelled that way: drop
                    self._drop(node)
            elif (len(self.bundles), self.arrivals) == opened:
                return chosen

    def _choose(self, top_k: int) -> tuple[list[_Node] | None, list[_Node]]:
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
            for bundle in bundles:
                self._open_bundle(bundle)
            return None, []
        chosen = sorted(wanted.values(), key=lambda n: -n.prob)[:NODES_PER_ROUND]
        misspelled = [n for n in chosen if not n.checked and not self._check(n)]
        if misspelled:
            return None, misspelled
        for node in chosen:
            self._drop(node)
        if not chosen and (slack > tolerance or best_anywhere > limit):
            return None, []  # nothing left to expand, and yet not within tolerance
        return chosen, []

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
