"""Every request and response body of the API (docs/api.md), and how they go on the wire, in one place."""

from __future__ import annotations

import difflib
import enum
import json
import math
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WrapValidator,
                      model_validator)
from pydantic_core import PydanticCustomError

from lyricist.model.sampling import MAX_SEED, MAX_TEMPERATURE
from lyricist.model.tokenizer import check_unicode
from lyricist.model.units import is_word_char, lf_line_breaks

# Text the model will read. JSON can carry a lone surrogate ("\\ud800"), which is
# no character; it is refused as a bad value of its field.
Text = Annotated[str, AfterValidator(check_unicode)]

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64  # the engine looks for every stop string's every prefix after each token
# Matched against what the model writes, whose line breaks are LF: a CRLF or CR in one stands for LF.
StopText = Annotated[Text, Field(max_length=MAX_STOP_CHARS), AfterValidator(lf_line_breaks)]
MAX_TOP_K = 1_000_000  # more than any vocabulary; it keeps the value a machine integer
MAX_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5
MAX_PREDICT_TOP_K = 100
MAX_CHOICES = 16  # n of /v1/completions, each a sequence of its own in the batch


# Request bodies are read strictly: JSON types as declared (no "5" for 5, no false for 0.0), and no
# infinity (JSON numbers such as 1e309 parse as one): what the OpenAPI document says is what is accepted.
STRICT = ConfigDict(strict=True, allow_inf_nan=False)


def _whole_number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


WHOLE = BeforeValidator(_whole_number)  # as JSON Schema has it, 2.0 is the integer 2
Integer = Annotated[int, WHOLE]
# An optional integer's bounds go inside its Annotated, before WHOLE, or the OpenAPI document loses them.


class ServerLimit(enum.Enum):
    """A bound the server's settings set rather than the protocol. A field marked with one is held to it
    (app/limits.py) and the served OpenAPI document states the configured value."""

    PROMPT_CHARS = "LYRICIST_MAX_PROMPT_CHARS"  # characters of a text the model reads; past it, 413
    NEW_TOKENS = "LYRICIST_MAX_NEW_TOKENS"  # tokens asked for; past it, 400; a left-out count is capped to it


PromptText = Annotated[Text, ServerLimit.PROMPT_CHARS]


class Request(BaseModel):
    """A request body. A field the endpoint does not know is refused, by name, with the nearest known field: a
    misspelt constraint (`syllable`) silently ignored would give an answer to another question."""
    model_config = ConfigDict(extra="forbid", **STRICT)
    model: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = sorted(cls.model_fields)
            for name in data:
                if name not in cls.model_fields:
                    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.7)
                    raise PydanticCustomError(
                        "unknown_field", "{field}: unknown field{hint}; the fields of this endpoint are {known}",
                        {"field": str(name), "hint": f" (did you mean {close[0]}?)" if close else "",
                         "known": ", ".join(known)})
        return data


class SamplingFields(BaseModel):
    model_config = STRICT
    temperature: float = Field(1.0, ge=0, le=MAX_TEMPERATURE)
    top_k: Integer = Field(0, ge=0, le=MAX_TOP_K)
    top_p: float = Field(1.0, gt=0, le=1)
    min_p: float = Field(0.0, ge=0, lt=1)
    repetition_penalty: float = Field(1.0, gt=0)
    noise: float = Field(0.0, ge=0)
    seed: Annotated[int, Field(ge=0, le=MAX_SEED), WHOLE] | None = None


# -- /v1/predict -------------------------------------------------------------------

# -- songwriting fields (shared by /v1/predict, /v1/lines and /v1/verse) -------------------

MAX_WORD_CHARS = 64  # rhymes_with: longer than any dictionary word (the longest has 34 letters)
MAX_WORD_SYLLABLES = 12  # /v1/predict's syllables
MAX_LINE_SYLLABLES = 24  # a line's, /v1/lines and /v1/verse
MAX_LINES = 8  # n of /v1/lines
MAX_SCHEME = 16  # lines of a verse


def explained(message: str) -> WrapValidator:
    """Report any failure of the annotated value as one error with `message` (a union's per-branch
    errors read badly): the message says the rule, the error handler adds the field and the value."""

    def wrap(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("invalid_value", message) from None

    return WrapValidator(wrap)


def _one_word(value: str) -> str:
    word = value.strip(" ")
    if not all(is_word_char(c) for c in word) or not any(c.isalnum() and not c.isdecimal() for c in word):
        raise PydanticCustomError("invalid_value", f"must be one word: letters, digits and apostrophes, at least "
                                                   f"one letter, at most {MAX_WORD_CHARS} characters")
    return word


# A word to rhyme with: surrounding spaces are dropped; empty, digits only, two words, punctuation or control
# characters are refused (400). The check is `_one_word`; the schema states the same rule as a pattern (Python's
# reading of it: `[^\W_]` is a letter or digit, `[^\W\d_]` one that is no decimal digit) for clients and fuzzers.
WORD_PATTERN = r"^ *(?:[^\W_]|['\u2019])*[^\W\d_](?:[^\W_]|['\u2019])* *$"
RhymeWord = Annotated[Text, Field(min_length=1, max_length=MAX_WORD_CHARS, json_schema_extra={"pattern": WORD_PATTERN}),
                      AfterValidator(_one_word)]
RhymeKind = Literal["perfect", "near"]


def _ordered(value: list[int]) -> list[int]:
    if value[0] > value[1]:
        raise ValueError("min > max")
    return value


LineCount = Annotated[int, Field(ge=1, le=MAX_LINE_SYLLABLES), WHOLE]
LineRange = Annotated[list[LineCount], Field(min_length=2, max_length=2), AfterValidator(_ordered)]
LINE_SYLLABLES_RULE = (f"must be an integer from 1 to {MAX_LINE_SYLLABLES}, or [min, max] with "
                       f"1 <= min <= max <= {MAX_LINE_SYLLABLES}")
LineSyllables = Annotated[LineCount | LineRange, explained(LINE_SYLLABLES_RULE)]
VerseSyllables = Annotated[
    LineCount | Annotated[list[LineCount | LineRange], Field(min_length=1, max_length=MAX_SCHEME)],
    explained(f"must be an integer from 1 to {MAX_LINE_SYLLABLES}, or a list with one entry per line of the "
              f"scheme, each an integer from 1 to {MAX_LINE_SYLLABLES} or [min, max]")]
Scheme = Annotated[str, Field(min_length=1, max_length=MAX_SCHEME, pattern=r"^[A-Z]+$"),
                   explained(f"must be 1 to {MAX_SCHEME} capital letters A-Z, one a line "
                             f"(X: a line that need not rhyme)")]


class PredictRequest(Request):
    prompt: PromptText
    top_k: Integer = Field(10, ge=1, le=MAX_PREDICT_TOP_K)
    unit: Literal["word", "token"] = "word"
    temperature: float = Field(1.0, ge=0, le=MAX_TEMPERATURE)
    rhymes_with: RhymeWord | None = None
    rhyme: RhymeKind = "perfect"
    syllables: Annotated[int, Field(ge=1, le=MAX_WORD_SYLLABLES), WHOLE] | None = None

    @property
    def constrained(self) -> bool:
        return self.rhymes_with is not None or self.syllables is not None


class Candidate(BaseModel):
    text: str
    prob: float
    logprob: float


class PredictResponse(BaseModel):
    model: str
    unit: str
    prompt_tokens: int
    distribution: list[Candidate]
    coverage: float
    entropy: float
    exact: bool  # False when the word search hit its budget before its tolerance
    # Only with songwriting constraints (the route leaves out what is None):
    constraint_mass: float | None = None  # P(the next word qualifies), before renormalising
    rhymes_with_known: bool | None = None  # False: rhymes_with is not in the dictionary, its sound was estimated


# -- /v1/generate ------------------------------------------------------------------

class GenerateRequest(Request, SamplingFields):
    prompt: PromptText = ""
    max_new_tokens: Annotated[Integer, ServerLimit.NEW_TOKENS] = Field(64, ge=1)
    temperature: float = Field(0.8, ge=0, le=MAX_TEMPERATURE)
    stop: list[StopText] = Field(default_factory=list, max_length=MAX_STOP_STRINGS)
    logprobs: Integer = Field(0, ge=0, le=MAX_LOGPROBS)
    stream: bool = False


class Alternative(BaseModel):
    text: str
    bytes: list[int]
    logprob: float


class GeneratedToken(BaseModel):
    id: int
    text: str
    bytes: list[int]
    logprob: float | None = None
    top: list[Alternative] | None = None


class GenerateUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class GenerateResponse(BaseModel):
    id: str
    model: str
    text: str
    seed: int
    finish_reason: Literal["length", "stop", "eos"]
    usage: GenerateUsage
    tokens: list[GeneratedToken] | None = None


# -- /v1/score ---------------------------------------------------------------------

class ScoreRequest(Request):
    text: PromptText
    adapt: bool = False  # dynamic evaluation: the model learns from the text as it scores it (docs/api.md)


class TokenLogprob(BaseModel):
    text: str
    bytes: list[int]
    logprob: float


class ScoreResponse(BaseModel):
    model: str
    tokens: int
    chars: int
    nll: float
    nats_per_char: float | None
    perplexity: float | None
    token_logprobs: list[TokenLogprob]
    evaluation: Literal["static", "dynamic"] = "static"  # "dynamic" with adapt: not comparable with static figures


# -- songwriting: /v1/analyze, /v1/lines, /v1/verse ------------------------------------------

class AnalyzeRequest(Request):
    text: PromptText


class AnalyzedLine(BaseModel):
    text: str
    syllables: int
    stress: str
    end_word: str | None
    rhyme_part: str | None
    rhyme: str  # its letter in the stanza's scheme; "-" rhymes with no other line
    unknown_words: list[str]
    nats_per_char: float | None  # None for a line with no characters


class Meter(BaseModel):
    name: str  # "iambic tetrameter"
    fit: float  # the share of the stanza's syllables that agree with it (docs/api.md, "Meter")


class Stanza(BaseModel):
    scheme: str
    meter: Meter | None  # the common meter that fits the stanza best, or null for none
    lines: list[AnalyzedLine]


class AnalyzeResponse(BaseModel):
    model: str
    stanzas: list[Stanza]


# A line's meter (docs/api.md, "Meter"): a digit a syllable, 1 stressed, 0 unstressed.
STRESS_RULE = f"must be 1 to {MAX_LINE_SYLLABLES} digits 0 or 1, one a syllable (1 stressed, 0 unstressed)"
LineStress = Annotated[str, Field(min_length=1, max_length=MAX_LINE_SYLLABLES, pattern="^[01]+$")]
Stress = Annotated[LineStress, explained(STRESS_RULE)]
VerseStress = Annotated[LineStress | Annotated[list[LineStress], Field(min_length=1, max_length=MAX_SCHEME)],
                        explained(f"{STRESS_RULE}, or a list of such patterns with one per line of the scheme")]


class LinesRequest(Request, SamplingFields):
    prompt: PromptText
    n: Integer = Field(3, ge=1, le=MAX_LINES)
    syllables: LineSyllables | None = None
    stress: Stress | None = None
    rhymes_with: RhymeWord | None = None
    rhyme: RhymeKind = "perfect"
    temperature: float = Field(0.8, ge=0, le=MAX_TEMPERATURE)


class VerseRequest(Request, SamplingFields):
    prompt: PromptText
    scheme: Scheme
    syllables: VerseSyllables | None = None
    stress: VerseStress | None = None
    rhyme: RhymeKind = "perfect"
    temperature: float = Field(0.8, ge=0, le=MAX_TEMPERATURE)


class SongLine(BaseModel):
    text: str
    syllables: int
    end_word: str
    rhymes: bool
    logprob: float
    nats_per_char: float


class VerseLine(SongLine):
    rhyme: str


class EndWord(BaseModel):
    word: str
    prob: float
    line: str


class LinesResponse(BaseModel):
    model: str
    seed: int
    lines: list[SongLine]
    end_words: list[EndWord]
    usage: GenerateUsage
    rhymes_with_known: bool | None = None  # only with rhymes_with (the route leaves out what is None)


class VerseResponse(BaseModel):
    model: str
    seed: int
    text: str
    lines: list[VerseLine]
    usage: GenerateUsage


# -- /v1/alternatives -------------------------------------------------------------------

MAX_ALTERNATIVES = 32
MAX_REPLACEMENT_WORDS = 4


class AlternativesRequest(Request):
    text: PromptText
    start: Integer = Field(ge=0)  # offsets of the part to replace, in characters; the part may be empty
    end: Integer = Field(ge=0)
    n: Integer = Field(10, ge=1, le=MAX_ALTERNATIVES)
    syllables: Annotated[int, Field(ge=1, le=MAX_LINE_SYLLABLES), WHOLE] | None = None
    stress: Stress | None = None
    rhymes_with: RhymeWord | None = None
    rhyme: RhymeKind = "perfect"
    max_words: Annotated[int, Field(ge=1, le=MAX_REPLACEMENT_WORDS), WHOLE] | None = None  # default: the part's


class Replacement(BaseModel):
    text: str
    prob: float  # its share among the candidates returned and the original, given both sides
    syllables: int | None  # None for an original with a word the dictionary lacks
    stress: str | None
    logprob: float  # of the text from its start to the end of the part's stanza, with this in place
    rhymes_with: str | None  # at a line's end: the end of another line of the stanza it rhymes with


class OriginalPart(Replacement):
    rank: int  # its place among every candidate ranked and itself, from 1


class AlternativesResponse(BaseModel):
    model: str
    original: OriginalPart
    alternatives: list[Replacement]
    usage: GenerateUsage


# -- /v1/embeddings (OpenAI) and /v1/neighbours ----------------------------------------

MAX_EMBEDDING_INPUTS = 64
MAX_NEIGHBOURS = 100


class EmbeddingsRequest(Request):
    input: Annotated[Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)],
                     ServerLimit.PROMPT_CHARS,
                     explained(f"must be a string or a list of 1 to {MAX_EMBEDDING_INPUTS} strings")]
    encoding_format: Literal["float", "base64"] = "float"  # base64: the float32 values, little-endian
    dimensions: Annotated[int, Field(ge=1), WHOLE] | None = None  # OpenAI's; only the model's own size is served
    user: str | None = None  # OpenAI's; accepted and not used

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


class NeighboursRequest(Request):
    word: RhymeWord
    n: Integer = Field(10, ge=1, le=MAX_NEIGHBOURS)


class Neighbour(BaseModel):
    word: str
    similarity: float


class NeighboursResponse(BaseModel):
    model: str
    word: str
    neighbours: list[Neighbour]


# -- /v1/completions (OpenAI) --------------------------------------------------------

class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False


class CompletionRequest(Request, SamplingFields):
    prompt: Annotated[Text | list[Text], ServerLimit.PROMPT_CHARS] = ""
    max_tokens: Annotated[Annotated[int, Field(ge=0), WHOLE] | None, ServerLimit.NEW_TOKENS] = 16
    n: Integer = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_STRINGS)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=MAX_COMPLETION_LOGPROBS), WHOLE] | None = None
    echo: bool = False
    # OpenAI's range is accepted by the parser, but only 0 is served (the handler says why): the schema says 0.
    presence_penalty: float = Field(0.0, ge=-2, le=2, json_schema_extra={"minimum": 0, "maximum": 0})
    frequency_penalty: float = Field(0.0, ge=-2, le=2, json_schema_extra={"minimum": 0, "maximum": 0})
    # OpenAI's own fields that Lyricist accepts and does not use: a client written for OpenAI may send them.
    user: str | None = None
    best_of: Integer | None = None
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_bytes: list[list[int]] = Field(default_factory=list)  # each token's own UTF-8 bytes
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None


# -- models, health, errors --------------------------------------------------------

class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lyricist"
    cell: str
    layers: int
    hidden_size: int
    embedding_size: int
    vocab_size: int
    parameters: int
    default: bool
    trained_on: str | None = None
    val_nats_per_char: float | None = None
    start: str | None = None  # the context every text is read after (docs/api.md, "The start of a text")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    models: list[str]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# -- the wire ------------------------------------------------------------------------

SSE_DONE = "data: [DONE]\n\n"


def sse_event(data: Any) -> str:
    """One server-sent event whose data is `data` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def json_logprob(x: float) -> float:
    return x if math.isfinite(x) else -1e30  # JSON has no -inf
