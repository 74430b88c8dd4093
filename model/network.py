"""The recurrent language model: embedding, stacked RNN layers, tied decoder.

The state of a batch is one tensor of shape (layers, parts, batch, hidden),
`parts` being 2 for an LSTM (h and c) and 1 otherwise, so rows of a batch are
taken apart with `select_rows` and put together with `stack_rows`. Which
dropout masks what, and why: docs/model.md.

Training reads logits with `forward`/`logits` (one matrix product for the whole
batch). Everything that serves or measures a model (prediction, scoring,
generation, the engine, the songwriting searches) goes through two calls:
`step` (one piece per row, a batch of sequences) and `read` (a slice of one
text), whose logits come from `decode`: a row's bits do not depend on the batch
it came in. A state is taken apart and put together only with the row methods
(`select_rows`, `stack_rows`, `repeat_rows`, `count_rows`), so no caller knows
its layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .memory import Attention, CacheConfig, Recall, State, empty_memory, read_ring, remember

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}
DIRECTIONS = ("forward", "backward")
DROPOUT_MODES = ("locked", "naive")
# A row's logits must not depend on the rows that share its batch, or a seeded request would change with the
# traffic around it. A BLAS picks its kernel by the number of rows (MKL on AMD gives a lone row, as a GEMV, other
# bits than the same row among 64), so `decode` calls it only on blocks of this many rows, the last one padded:
# every call has the same shape whatever the batch. 8 keeps a lone row near the GEMV's cost and a full batch near
# that of blocks of 16 (measured: docs/serving.md, "Same seed, same output").
DECODE_BLOCK_ROWS = 8
# The same for a recurrent step's products (`_lstm_step`): blocks of 16 cost a lone row a little more than blocks
# of 8 and a full batch much less (docs/serving.md).
STEP_BLOCK_ROWS = 16
# Reading a text: the fused kernel gives the same bits for a call over the whole text as for any cut of it into
# calls of at least 2 pieces, at any thread count (measured at the shipped shape and the test shape); a call of one
# piece takes another path (a GEMV) and other bits. So a text read in slices is one pass as long as no slice is a
# lone piece (`slice_end`), and a row read alongside other rows in one call gets other bits: each text alone.
MIN_CALL_PIECES = 2


def in_reading_order(config: ModelConfig, ids: list[int]) -> list[int]:
    """A text's pieces (the start marker first) in the order the model reads them: as written, or for a backward
    model the marker, then the pieces from the last to the first."""
    if config.direction == "forward":
        return ids
    return ids[:1] + ids[:0:-1]


@dataclass
class DropoutConfig:
    """Dropout rates (0 = off) and whether activation masks are locked over time."""

    embedding: float = 0.0  # whole word types: rows of the embedding matrix
    input: float = 0.0  # the embeddings fed to the first layer
    between_layers: float = 0.0  # the outputs of every layer but the last
    output: float = 0.0  # the last layer's output, before the decoder
    weight: float = 0.0  # DropConnect on each layer's hidden-to-hidden matrix
    mode: str = "locked"  # "locked": one mask per sequence; "naive": a new mask each timestep


@dataclass
class AttentionConfig:
    """Attention over the last layer's past outputs (model/memory.py); window 0: none."""

    window: int = 0  # the outputs each position attends to, its own included


@dataclass
class ModelConfig:
    vocab_size: int = 4000  # in training, the ceiling for the tokenizer; the model gets its real size
    cell: str = "lstm"
    layers: int = 2
    embedding_size: int = 512
    hidden_size: int = 512
    tie_weights: bool = True
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)  # set by tuning, not training (model/memory.py)
    # At inference, what the start marker stands for: the marker, then the pieces every text is read after (a
    # song's title line); [] or the marker alone: none. Set after training (docs/model.md, "The start of a text").
    start: list[int] = field(default_factory=list)
    # "backward": trained on every text's pieces from the last to the first (`in_reading_order`), to read a gap's
    # right side; the service uses such a model only beside a forward one (docs/songwriting.md).
    direction: str = "forward"

    def __post_init__(self):
        if isinstance(self.dropout, dict):
            self.dropout = from_dict(DropoutConfig, self.dropout, "dropout")
        if isinstance(self.attention, dict):
            self.attention = from_dict(AttentionConfig, self.attention, "attention")
        if isinstance(self.cache, dict):
            self.cache = from_dict(CacheConfig, self.cache, "cache")
        problems = []
        for name, value in (("attention.window", self.attention.window), ("cache.window", self.cache.window)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4096:
                problems.append(f"{name} must be an integer from 0 (none) to 4096, got {value!r}")
        if not isinstance(self.cache.theta, (int, float)) or not 0 <= self.cache.theta < 1e4:
            problems.append(f"cache.theta must be a number from 0 to 10000, got {self.cache.theta!r}")
        if not isinstance(self.cache.lam, (int, float)) or not 0 <= self.cache.lam < 1:
            problems.append(f"cache.lam must be in [0, 1) (0 = off), got {self.cache.lam!r}")
        if not isinstance(self.cache.match_lam, (int, float)) or not 0 <= self.cache.match_lam < 1:
            problems.append(f"cache.match_lam must be in [0, 1) (0 = no match share), got {self.cache.match_lam!r}")
        if not isinstance(self.cache.match_cosine, (int, float)) or not -1 <= self.cache.match_cosine <= 1:
            problems.append(f"cache.match_cosine must be in [-1, 1], got {self.cache.match_cosine!r}")
        if not isinstance(self.start, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 <= p < self.vocab_size for p in self.start):
            problems.append(f"start must be a list of piece ids from 0 to vocab_size - 1, got {self.start!r}")
        if self.cell not in CELLS:
            problems.append(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.direction not in DIRECTIONS:
            problems.append(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        for name in ("vocab_size", "layers", "embedding_size", "hidden_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("embedding", "input", "between_layers", "output", "weight"):
            value = getattr(self.dropout, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                problems.append(f"dropout.{name} must be in [0, 1), got {value!r}")
        if self.dropout.mode not in DROPOUT_MODES:
            problems.append(f"dropout.mode must be one of {', '.join(DROPOUT_MODES)}, got {self.dropout.mode!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def state_parts(self) -> int:
        return 2 if self.cell == "lstm" else 1

    @property
    def cache_on(self) -> bool:
        return (self.cache.lam > 0 or self.cache.match_lam > 0) and self.cache.window > 0

    @property
    def memory_window(self) -> int:
        """The ring of past outputs the state carries: as long as attention or the cache looks back, rounded up to
        a multiple of 16 (vectorised work then treats every row of a batch alike: a row's bits do not depend on
        its company)."""
        window = max(self.attention.window, self.cache.window if self.cache_on else 0)
        return -(-window // 16) * 16

    def keeps_memory(self, mix_cache: bool = True) -> bool:
        """Whether a state carries the ring: always with attention; for the cache alone, only where the model reads
        (`mix_cache`). Writing never reads the cache, so a stream that writes keeps no ring (docs/memory.md)."""
        return self.attention.window > 0 or (self.cache_on and mix_cache)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return from_dict(cls, data, "model")


def from_dict(cls, data: Any, where: str):
    """Build dataclass `cls` from `data`, refusing unknown or missing keys by name."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as error:  # a required key is missing
        raise ValueError(f"{where}: {error}") from None


class Features(NamedTuple):
    hidden: Tensor  # the last layer's output (with attention's), before output dropout (what TAR penalises)
    dropped: Tensor  # the same after output dropout (what AR penalises and the decoder reads)
    state: State
    recall: Recall | None = None  # what the continuous cache recalled at each position (inference, cache on)
    keys: Tensor | None = None  # what the memory keeps of each position: the last layer's (normed) output


class SequenceDropout(nn.Module):
    """Dropout on (batch, time, features) activations.

    Locked: one mask per sequence, shape (batch, 1, features), reused at every
    timestep and drawn anew at every call. Naive: a new mask at every timestep.
    """

    def __init__(self, p: float, locked: bool):
        super().__init__()
        self.p = p
        self.locked = locked

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        shape = (x.shape[0], 1, x.shape[2]) if self.locked else x.shape
        mask = x.new_empty(shape).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, locked={self.locked}"


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c, d = config, config.dropout
        locked = d.mode == "locked"
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_size)
        rnn_class = CELLS[c.cell]
        extra = {"nonlinearity": c.cell.removeprefix("rnn_")} if rnn_class is nn.RNN else {}
        self.rnns = nn.ModuleList(
            rnn_class(c.embedding_size if i == 0 else c.hidden_size, c.hidden_size, batch_first=True, **extra)
            for i in range(c.layers)
        )
        self.input_dropout = SequenceDropout(d.input, locked)
        self.layer_dropout = SequenceDropout(d.between_layers, locked)
        self.output_dropout = SequenceDropout(d.output, locked)
        decoder_in = c.embedding_size if c.tie_weights else c.hidden_size
        self.projection = nn.Linear(c.hidden_size, decoder_in, bias=False) if decoder_in != c.hidden_size else None
        self.decoder = nn.Linear(decoder_in, c.vocab_size)
        if c.tie_weights:
            self.decoder.weight = self.embedding.weight
        self.attention = Attention(c.hidden_size, c.attention.window) if c.attention.window else None
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        self._start_states: dict[tuple, State] = {}  # `initial_state`'s, by the weights they were read with

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def tokens(self, ids: list[int] | list[list[int]]) -> Tensor:
        """Token ids as a tensor on the model's device."""
        return torch.tensor(ids, device=self.device)

    def initial_state(self, batch_size: int, mix_cache: bool = True) -> State:
        """The state before any text; `mix_cache` False: for writing (without the ring when only the cache
        would read it). At inference with a start context (`config.start`), the state after its marker and its
        pieces but the last: `features` reads a text's marker as that last piece, so every text is read as if
        it followed the context. Training reads from zeros, as it always has."""
        if self.training or len(self.config.start) < 2:
            return self._zero_state(batch_size, mix_cache)
        # Kept while the weights are the ones it was read with (an in-place change of a weight bumps its version):
        # reading the context costs a request milliseconds. Made outside inference mode, so that a caller that
        # takes gradients (dynamic evaluation) can start from it too.
        key = (mix_cache, tuple(self.config.start), tuple((p.data_ptr(), p._version) for p in self.parameters()))
        if key not in self._start_states:
            with torch.inference_mode(False), torch.no_grad():
                context = self.tokens([self.config.start[:-1]])
                start = self._features(context, self._zero_state(1, mix_cache), mix_cache=mix_cache).state
            self._start_states = {**{k: v for k, v in self._start_states.items() if k[2] == key[2]}, key: start}
        return self._start_states[key].rows([0] * batch_size)

    def _zero_state(self, batch_size: int, mix_cache: bool) -> State:
        c = self.config
        rnn = self.embedding.weight.new_zeros(c.layers, c.state_parts, batch_size, c.hidden_size)
        if not c.keeps_memory(mix_cache):
            return State(rnn)
        return State(rnn, *empty_memory(batch_size, c.memory_window, c.hidden_size, rnn))

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """(batch, time) token ids -> (batch, time, vocab) logits and the next state."""
        features = self.features(tokens, state)
        return self.logits(features.dropped), features.state

    def features(self, tokens: Tensor, state: State | None = None,
                 block_rows: int | None = STEP_BLOCK_ROWS, in_place: bool = False, mix_cache: bool = True) -> Features:
        """`block_rows`: for a step (one piece per row), the rows of each product (`in_blocks`); None: all in one,
        for a caller whose batches are its own (a search), where a row need not match its bits in other company.
        `in_place`: the memory's ring may be written where it is (a caller that owns its state and drops the
        old one: the engine's batch); otherwise the state passed in is never changed. `mix_cache` False: the
        continuous cache recalls nothing (the memory is kept all the same)."""
        start = self.config.start
        if not self.training and len(start) > 1:  # the marker stands for the start context's last piece
            tokens = tokens.masked_fill(tokens == start[0], start[-1])
        return self._features(tokens, state, block_rows, in_place, mix_cache)

    def _features(self, tokens: Tensor, state: State | None = None, block_rows: int | None = STEP_BLOCK_ROWS,
                  in_place: bool = False, mix_cache: bool = True) -> Features:
        if state is None:
            state = self.initial_state(tokens.shape[0], mix_cache)
        elif state.memory is None and self.config.keeps_memory(mix_cache):
            raise ValueError("this state was read for writing and keeps no memory: it cannot be read with the cache")
        elif state.memory is not None:
            state = state.with_room(tokens.shape[1], self.config.memory_window)  # no ring wraps at a cut
            if state.shared is not None and self.attention is not None:  # attention reads whole rings
                state = state.widened(self.config.memory_window)
        x = self.input_dropout(self._embed(tokens))
        next_rnn = []
        for index, rnn in enumerate(self.rnns):
            x, layer_state = self._run_layer(rnn, x, state.rnn[index], block_rows)
            next_rnn.append(layer_state)
            if index < len(self.rnns) - 1:
                x = self.layer_dropout(x)
        next_state = State(torch.stack(next_rnn), state.memory, state.next_pieces, state.length, state.shared)
        recall, keys = None, self.memory_keys(x)
        if state.memory is not None:
            if self.training:  # the chunk at once; the memory keeps its normed outputs for the next one
                attended = self.attention.chunk(x, state) if self.attention is not None else x
                next_state = remember(next_state, keys, tokens)
                x = attended
            else:
                cache = self.config.cache if self.config.cache_on and mix_cache else None
                x, next_state, recall = read_ring(
                    x, tokens, next_state, self.memory_keys, self.attention, cache,
                    lambda fn, rows: in_blocks(fn, rows, block_rows), in_place)
        return Features(x, self.output_dropout(x), next_state, recall, keys)

    def memory_keys(self, outputs: Tensor) -> Tensor:
        """What the memory keeps of the last recurrent layer's outputs: layer-normed when attention reads them,
        as they are otherwise (the continuous cache alone)."""
        return self.attention.norm(outputs) if self.attention is not None else outputs

    def logits(self, hidden: Tensor) -> Tensor:
        if self.projection is not None:
            hidden = self.projection(hidden)
        return self.decoder(hidden)

    def decode(self, hidden: Tensor, block_rows: int | None = DECODE_BLOCK_ROWS) -> Tensor:
        """`logits` of (rows, features), each row's bits the same whatever the rows beside it: every call has
        `block_rows` rows (DECODE_BLOCK_ROWS; a text being scored uses bigger blocks, model.scoring).

        For inference: it reads the weights as they are at the call (nothing cached), and a padded
        row costs as much as a real one."""
        return in_blocks(self.logits, hidden, block_rows)

    # -- inference: what everything outside training calls -----------------------------------------------------

    def step(self, tokens: Tensor, state: State | None = None, invariant: bool = True,
             in_place: bool = False, mix_cache: bool = True) -> tuple[Tensor, State]:
        """One piece per row: (rows,) ids -> the (rows, vocab) logits after it, and the state after it. With the
        continuous cache on, the "logits" are the mixture's log-probabilities; `mix_cache` False gives the
        model's own, for writing: fed the model's own samples, the cache makes every word it wrote likelier
        next and the writing loops (docs/memory.md).

        `invariant`: every product in fixed blocks of rows (STEP_BLOCK_ROWS, DECODE_BLOCK_ROWS), so a row's bits
        do not depend on the rows beside it (the engine: a seeded request's output must not change with the
        traffic); False: one product each, for a caller whose batches are its own (a search that makes the same
        rounds for the same question)."""
        features = self.features(tokens.view(-1, 1), state, STEP_BLOCK_ROWS if invariant else None, in_place,
                                 mix_cache)
        logits = self.decode(features.dropped[:, -1], DECODE_BLOCK_ROWS if invariant else None)
        if features.recall is not None:
            logits = features.recall.mix(logits, self.config.cache)
        return logits, features.state

    def read(self, tokens: Tensor, state: State | None = None, every_piece: bool = False,
             block_rows: int | None = DECODE_BLOCK_ROWS, mix_cache: bool = True) -> tuple[Tensor, State]:
        """A slice of one text in one call: (pieces,) ids -> the (1, vocab) logits after its last piece, or with
        `every_piece` the (pieces, vocab) logits after each, and the state after it. Any cut of a text into reads
        of at least MIN_CALL_PIECES pieces gives the bits of one read of it (`slice_end`). `mix_cache`: as
        `step`'s."""
        features = self.features(tokens.view(1, -1), state, mix_cache=mix_cache)
        outputs = features.dropped[0] if every_piece else features.dropped[:, -1]
        logits = self.decode(outputs, block_rows)
        if features.recall is not None:
            recall = features.recall if every_piece else features.recall.last()
            logits = recall.mix(logits, self.config.cache)
        return logits, features.state

    def read_rows(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """Several texts side by side, one row each: (rows, time) ids -> the (rows, time, vocab) logits after
        each piece and the state after the last. For a caller whose batch is its own (the alternatives of a
        part of a line, read with what follows them): its products are not cut into fixed blocks, and the memory
        of the state passed in is written over (a batch made for the call: `repeat_rows`, `select_rows`)."""
        features = self.features(tokens, state, None, in_place=True)
        logits = self.decode(features.dropped.flatten(0, 1), None)
        if features.recall is not None:
            logits = features.recall.mix(logits, self.config.cache)
        return logits.view(*tokens.shape, -1), features.state

    @staticmethod
    def select_rows(state: State, rows: Tensor | list[int] | slice) -> State:
        """The state of some sequences of a batch, in the order given."""
        return state.rows(rows)

    @staticmethod
    def stack_rows(states: list[State]) -> State:
        """One batch state from the states of several sequences (or sub-batches), in order."""
        return State.stack(states)

    @staticmethod
    def repeat_rows(state: State, count: int) -> State:
        """`count` copies of the state of one sequence, as a batch."""
        return state.rows([0] * count)

    @staticmethod
    def count_rows(state: State) -> int:
        """How many sequences a batch state holds."""
        return state.count

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied matrix counts once

    def _embed(self, tokens: Tensor) -> Tensor:
        weight = self.embedding.weight
        p = self.config.dropout.embedding
        if self.training and p > 0:
            keep = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
            weight = weight * keep
        return F.embedding(tokens, weight)

    def _run_layer(self, rnn: nn.RNNBase, x: Tensor, layer_state: Tensor,
                   block_rows: int | None = STEP_BLOCK_ROWS) -> tuple[Tensor, Tensor]:
        if x.shape[1] == 1 and not self.training and self.config.cell == "lstm":
            return _lstm_step(rnn, x, layer_state, block_rows)
        hx = (layer_state[0:1], layer_state[1:2]) if self.config.state_parts == 2 else layer_state
        p = self.config.dropout.weight
        if self.training and p > 0:
            # DropConnect: one mask on W_hh for the whole sequence, passed in for this
            # call only, so the parameter stays a leaf and the fused kernel still runs.
            dropped = {"weight_hh_l0": F.dropout(rnn.weight_hh_l0, p)}
            out, new_hx = functional_call(rnn, dropped, (x, hx), strict=False)
        else:
            out, new_hx = rnn(x, hx)
        return out, torch.cat(new_hx) if isinstance(new_hx, tuple) else new_hx


def _lstm_step(rnn: nn.LSTM, x: Tensor, layer_state: Tensor, block_rows: int | None) -> tuple[Tensor, Tensor]:
    """One inference step of every row, the cell written out (PyTorch's gate order: input, forget, cell,
    output). At one piece per row the fused kernel is no faster than this where the engine steps (at one thread,
    up to 32 rows, this is faster: bench/step.py, docs/serving.md), and a step is what generation and the
    searches do. Its products run in blocks of `block_rows` rows (STEP_BLOCK_ROWS), so a
    row's bits do not depend on its neighbours; steps never mix with the fused kernel's multi-piece reading
    (`slice_end`)."""
    h, c = layer_state[0], layer_state[1]
    gates = (in_blocks(lambda rows: F.linear(rows, rnn.weight_ih_l0, rnn.bias_ih_l0), x[:, 0], block_rows)
             + in_blocks(lambda rows: F.linear(rows, rnn.weight_hh_l0, rnn.bias_hh_l0), h, block_rows))
    input_gate, forget_gate, cell_gate, output_gate = gates.chunk(4, 1)
    c = torch.sigmoid(forget_gate) * c + torch.sigmoid(input_gate) * torch.tanh(cell_gate)
    h = torch.sigmoid(output_gate) * torch.tanh(c)
    return h.unsqueeze(1), torch.stack([h, c])


def in_blocks(fn: Callable[[Tensor], Tensor], rows: Tensor, block_rows: int | None = DECODE_BLOCK_ROWS) -> Tensor:
    """`fn` over `rows` (rows, features) called on blocks of exactly `block_rows` rows, the last one padded
    with zeros: every call has the same shape whatever the number of rows. None: one call of them all."""
    if block_rows is None:
        return fn(rows)
    count = rows.shape[0]
    padding = -count % block_rows
    if padding:
        rows = torch.cat([rows, rows.new_zeros(padding, rows.shape[1])])
    else:
        rows = rows.contiguous()  # every block the same layout
    return torch.cat([fn(block) for block in rows.split(block_rows)])[:count]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode (every dropout off) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def slice_end(start: int, end: int, limit: int, align: int = 1) -> int:
    """Where the call reading pieces `start`..`end` from `start` stops: after at most about `limit` pieces, at a
    multiple of `align` when that leaves the call 2 pieces or more, and never so that this call or the rest is one
    piece (MIN_CALL_PIECES), unless the whole rest is one piece. Any such cut reads the text as one pass does."""
    limit = max(limit, 2 * MIN_CALL_PIECES)
    if end - start <= limit:
        return end
    stop = start + limit
    if align > 1 and stop // align * align - start >= MIN_CALL_PIECES:
        stop = stop // align * align
    if end - stop < MIN_CALL_PIECES:  # the rest would be a lone piece
        stop -= 1
    return stop
