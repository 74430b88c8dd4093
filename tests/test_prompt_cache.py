import pytest
import torch

from lyricist.model import LanguageModel, ModelConfig
from lyricist.model.network import MIN_CALL_PIECES, slice_end
from lyricist.model.prompt_cache import CHUNK, PromptCache

from .helpers import same_state, tiny_model, torch_threads


def ids(n, seed=0, vocab=60):
    return torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()



def call_lengths(model):
    """The number of pieces of every call the first recurrent layer gets (a hook, not a mock)."""
    lengths = []
    model.rnns[0].register_forward_hook(lambda module, args, output: lengths.append(args[0].shape[1]))
    return lengths


def test_a_cached_prefix_never_changes_the_result():
    model = tiny_model(60).eval()
    prompt = ids(5 * CHUNK + 3)
    cold_logits, cold_state = PromptCache(model).prefill(prompt)
    warm_cache = PromptCache(model)
    warm_cache.prefill(prompt[: 3 * CHUNK + 7])  # an earlier, shorter prompt: its last boundary is cached
    warm_logits, warm_state = warm_cache.prefill(prompt)
    assert warm_cache.hits == 1
    assert same_state(warm_state, cold_state) and torch.equal(warm_logits, cold_logits)  # to the bit


def test_a_prompt_read_again_is_answered_from_the_cache_with_the_same_bits():
    model = tiny_model(60).eval()
    prompt = ids(2 * CHUNK + 5, seed=4)
    cache = PromptCache(model)
    first_logits, _ = cache.prefill(prompt)
    again_logits, again_state = cache.prefill(prompt)
    assert cache.whole_hits == 1
    fresh_logits, fresh_state = PromptCache(model).prefill(prompt)
    assert same_state(again_state, fresh_state) and torch.equal(again_logits, fresh_logits)
    assert torch.equal(first_logits, again_logits)
    cache.prefill(prompt[:-1])  # a different prompt is read, not looked up
    assert cache.whole_hits == 1


@pytest.mark.parametrize("length", [1, 2, 3, CHUNK, CHUNK + 1, CHUNK + 2, 3 * CHUNK + 5, 300, 513])
def test_a_prompt_read_in_slices_of_any_size_has_the_bits_of_one_pass(length):
    # The canonical reading is one pass over the whole prompt; every cut the cache or the engine makes gives
    # its bits, because no call reads a lone piece (that one takes another kernel path).
    model = tiny_model(60).eval()
    prompt = ids(length, seed=length)
    with torch.inference_mode():
        whole_logits, whole_state = model.read(torch.tensor(prompt))
    for slice_pieces in (4, 5, 16, 37, 256, 1024):
        lengths = call_lengths(model)
        sliced_logits, sliced_state = PromptCache(model).prefill(prompt, slice_pieces)
        assert same_state(sliced_state, whole_state), slice_pieces
        assert torch.equal(sliced_logits, whole_logits), slice_pieces
        # (a lone piece is a step, the cell written out, which the fused kernel's hook does not see)
        assert sum(lengths) == (length if length > 1 else 0) and (length == 1 or min(lengths) >= MIN_CALL_PIECES)
        assert max(lengths, default=1) <= max(slice_pieces, 2 * MIN_CALL_PIECES)
        model.rnns[0]._forward_hooks.clear()


def test_a_reading_interleaved_with_another_and_with_odd_budgets_gives_the_same_bits():
    model = tiny_model(60).eval()
    a, b = ids(200, seed=1), ids(150, seed=2)
    fresh = [PromptCache(model).prefill(p) for p in (a, b)]
    cache = PromptCache(model)
    readings = [cache.reader(a), cache.reader(b)]
    budgets = iter([7, 4, 33, 5, 100, 9, 61, 4] * 10)
    while not all(r.done for r in readings):
        for reading in readings:
            if not reading.done:
                reading.read(next(budgets))
    for reading, (want_logits, want_state) in zip(readings, fresh):
        assert same_state(reading.state, want_state)
        assert torch.equal(reading.logits, want_logits)


@pytest.mark.parametrize("threads", [1, 2])
def test_slices_give_the_bits_of_one_pass_at_the_shipped_shape(threads):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=4000, layers=2, hidden_size=512, embedding_size=512)).eval()
    prompt = ids(300, seed=5, vocab=4000)
    with torch.inference_mode(), torch_threads(1):
        whole_logits, whole_state = model.read(torch.tensor(prompt))
    with torch_threads(threads):
        for slice_pieces in (4, 64, 256):
            sliced_logits, sliced_state = PromptCache(model).prefill(prompt, slice_pieces)
            assert same_state(sliced_state, whole_state) and torch.equal(sliced_logits, whole_logits)


def test_no_cut_leaves_a_lone_piece():
    for total in range(1, 60):
        for limit in range(1, 20):
            for align in (1, CHUNK):
                start, calls = 0, []
                while start < total:
                    end = slice_end(start, total, limit, align)
                    calls.append(end - start)
                    start = end
                assert total == 1 or min(calls) >= MIN_CALL_PIECES, (total, limit, calls)
                assert max(calls) <= max(limit, 2 * MIN_CALL_PIECES)


def test_states_are_kept_where_calls_end_on_a_boundary_and_the_capacity_holds():
    model = tiny_model(60).eval()
    cache = PromptCache(model, capacity=3)
    cache.prefill(ids(CHUNK))  # one call: nothing before its last piece to keep
    assert len(cache._states[False]) == 0
    cache.prefill(ids(2 * CHUNK + 1, seed=2))  # 32 would leave a lone piece: the call stops at 16
    assert len(cache._states[False]) == 1
    cache.prefill(ids(2 * CHUNK + 5, seed=3))  # one call to the last boundary, one for the rest
    assert len(cache._states[False]) == 2
    cache.prefill(ids(5 * CHUNK + 3, seed=4), CHUNK)  # slices of a chunk: a state at every boundary
    assert len(cache._states[False]) == 3
