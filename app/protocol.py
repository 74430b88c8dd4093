"""Every request and response body of API.md, in one place."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from model.sampling import MAX_SEED, MAX_TEMPERATURE
from model.tokenizer import check_unicode

# Text the model will read. JSON can carry a lone surrogate ("\\ud800"), which is
# no character; it is refused as a bad value of its field.
Text = Annotated[str, AfterValidator(check_unicode)]

MAX_STOP_STRINGS = 4
MAX_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5
MAX_PREDICT_TOP_K = 100
MAX_CHOICES = 16  # n of /v1/completions, each a sequence of its own in the batch


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None


class SamplingFields(BaseModel):
    temperature: float = Field(1.0, ge=0, le=MAX_TEMPERATURE)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    min_p: float = Field(0.0, ge=0, lt=1)
    repetition_penalty: float = Field(1.0, gt=0)
    noise: float = Field(0.0, ge=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


# -- /v1/predict -------------------------------------------------------------------

class PredictRequest(Request):
    prompt: Text
    top_k: int = Field(10, ge=1, le=MAX_PREDICT_TOP_K)
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
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.8, ge=0, le=MAX_TEMPERATURE)
    stop: list[Text] = Field(default_factory=list, max_length=MAX_STOP_STRINGS)
    logprobs: int = Field(0, ge=0, le=MAX_LOGPROBS)
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
    include_usage: bool = False


class CompletionRequest(Request, SamplingFields):
    prompt: Text | list[Text] = ""
    max_tokens: int | None = Field(16, ge=0)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    echo: bool = False
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
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


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
