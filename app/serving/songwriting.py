"""The songwriting endpoints: /v1/analyze, /v1/lines, /v1/verse, /v1/alternatives, and /v1/predict under
constraints.

Each body is checked first (configured limits, then values: 413 and 400 before an unknown
model's 404). The dictionary is loaded off the event loop; the model work runs on the model's
engine worker as sliced work (`ModelEngine.read`: one model call per step, taking turns with
every stream's decode steps and every text being read), so the model is never used from two
threads, nobody waits behind a search, and a search ends within its work budget, or at the
request timeout. A request nothing can meet is a 422 naming the field.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, TypeVar

from lyricist.model.steps import Steps
from lyricist.songwriting import tasks
from lyricist.songwriting.alternatives import PartError, alternative_steps, part_of_line
from lyricist.songwriting.lexicon import Lexicon
from lyricist.songwriting.lines import ConstraintError, line_steps, verse_steps
from lyricist.songwriting.phonology import Phonology

from .. import limits
from .. import protocol as p
from ..engine import ModelEngine
from ..errors import APIError
from ..registry import ModelRegistry
from ..settings import Settings
from .deadline import within_deadline
from .generation import sampling_params

T = TypeVar("T")


async def run_job(engine: ModelEngine, steps: Callable[[], Steps[T]], settings: Settings) -> T:
    """`steps()` on the engine's worker thread, a model call per turn: a 422 for constraints it could not
    meet, a 504 past the request timeout (the work stops before its next step)."""
    try:
        return await within_deadline(engine.read(steps, "songwriting"), settings)
    except ConstraintError as error:
        raise APIError(422, f"{error.field}: {error}", error.field, "constraint_unsatisfiable") from None


def _count(engine: ModelEngine, prompt_tokens: int, completion_tokens: int = 0) -> None:
    series = engine.metrics.for_model(engine.name)
    series.prompt_tokens.inc(prompt_tokens)
    if completion_tokens:
        series.generated_tokens.inc(completion_tokens)


# -- /v1/predict with rhymes_with / syllables ---------------------------------------------------

def check_constraints(body: p.PredictRequest) -> None:
    """Songwriting constraints need whole words."""
    if body.constrained and body.unit != "word":
        given = [name for name in ("rhymes_with", "syllables") if getattr(body, name) is not None]
        raise APIError(400, f"unit: {' and '.join(given)} need unit \"word\", got unit \"{body.unit}\"", "unit",
                       "unsupported")


async def predict_constrained(body: p.PredictRequest, engine: ModelEngine, settings: Settings,
                              notes: dict[str, Any]) -> p.PredictResponse:
    await asyncio.to_thread(tasks.prepare, engine.tokenizer)
    result = await run_job(engine, lambda: tasks.predict_words(
        engine.model, engine.tokenizer, body.prompt, body.top_k, body.temperature, body.rhymes_with, body.rhyme,
        body.syllables, prompts=engine.prompts), settings)
    prediction = result.prediction
    notes.update(prompt_tokens=prediction.prompt_tokens)
    distribution = [p.Candidate(text=text, prob=prob, logprob=p.json_logprob(math.log(prob) if prob > 0 else -math.inf))
                    for text, prob in prediction.distribution]
    return p.PredictResponse(
        model=engine.name, unit="word", prompt_tokens=prediction.prompt_tokens, distribution=distribution,
        coverage=sum(c.prob for c in distribution), entropy=prediction.entropy, exact=prediction.exact,
        constraint_mass=prediction.constraint_mass, rhymes_with_known=result.rhymes_with_known)


# -- /v1/analyze ---------------------------------------------------------------------------------

async def analyze(body: p.AnalyzeRequest, settings: Settings, registry: ModelRegistry,
                  notes: dict[str, Any]) -> p.AnalyzeResponse:
    limits.check(body, settings)
    engine = registry.get(body.model)
    notes.update(model=engine.name, prompt=body.text)
    score = await within_deadline(engine.score(body.text), settings)  # the whole text once, on the engine's worker
    notes.update(prompt_tokens=len(score.token_ids) + 1)
    stanzas = await asyncio.to_thread(tasks.analyze, body.text, score, engine.tokenizer)  # the phonology, off the loop
    for line in (line for stanza in stanzas for line in stanza["lines"]):
        if not math.isfinite(line.get("nats_per_char", math.nan)):
            line["nats_per_char"] = None
    return p.AnalyzeResponse(model=engine.name, stanzas=stanzas)


async def _words(engine: ModelEngine) -> tuple[Lexicon, frozenset[str]]:
    """The searches' lexicon and the words a line may end on or a part be replaced by (`tasks.prepare`,
    `tasks.end_words`): built once, off the event loop, so that no search's first step holds up the streams."""
    lexicon = await asyncio.to_thread(tasks.prepare, engine.tokenizer)
    return lexicon, await asyncio.to_thread(tasks.end_words, engine.checkpoint)


# -- /v1/lines and /v1/verse ---------------------------------------------------------------------

def check_stress(body: p.LinesRequest | p.VerseRequest) -> None:
    """A stress pattern has as many digits as the line has syllables (the list one per line of the scheme)."""
    if body.stress is None:
        return
    patterns = body.stress if isinstance(body.stress, list) else None
    if patterns is not None and len(patterns) != len(body.scheme):
        raise APIError(400, f"stress: the list must have one pattern per line of the scheme ({len(body.scheme)} for "
                            f"{body.scheme!r}), got {len(patterns)}", "stress", "invalid_value")
    counts = body.syllables if isinstance(body.syllables, list) and isinstance(body, p.VerseRequest) else None
    for index, pattern in enumerate(patterns or [body.stress]):
        syllables = counts[index] if counts is not None else body.syllables
        if syllables is None:
            continue
        low, high = (syllables, syllables) if isinstance(syllables, int) else syllables
        if not low <= len(pattern) <= high:
            raise APIError(400, f"stress: {pattern!r} has {len(pattern)} syllables, but syllables is {syllables}",
                           "stress", "invalid_value")


async def lines(body: p.LinesRequest, settings: Settings, registry: ModelRegistry,
                notes: dict[str, Any]) -> p.LinesResponse:
    limits.check(body, settings)
    check_stress(body)
    params = sampling_params(body)
    engine = registry.get(body.model)
    notes.update(model=engine.name, prompt=body.prompt)
    lexicon, ends = await _words(engine)
    known = None if body.rhymes_with is None else await asyncio.to_thread(tasks.word_is_known, body.rhymes_with)
    result = await run_job(engine, lambda: line_steps(
        engine.model, engine.tokenizer, lexicon, body.prompt, n=body.n, syllables=body.syllables,
        rhymes_with=body.rhymes_with, rhyme=body.rhyme, params=params, prompts=engine.prompts, end_words=ends,
        stress=body.stress), settings)
    _count(engine, result.prompt_tokens, result.completion_tokens)
    notes.update(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
    return p.LinesResponse(
        model=engine.name, seed=result.seed, lines=[p.SongLine(**line.as_dict()) for line in result.lines],
        end_words=[p.EndWord(**end.as_dict()) for end in result.end_words],
        usage=p.GenerateUsage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
        rhymes_with_known=known)


def check_verse(body: p.VerseRequest) -> None:
    if isinstance(body.syllables, list) and len(body.syllables) != len(body.scheme):
        raise APIError(400, f"syllables: the list must have one entry per line of the scheme ({len(body.scheme)} "
                            f"for {body.scheme!r}), got {len(body.syllables)}", "syllables", "invalid_value")


async def verse(body: p.VerseRequest, settings: Settings, registry: ModelRegistry,
                notes: dict[str, Any]) -> p.VerseResponse:
    limits.check(body, settings)
    check_verse(body)
    check_stress(body)
    params = sampling_params(body)
    engine = registry.get(body.model)
    notes.update(model=engine.name, prompt=body.prompt)
    lexicon, ends = await _words(engine)
    result = await run_job(engine, lambda: verse_steps(
        engine.model, engine.tokenizer, lexicon, body.prompt, body.scheme, body.syllables, rhyme=body.rhyme,
        params=params, prompts=engine.prompts, end_words=ends, stress=body.stress), settings)
    _count(engine, result.prompt_tokens, result.completion_tokens)
    notes.update(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
    return p.VerseResponse(
        model=engine.name, seed=result.seed, text=result.text,
        lines=[p.VerseLine(**line.as_dict(), rhyme=letter) for line, letter in result.lines],
        usage=p.GenerateUsage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens))


# -- /v1/alternatives ---------------------------------------------------------------------

def check_part(body: p.AlternativesRequest) -> None:
    """The part is a span of one line between words, and a stress pattern has `syllables` digits."""
    try:
        part_of_line(body.text, body.start, body.end)
    except PartError as error:
        raise APIError(400, f"{error.field}: {error}", error.field, "invalid_value") from None
    if body.stress is not None and body.syllables is not None and len(body.stress) != body.syllables:
        raise APIError(400, f"stress: {body.stress!r} has {len(body.stress)} syllables, but syllables is "
                            f"{body.syllables}", "stress", "invalid_value")


async def alternatives(body: p.AlternativesRequest, settings: Settings, registry: ModelRegistry,
                       notes: dict[str, Any]) -> p.AlternativesResponse:
    limits.check(body, settings)
    check_part(body)
    engine = registry.get(body.model)
    notes.update(model=engine.name, prompt=body.text)
    lexicon, vocabulary = await _words(engine)
    phonology = await asyncio.to_thread(Phonology.load)
    result = await run_job(engine, lambda: alternative_steps(
        engine.model, engine.tokenizer, lexicon, phonology, body.text, body.start, body.end, vocabulary, n=body.n,
        syllables=body.syllables, stress=body.stress, rhymes_with=body.rhymes_with, rhyme=body.rhyme,
        max_words=body.max_words, prompts=engine.prompts, backward=engine.checkpoint.backward), settings)
    _count(engine, result.prompt_tokens)
    notes.update(prompt_tokens=result.prompt_tokens)
    return p.AlternativesResponse(
        model=engine.name, original=p.OriginalPart(**result.original.as_dict(), rank=result.rank),
        alternatives=[p.Replacement(**a.as_dict()) for a in result.alternatives],
        usage=p.GenerateUsage(prompt_tokens=result.prompt_tokens, completion_tokens=0))
