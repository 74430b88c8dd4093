import torch

from lyricist.model.prompt_cache import CHUNK, PromptCache

from .helpers import tiny_model


def ids(n, seed=0):
    return torch.randint(3, 60, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_a_cached_prefix_never_changes_the_result():
    model = tiny_model(60).eval()
    prompt = ids(5 * CHUNK + 3)
    cold = PromptCache(model).prefill(prompt)
    warm_cache = PromptCache(model)
    warm_cache.prefill(prompt[: 3 * CHUNK + 7])  # an earlier, shorter prompt: its boundaries are cached
    warm = warm_cache.prefill(prompt)
    assert warm_cache.hits == 1
    assert torch.equal(warm.state, cold.state) and torch.equal(warm.dropped, cold.dropped)  # to the bit


def test_a_prompt_read_again_is_answered_from_the_cache_with_the_same_bits():
    model = tiny_model(60).eval()
    prompt = ids(2 * CHUNK + 5, seed=4)
    cache = PromptCache(model)
    first = cache.prefill(prompt)
    again = cache.prefill(prompt)
    assert cache.whole_hits == 1
    fresh = PromptCache(model).prefill(prompt)
    assert torch.equal(again.state, fresh.state) and torch.equal(again.dropped, fresh.dropped)
    assert torch.equal(first.dropped, again.dropped)
    cache.prefill(prompt[:-1])  # a different prompt is read, not looked up
    assert cache.whole_hits == 1


def test_chunked_reading_equals_one_pass():
    model = tiny_model(60).eval()
    prompt = ids(3 * CHUNK + 5, seed=1)
    with torch.inference_mode():
        whole = model.features(torch.tensor([prompt]))
    chunked = PromptCache(model).prefill(prompt)
    torch.testing.assert_close(chunked.state, whole.state)
    torch.testing.assert_close(chunked.dropped[:, -1], whole.dropped[:, -1])


def test_only_whole_chunks_are_kept_and_the_capacity_holds():
    model = tiny_model(60).eval()
    cache = PromptCache(model, capacity=3)
    cache.prefill(ids(CHUNK))  # one chunk: nothing before its last piece to keep
    assert len(cache._states) == 0
    cache.prefill(ids(2 * CHUNK + 1, seed=2))
    assert len(cache._states) == 2
    for seed in range(3, 8):
        cache.prefill(ids(2 * CHUNK + 1, seed=seed))
    assert len(cache._states) == 3
