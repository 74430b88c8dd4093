"""What comes next: the distribution over the next piece, or over the next whole word.

A word (API.md) is a maximal run of letters, digits and apostrophes; any other
character except a leading space (a punctuation mark, a line break) is a unit
of its own; the end of the text is the unit `EOS_TEXT`. A word's probability is
the sum, over every piece sequence that spells it, of the product of the pieces'
probabilities times the probability that the next piece starts a new unit.
Pieces do not line up with words, so `search_words` finds the most probable
units by a best-first search over piece sequences: it expands the most probable
unfinished sequences (a batch of them per model call) until the listed units
cannot change by more than `tolerance`, or the budget is spent.
"""

from __future__ import annotations

import codecs
import heapq
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .network import LanguageModel, select_rows, stack_rows
from .prompt_cache import PromptCache
from .tokenizer import Tokenizer

EOS_TEXT = "</s>"  # the unit "end of the text"; text never spells it as one unit ("<" is a unit)
APOSTROPHES = "'\u2019"
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
TOLERANCE = 1e-3  # probability mass a listed unit may still be missing when the search stops
CHILDREN_PER_NODE = 64  # most probable continuations of a word in progress looked at one by one
NODES_PER_ROUND = 32  # sequences expanded together in one model call
MAX_ROUNDS = 2  # model calls after the prompt's: the latency budget (issue 4: p50 <= 10 ms)
NEGLIGIBLE = 0.01  # a continuation below this fraction of the tolerance is only counted in the bound


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
    return torch.softmax(z / temperature, dim=-1)


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

    def step(states: list[Tensor], pieces: list[int]) -> tuple[Tensor, list[Tensor]]:
        out = model.features(torch.tensor(pieces).view(-1, 1), stack_rows(states))
        next_probs = next_piece_probs(logits_fn(out.dropped[:, -1]), temperature)
        return next_probs, [select_rows(out.state, [i]) for i in range(len(pieces))]

    words, exact = search_words(probs, features.state, step, tokenizer.piece_bytes, tokenizer.eos_id, top_k)
    return Prediction("word", len(ids), words, entropy(probs), exact)


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


@dataclass
class _Node:
    prob: float
    data: bytes  # the text after the prompt, as bytes
    key: str  # the word begun so far
    parent_state: Any
    piece: int  # fed to the model from parent_state to reach this node


def search_words(
    probs: Tensor,
    state: Any,
    step: Callable[[list[Any], list[int]], tuple[Tensor, list[Any]]],
    piece_bytes: Sequence[bytes],
    eos_id: int,
    top_k: int,
    tolerance: float = TOLERANCE,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[list[tuple[str, float]], bool]:
    """The `top_k` most probable next units and whether their figures are within `tolerance`.

    `probs` is the next-piece distribution after the prompt and `state` the model
    state there; `step(states, pieces)` advances several states by one piece each
    and returns their next-piece distributions (N, V) and the new states.
    """
    totals: dict[str, float] = defaultdict(float)  # settled mass of each unit
    # Mass not yet settled, by the word begun so far: it can only go to units starting with that key.
    pending: dict[str, float] = defaultdict(float)
    extend: dict[str, float] = defaultdict(float)  # mass under a word that can only make it longer
    frontier: list[tuple[float, int, _Node]] = []  # max-heap by probability
    counter = 0

    def expand(prob: float, data: bytes, key: str, next_probs: Tensor, node_state: Any) -> None:
        nonlocal counter
        children = next_probs * prob
        table = _start_table(piece_bytes, eos_id)
        if not key and _complete(data):  # no word begun (the start, or only spaces): the table settles every piece
            for unit, mass in zip(table.units, table.unit_mass(children).tolist()):
                if mass > 0:
                    totals[unit] += mass
            # Only the sequences a later round could expand become nodes; the rest count as pending mass.
            candidates = torch.where(table.partial, children, 0.0).topk(min(NODES_PER_ROUND * max_rounds,
                                                                            children.shape[0]))
            for child_prob, piece in zip(candidates.values.tolist(), candidates.indices.tolist()):
                if child_prob <= tolerance * NEGLIGIBLE:
                    break
                counter += 1
                node = _Node(child_prob, data + piece_bytes[piece], table.key_of[piece], node_state, piece)
                heapq.heappush(frontier, (-child_prob, counter, node))
            for word, mass in zip(table.keys, table.key_mass(children).tolist()):
                if mass > 0:
                    pending[word] += mass
            return
        if key and _complete(data):  # a word in progress: a piece that starts a new unit ends it, in one sum
            ended = float(children[table.ends_word].sum())
            small_continuations = table.word_start & (children <= tolerance * NEGLIGIBLE)
            extending = float(children[small_continuations].sum())  # these can only make longer words
            totals[key] += ended
            extend[key] += extending
            prob -= ended + extending
            children = children.masked_fill(table.ends_word | small_continuations, 0.0)
        kept = children.topk(min(CHILDREN_PER_NODE, children.shape[0]))
        kept_mass = 0.0
        for child_prob, piece in zip(kept.values.tolist(), kept.indices.tolist()):
            if child_prob <= tolerance * NEGLIGIBLE:
                break
            kept_mass += child_prob
            if piece == eos_id:  # the end of the text ends a word, or is the unit itself
                totals[classify(data, final=True)[0]] += child_prob
                continue
            child_data = data + piece_bytes[piece]
            unit, child_key = classify(child_data)
            if unit is not None:
                totals[unit] += child_prob
            else:
                pending[child_key] += child_prob
                counter += 1
                node = _Node(child_prob, child_data, child_key, node_state, piece)
                heapq.heappush(frontier, (-child_prob, counter, node))
        pending[key] += max(prob - kept_mass, 0.0)  # the children left out, kept only as a bound

    expand(1.0, b"", "", probs, state)
    exact = False
    for round_index in range(max_rounds + 1):
        ranked = sorted(totals.items(), key=lambda item: -item[1])
        listed, rest = ranked[:top_k], ranked[top_k:]
        kth = listed[-1][1] if len(listed) == top_k else 0.0
        # The most a unit could still gain is the pending mass under every prefix of it.
        under = _PrefixMass(pending, extend)
        listed_gap = max((under(text) for text, _ in listed), default=0.0)
        outsider = max([p + under(t) for t, p in rest] + [under.best_unseen()])
        if listed_gap <= tolerance and outsider <= kth + tolerance:
            exact = True
            break
        if not frontier or round_index == max_rounds:
            break
        batch = [heapq.heappop(frontier)[2] for _ in range(min(NODES_PER_ROUND, len(frontier)))]
        for node in batch:
            pending[node.key] -= node.prob
        next_probs, states = step([n.parent_state for n in batch], [n.piece for n in batch])
        for node, row, node_state in zip(batch, next_probs, states):
            expand(node.prob, node.data, node.key, row, node_state)

    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top_k]
    return [(text, prob) for text, prob in ranked if prob > 0], exact


def _complete(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _first_char(data: bytes) -> str | None:
    """The first character of a piece that decodes on its own, else None (empty, or a UTF-8 fragment)."""
    return data.decode("utf-8")[0] if data and _complete(data) else None


class _StartTable:
    """How each piece, after the prompt or after spaces only, settles the next unit or begins a word."""

    def __init__(self, piece_bytes: Sequence[bytes], eos_id: int):
        self.piece_bytes = piece_bytes  # kept so the cache key (its id) stays valid
        settled = [classify(b"", final=True) if i == eos_id else classify(data) for i, data in enumerate(piece_bytes)]
        self.units = sorted({unit for unit, _ in settled if unit is not None})
        self.keys = sorted({key for unit, key in settled if unit is None})
        unit_ids = {u: i for i, u in enumerate(self.units)}
        key_ids = {k: i for i, k in enumerate(self.keys)}
        self.partial = torch.tensor([unit is None for unit, _ in settled])
        self.unit_index = torch.tensor([unit_ids.get(unit, 0) for unit, _ in settled])
        self.key_index = torch.tensor([key_ids[key] if unit is None else 0 for unit, key in settled])
        self.key_of = [key for _, key in settled]
        # After a word in progress: pieces whose text starts a new unit, and pieces that go on with the word.
        first = [_first_char(data) for data in piece_bytes]
        self.ends_word = torch.tensor([i == eos_id or (c is not None and not is_word_char(c))
                                       for i, c in enumerate(first)])
        self.word_start = torch.tensor([c is not None and is_word_char(c) for c in first])

    def unit_mass(self, children: Tensor) -> Tensor:
        mass = torch.where(self.partial, 0.0, children)
        return torch.zeros(len(self.units), dtype=children.dtype).index_add_(0, self.unit_index, mass)

    def key_mass(self, children: Tensor) -> Tensor:
        mass = torch.where(self.partial, children, 0.0)
        return torch.zeros(len(self.keys), dtype=children.dtype).index_add_(0, self.key_index, mass)


_START_TABLES: dict[tuple[int, int], _StartTable] = {}


def _start_table(piece_bytes: Sequence[bytes], eos_id: int) -> _StartTable:
    table = _START_TABLES.get((id(piece_bytes), eos_id))
    if table is None or table.piece_bytes is not piece_bytes:
        table = _START_TABLES[(id(piece_bytes), eos_id)] = _StartTable(piece_bytes, eos_id)
    return table


class _PrefixMass:
    """The pending mass a unit could still receive: what is pending under each prefix of it,
    and what can only lengthen a proper prefix of it."""

    def __init__(self, pending: dict[str, float], extend: dict[str, float]):
        self.extend = extend
        # under[k] for every key, shortest first, each from its longest proper prefix that is a key
        # (a prefix that is no key has nothing pending).
        self.under = {"": max(pending.get("", 0.0), 0.0)}
        for key in sorted(set(pending) | set(extend), key=len):
            if key not in self.under:
                parent = self._longest_key_prefix(key, len(key) - 1)
                self.under[key] = self.under[parent] + extend.get(parent, 0.0) + max(pending.get(key, 0.0), 0.0)

    def _longest_key_prefix(self, text: str, length: int) -> str:
        while text[:length] not in self.under:
            length -= 1
        return text[:length]

    def __call__(self, text: str) -> float:
        if text == EOS_TEXT or (len(text) == 1 and not is_word_char(text)):
            return self.under[""]  # only a sequence with no word begun can still yield it
        if text in self.under:
            return self.under[text]
        parent = self._longest_key_prefix(text, len(text) - 1)
        return self.under[parent] + self.extend.get(parent, 0.0)

    def best_unseen(self) -> float:
        """The most any unit not yet seen could still receive."""
        return max(mass + self.extend.get(key, 0.0) for key, mass in self.under.items())
