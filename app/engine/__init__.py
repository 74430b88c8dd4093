"""The serving engine: continuous batching of generation, chunked prefill and sliced jobs over one model, on a
worker thread of its own; usable without HTTP. One file per concern (docs/architecture.md):

- events.py: what it is asked and answers (GenerationRequest, TokenEvent, Finished, FinishReason, errors)
- stream.py: a generation as its client reads it (Stream)
- engine.py: ModelEngine: admission, the queue, the worker loop, jobs, ending every sequence once
- reading.py: chunked prefill, the texts being read a slice per turn
- batch.py: the running batch's rows and tensors, one model step for all
- detokenize.py: the text a token releases, logprobs, stop strings
- threads.py: how many torch threads each phase gets
- handoff.py: results from the worker thread to the event loop
- work.py: the units of work (Sequence, Job)
"""

from .engine import ModelEngine
from .events import Event, Finished, FinishReason, GenerationRequest, QueueFull, ShuttingDown, TokenEvent
from .stream import Stream

__all__ = ["Event", "FinishReason", "Finished", "GenerationRequest", "ModelEngine", "QueueFull", "ShuttingDown",
           "Stream", "TokenEvent"]
