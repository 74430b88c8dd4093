"""Autoregressive generation for one prompt: the plain loop a Python shell or the CLI uses."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .network import LanguageModel, evaluating
from .sampling import SamplingParams, keep_only, make_generator, random_seed, sample
from .tokenizer import Tokenizer


@torch.inference_mode()
def generate(
    model: LanguageModel,
    tokenizer: Tokenizer,
    prompt: str = "",
    max_new_tokens: int = 200,
    params: SamplingParams = SamplingParams(),
) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece until max_new_tokens or end of text.

    An unseeded `params` gets a fresh seed; pass `seed` to reproduce a result. The
    model runs in eval mode and is left in the mode it was in, also between pieces.
    """
    prompt_ids, typed = tokenizer.encode_prompt(prompt)
    generator = make_generator(random_seed() if params.seed is None else params.seed)
    seen = torch.zeros(1, tokenizer.vocab_size, dtype=torch.bool, device=model.device)
    seen[0, prompt_ids] = True
    decoder = tokenizer.incremental_decoder(typed)
    with evaluating(model):
        logits, state = model.read(model.tokens(prompt_ids), mix_cache=False)
    if typed:
        logits = keep_only(logits, tokenizer.pieces_beginning(typed))
    for _ in range(max_new_tokens):
        token = sample(logits, [params], [generator], seen)
        token_id = int(token)
        if token_id == tokenizer.eos_id:
            break
        seen[0, token_id] = True
        if text := decoder.push(token_id):
            yield text
        with evaluating(model):
            logits, state = model.step(token, state, mix_cache=False)
    if text := decoder.flush():
        yield text

