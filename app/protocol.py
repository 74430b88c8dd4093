"""Every request and response body of API.md, in one place."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from lyricist.model.sampling import MAX_SEED, MAX_TEMPERATURE
from lyricist.model.tokenizer import check_unicode

# Text the model will read. JSON can carry a lone surrogate ("\\ud800"), which is
# no character; it is refused as a bad value of its field.
Text = Annotated[str, AfterValidator(check_unicode)]

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64  # the engine looks for every stop string's every prefix after each token
StopText = Annotated[Text, Field(max_length=MAX_STOP_CHARS)]
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


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore", **STRICT)
    model: str | None = None


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

class PredictRequest(Request):
    prompt: Text
    top_k: Integer = Field(10, ge=1, le=MAX_PREDICT_TOP_K)
    unit: Literal["word", "token"] = "word"
    temperature: float = Field(1.0, ge=0, le=MAX_TEMPERATURE)


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


# -- /v1/generate ------------------------------------------------------------------

class GenerateRequest(Request, SamplingFields):
    prompt: Text = ""
    max_new_tokens: Integer = Field(64, ge=1)
    temperature: float = Field(0.8, ge=0, le=MAX_TEMPERATURE)
    stop: list[StopText] = Field(default_factory=list, max_length=MAX_STOP_STRINGS)
    logprobs: Integer = Field(0, ge=0, le=MAX_LOGPROBS)
    stream: bool = False


class Alternative(BaseModel):
    text: str
    logprob: float


class GeneratedToken(BaseModel):
    id: int
    text: str
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
    text: Text


class TokenLogprob(BaseModel):
    text: str
    logprob: float


class ScoreResponse(BaseModel):
    model: str
    tokens: int
    chars: int
    nll: float
    nats_per_char: float | None
    perplexity: float | None
    token_logprobs: list[TokenLogprob]


# -- /v1/completions (OpenAI) --------------------------------------------------------

class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False


class CompletionRequest(Request, SamplingFields):
    prompt: Text | list[Text] = ""
    max_tokens: Annotated[int, Field(ge=0), WHOLE] | None = 16
    n: Integer = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_STRINGS)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=MAX_COMPLETION_LOGPROBS), WHOLE] | None = None
    echo: bool = False
    # OpenAI's range is accepted by the parser, but only 0 is served (the handler says why): the schema says 0.
    presence_penalty: float = Field(0.0, ge=-2, le=2, json_schema_extra={"minimum": 0, "maximum": 0})
    frequency_penalty: float = Field(0.0, ge=-2, le=2, json_schema_extra={"minimum": 0, "maximum": 0})
    user: str | None = None

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
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
