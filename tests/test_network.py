import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lyricist.model import LanguageModel, ModelConfig
from lyricist.model.memory import State
from lyricist.model.network import CELLS, SequenceDropout, evaluating

from .helpers import same_state, tiny_model, torch_threads

V = 50


def tokens(batch=3, time=9, seed=1):
    return torch.randint(0, V, (batch, time), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cell", CELLS)
def test_shapes_and_state_layout(cell):
    model = tiny_model(V, cell, layers=3)
    logits, state = model(tokens(batch=4, time=7))
    assert logits.shape == (4, 7, V)
    assert state.rnn.shape == (3, 2 if cell == "lstm" else 1, 4, 16)


@pytest.mark.parametrize("cell", CELLS)
def test_stepping_with_carried_state_equals_one_pass(cell):
    model = tiny_model(V, cell).eval()
    x = tokens()
    whole, whole_state = model(x)
    state, steps = None, []
    for t in range(x.shape[1]):
        logits, state = model(x[:, t : t + 1], state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole)
    torch.testing.assert_close(state.rnn, whole_state.rnn)


@pytest.mark.parametrize("cell", CELLS)
def test_rows_split_from_a_batch_and_stacked_again_behave_as_in_the_batch(cell):
    model = tiny_model(V, cell).eval()
    x = tokens(batch=3, time=5)
    _, state = model(x)
    rows = [LanguageModel.select_rows(state, [i]) for i in range(3)]
    torch.testing.assert_close(LanguageModel.stack_rows(rows).rnn, state.rnn)

    nxt = tokens(batch=3, time=4, seed=2)
    batched, _ = model(nxt, state)
    for i in range(3):  # each row alone, from its own slice of the state
        alone, _ = model(nxt[i : i + 1], rows[i])
        torch.testing.assert_close(alone, batched[i : i + 1])
    reordered, _ = model(nxt[[2, 0]], LanguageModel.stack_rows([rows[2], rows[0]]))
    torch.testing.assert_close(reordered, batched[[2, 0]])


def test_tied_embeddings_share_one_matrix_and_project_when_sizes_differ():
    same = tiny_model(V, embedding_size=16, hidden_size=16)
    assert same.decoder.weight is same.embedding.weight and same.projection is None
    differ = tiny_model(V, embedding_size=12, hidden_size=16)
    assert differ.decoder.weight is differ.embedding.weight
    assert differ.projection.weight.shape == (12, 16)
    untied = tiny_model(V, tie_weights=False)
    assert untied.decoder.weight is not untied.embedding.weight and untied.projection is None
    assert untied.num_parameters() - differ.num_parameters() == V * 16 - 12 * 16  # tied counted once


def test_every_cell_learns_a_pattern():
    # Gradients reach all parameters and training lowers the loss.
    x = torch.arange(40).remainder(5).repeat(4, 1)
    for cell in CELLS:
        model = tiny_model(V, cell)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for _ in range(30):
            logits, _ = model(x[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), cell
        assert losses[-1] < 0.5 * losses[0], cell


@pytest.mark.parametrize("bad", [{"cell": "transformer"}, {"layers": 0}, {"hidden_size": -1},
                                 {"dropout": {"weight": 1.0}}, {"dropout": {"mode": "sometimes"}}])
def test_impossible_config_is_refused_by_name(bad):
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field if field != "dropout" else r"dropout\.(weight|mode)"):
        ModelConfig.from_dict({"vocab_size": V, **bad})


def test_config_round_trips_through_a_dict():
    config = ModelConfig(vocab_size=V, cell="gru", dropout={"weight": 0.3, "mode": "naive"})
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown key.*colour"):
        ModelConfig.from_dict({**config.to_dict(), "colour": "red"})


# -- dropout: each kind's defining property ------------------------------------------


def masks_seen_by(model: LanguageModel, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """The multiplicative masks each activation dropout applied during one forward."""
    seen = {"input_dropout": [], "layer_dropout": [], "output_dropout": []}

    def hook(name):
        def record(module, inputs, output):
            seen[name].append(output / inputs[0])
        return record

    handles = [getattr(model, name).register_forward_hook(hook(name)) for name in seen]
    model(x)
    for h in handles:
        h.remove()
    return seen


ALL_ACTIVATION_DROPOUT = {"input": 0.5, "between_layers": 0.5, "output": 0.5}


def test_locked_dropout_uses_one_mask_per_sequence_at_every_place():
    model = tiny_model(V, layers=3, dropout={**ALL_ACTIVATION_DROPOUT, "mode": "locked"}).train()
    first = masks_seen_by(model, tokens(batch=4, time=10))
    assert len(first["layer_dropout"]) == 2  # between each pair of the three layers
    for name, masks in first.items():
        for mask in masks:
            assert set(mask.unique().tolist()) == {0.0, 2.0}, name  # dropped, or scaled by 1/(1-p)
            assert torch.equal(mask, mask[:, :1].expand_as(mask)), name  # same at every timestep
            assert not torch.equal(mask[0], mask[1]), name  # each sequence has its own
    second = masks_seen_by(model, tokens(batch=4, time=10))
    assert not torch.equal(first["input_dropout"][0], second["input_dropout"][0])  # drawn anew per call
    layer_masks = first["layer_dropout"]
    assert not torch.equal(layer_masks[0], layer_masks[1])  # each place has its own


def test_naive_dropout_draws_a_new_mask_every_timestep():
    model = tiny_model(V, dropout={**ALL_ACTIVATION_DROPOUT, "mode": "naive"}).train()
    for name, masks in masks_seen_by(model, tokens(batch=4, time=10)).items():
        for mask in masks:
            assert set(mask.unique().tolist()) == {0.0, 2.0}, name
            changes_over_time = (mask[:, 1:] != mask[:, :-1]).any(dim=2)
            assert changes_over_time.all(), name


def test_sequence_dropout_is_off_in_eval_and_at_zero():
    x = torch.randn(2, 5, 8)
    assert torch.equal(SequenceDropout(0.5, locked=True).eval()(x), x)
    assert torch.equal(SequenceDropout(0.0, locked=False).train()(x), x)


def test_embedding_dropout_drops_whole_word_types():
    model = tiny_model(V, dropout={"embedding": 0.5}).train()
    x = torch.arange(V).repeat(3, 2)  # every type, several times per row, in every row
    captured = []
    handle = model.input_dropout.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    model(x)
    handle.remove()
    embedded = captured[0]
    raw = model.embedding.weight.detach()
    dropped_types = set()
    for word in range(V):
        vectors = embedded[x == word]  # every occurrence of this type
        if vectors.abs().sum() == 0:
            dropped_types.add(word)
        else:
            torch.testing.assert_close(vectors, (raw[word] * 2).expand_as(vectors))
    assert 0 < len(dropped_types) < V


def single_layer_with_weight_drop(p=0.5, cell="lstm"):
    return tiny_model(V, cell, layers=1, embedding_size=16, hidden_size=16, dropout={"weight": p})


def reference_rnn(model: LanguageModel, weight_hh: torch.Tensor) -> nn.RNNBase:
    reference = copy.deepcopy(model.rnns[0])
    with torch.no_grad():
        reference.weight_hh_l0.copy_(weight_hh)
    return reference


@pytest.mark.parametrize("cell", CELLS)
def test_weight_drop_masks_the_recurrent_matrix_once_per_sequence(cell):
    model = single_layer_with_weight_drop(cell=cell).train()
    x = tokens(batch=2, time=12)
    raw = model.rnns[0].weight_hh_l0

    torch.manual_seed(123)
    hidden = model.features(x).hidden
    torch.manual_seed(123)  # replay the one random draw of that forward: the W_hh mask
    dropped = F.dropout(raw.detach(), 0.5)
    assert (dropped == 0).float().mean().item() == pytest.approx(0.5, abs=0.1)

    # A plain RNN running the dropped matrix at every step reproduces the output,
    # so the same mask served all twelve timesteps.
    expected, _ = reference_rnn(model, dropped)(model.embedding(x))
    torch.testing.assert_close(hidden, expected)

    # The gradient reaches the raw weight, and exactly not through the dropped entries.
    hidden.sum().backward()
    assert raw.grad is not None
    assert torch.all(raw.grad[dropped == 0] == 0)
    assert raw.grad[dropped != 0].abs().sum() > 0
    assert isinstance(raw, nn.Parameter) and raw.is_leaf


def test_weight_drop_is_off_and_deterministic_in_eval_with_the_fused_kernel():
    model = single_layer_with_weight_drop()
    x = tokens(batch=2, time=12)
    model.train()
    model(x)  # a training forward first must leave nothing behind
    model.eval()
    with torch.profiler.profile() as profile:
        first, _ = model(x)
    second, _ = model(x)
    assert torch.equal(first, second)
    expected, _ = reference_rnn(model, model.rnns[0].weight_hh_l0.detach())(model.embedding(x))
    torch.testing.assert_close(model.features(x).hidden, expected)
    ops = {event.name for event in profile.events()}
    assert "aten::lstm" in ops and "aten::lstm_cell" not in ops


def test_training_forward_with_weight_drop_also_runs_the_fused_kernel():
    model = single_layer_with_weight_drop().train()
    with torch.profiler.profile() as profile:
        model(tokens())
    assert "aten::lstm" in {event.name for event in profile.events()}


def test_eval_turns_every_dropout_off():
    dropout = {"embedding": 0.3, "input": 0.3, "between_layers": 0.3, "output": 0.3, "weight": 0.3}
    noisy = tiny_model(V, dropout=dropout, seed=5)
    plain = tiny_model(V, seed=5)
    plain.load_state_dict(noisy.state_dict())
    x = tokens()
    noisy.train()
    a, _ = noisy(x)
    b, _ = noisy(x)
    assert not torch.equal(a, b)
    noisy.eval()
    plain.eval()
    torch.testing.assert_close(noisy(x)[0], plain(x)[0])
    assert torch.equal(noisy(x)[0], noisy(x)[0])


# -- a row's results do not depend on the batch it is read in --------------------------------

@pytest.fixture(scope="module")
def shipped_shape():
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(vocab_size=4000, layers=2, hidden_size=512, embedding_size=512)).eval()



@pytest.mark.parametrize("threads", [1, 2])
def test_decoded_rows_do_not_depend_on_the_batch_at_the_shipped_shape(shipped_shape, threads):
    """A row's logits have the same bits alone, among any others, and wherever it sits among them (a seeded
    request must not change with the traffic around it); a plain matrix product gives a lone row other bits."""
    model = shipped_shape
    hidden = torch.randn(64, 512, generator=torch.Generator().manual_seed(1))
    order = torch.randperm(64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode(), torch_threads(threads):
        reference = model.decode(hidden)
        torch.testing.assert_close(reference, model.logits(hidden))
        for rows in (1, 2, 3, 7, 8, 9, 15, 16, 17, 40, 63):
            assert torch.equal(model.decode(hidden[order[:rows]]), reference[order[:rows]]), rows
            assert torch.equal(model.decode(hidden[64 - rows:]), reference[64 - rows:]), rows
        assert torch.equal(model.decode(hidden.repeat(3, 1)[5:])[-64:], reference)
        assert torch.equal(model.decode(hidden.unsqueeze(1).expand(64, 3, 512)[:, -1]), reference)  # strided rows


def test_decoding_with_a_projection_is_the_logits_row_by_row():
    model = tiny_model(V, embedding_size=12, hidden_size=16).eval()
    hidden = torch.randn(11, 16)
    with torch.inference_mode():
        decoded = model.decode(hidden)
        torch.testing.assert_close(decoded, model.logits(hidden))
        assert all(torch.equal(model.decode(hidden[i : i + 1]), decoded[i : i + 1]) for i in range(11))
        assert model.decode(hidden[:0]).shape == (0, V)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_step_of_the_recurrent_layers_does_not_depend_on_the_batch_at_the_shipped_shape(shipped_shape, threads):
    """One step of a row (the engine's batched call, a word-search round) gives the same state and output bits
    alone as among others. It holds for the oneDNN LSTM kernel that torch runs on a CPU (measured; no blocks
    needed), not for torch's own kernel, which gives the rows of small batches other bits."""
    model = shipped_shape
    g = torch.Generator().manual_seed(3)
    state, tokens = State(torch.randn(2, 2, 64, 512, generator=g)), torch.randint(0, 4000, (64, 1), generator=g)
    with torch.inference_mode(), torch_threads(threads):
        full = model.features(tokens, state)
        for rows in (1, 2, 3, 5, 8, 16, 33):
            for part in (slice(0, rows), slice(64 - rows, 64)):
                alone = model.features(tokens[part], LanguageModel.select_rows(state, part))
                assert torch.equal(alone.state.rnn, LanguageModel.select_rows(full.state, part).rnn), (rows, part)
                assert torch.equal(alone.dropped, full.dropped[part]), (rows, part)


def test_evaluating_turns_dropout_off_and_restores_the_mode_it_found():
    model = tiny_model(V, dropout={"output": 0.5})
    for mode in (True, False):
        model.train(mode)
        with evaluating(model):
            assert not any(m.training for m in model.modules())
        assert all(m.training == mode for m in model.modules())
    model.train()
    with pytest.raises(RuntimeError), evaluating(model):
        raise RuntimeError("a failed call")
    assert model.training


# -- the start of a text: read after the context the checkpoint names ---------------------------------------

MARKER = 1
START = [MARKER, 7, 8, 9, 10]  # the marker, then a context of four pieces


def with_start(model: LanguageModel, start: list[int]) -> LanguageModel:
    started = copy.deepcopy(model)
    started.config = dataclasses.replace(model.config, start=start)
    return started


@pytest.mark.parametrize("memory", [{}, {"attention": {"window": 12}},
                                    {"cache": {"window": 16, "theta": 1.0, "lam": 0.3}}])
def test_a_text_is_read_as_if_it_followed_the_start_context(memory):
    """What the model says after a text's marker and pieces is what it says after the marker, the context and
    the pieces with no start set (the same bits for a read), whether read at once, stepped or in a batch; the
    context counts as no piece of the text."""
    plain = tiny_model(V, seed=5, **memory).eval()
    started = with_start(plain, START)
    text = [MARKER, 20, 21, 22, 23, 24, 25]
    with torch.inference_mode():
        expected, _ = plain.read(torch.tensor(START + text[1:]), every_piece=True)
        read, _ = started.read(torch.tensor(text), every_piece=True)
        assert read.shape[0] == len(text)
        assert torch.equal(read, expected[len(START) - 1:])
        state = started.initial_state(3)
        for at, piece in enumerate(text):
            logits, state = started.step(torch.tensor([piece] * 3), state)
            assert torch.allclose(logits, expected[len(START) - 1 + at].expand(3, -1), atol=1e-5), at
        unstarted, _ = plain.read(torch.tensor(text), every_piece=True)
        assert not torch.allclose(unstarted, read, atol=1e-3)  # the context does change the reading


def test_training_reads_from_zeros_and_reads_the_marker_itself():
    """Training never sees the context: its first state is zeros and its marker is the marker, so training a
    checkpoint that has a start context trains the model it always did."""
    plain = tiny_model(V, seed=5).train()
    started = with_start(plain, START).train()
    assert not started.initial_state(2).rnn.any()
    text = torch.tensor([[MARKER, 20, 21, 22]])
    assert torch.equal(started(text)[0], plain(text)[0])
    started.eval()
    assert started.initial_state(2).rnn.any()


def test_a_start_context_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match="start must be a list of piece ids from 0 to vocab_size - 1"):
        ModelConfig.from_dict({"vocab_size": V, "start": [MARKER, V]})
    assert ModelConfig.from_dict({"vocab_size": V, "start": START}).start == START


def test_the_start_state_follows_the_weights_and_takes_gradients_after_inference():
    """The state after the context is kept between calls only while the weights are the ones it was read with,
    and one first read in inference mode (the service) still lets a later caller take gradients through what
    it reads after it (dynamic evaluation)."""
    model = with_start(tiny_model(V, seed=5), START).eval()
    with torch.inference_mode():
        served = model.initial_state(1)
    assert same_state(model.initial_state(1), served)
    with torch.no_grad():
        model.rnns[0].weight_hh_l0.mul_(0.5)  # an in-place step, as an optimiser or dynamic evaluation takes
    moved = model.initial_state(1)
    assert not torch.equal(moved.rnn, served.rnn)
    logits, _ = model.read(torch.tensor([MARKER, 20, 21]), moved)
    logits.sum().backward()
    assert model.rnns[0].weight_hh_l0.grad is not None
