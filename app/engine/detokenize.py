"""What one sampled token makes of a generation's text: its event (the text it releases, its logprobs) and
whether the text ends with it (end of text, a stop string, the length asked for). A stop string may begin
in one token and end in a later one, so text that may be its start is held back until it is decided."""

from __future__ import annotations

from torch import Tensor

from .events import FinishReason, TokenEvent
from .work import Sequence


def accept(sequence: Sequence, token_id: int, eos_id: int,
           logprobs: Tensor | None) -> tuple[TokenEvent | None, FinishReason | None]:
    """The TokenEvent of `token_id` (none for the end of the text), and the reason the sequence ends with
    it, if it does. `logprobs`: the step's log-probabilities, when the request asked for them."""
    request = sequence.request
    sequence.tokens += 1
    if token_id == eos_id:
        sequence.text += sequence.decoder.flush()
        return None, FinishReason.EOS
    logprob = top = None
    if logprobs is not None:
        logprob = float(logprobs[token_id])
        if request.logprobs:
            values, index = logprobs.topk(request.logprobs)
            top = [(sequence.decoder.peek(j), v) for v, j in zip(values.tolist(), index.tolist())]
    before = len(sequence.text)
    piece = sequence.decoder.token(token_id)
    sequence.text += piece.text
    last = sequence.tokens >= request.max_new_tokens
    if last:
        sequence.text += sequence.decoder.flush()
    stop_at = find_stop(sequence.text, request.stop, before)
    if stop_at is not None:
        sequence.text = sequence.text[:stop_at]
    safe = len(sequence.text) if stop_at is not None or last else safe_end(sequence.text, request.stop)
    event = TokenEvent(token_id, sequence.text[sequence.released:safe], logprob, top, piece.data)
    sequence.released = max(sequence.released, safe)
    if stop_at is not None:
        return event, FinishReason.STOP
    return event, FinishReason.LENGTH if last else None


def find_stop(text: str, stops: tuple[str, ...], new_from: int) -> int | None:
    """Where the first stop string begins in `text`, looking only where new text could complete one."""
    found = [i for stop in stops if (i := text.find(stop, max(0, new_from - len(stop) + 1))) >= 0]
    return min(found) if found else None


def safe_end(text: str, stops: tuple[str, ...]) -> int:
    """The end of the text that can be sent: what follows may still be the start of a stop string."""
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:n]):
                hold = n
                break
    return len(text) - hold
