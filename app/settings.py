"""The one settings object: the LYRICIST_* variables (docs/api.md), overridden by `lyricist serve` flags."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, get_origin

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"
DEFAULT_MODELS = (str(SHIPPED / "songs-lstm"), str(SHIPPED / "shakespeare-lstm"))  # the first is the default model
PREFIX = "LYRICIST_"
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

# A comma-separated variable ("a,b"), read as is: pydantic-settings would otherwise expect JSON.
CommaList = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore")

    models: CommaList = DEFAULT_MODELS
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: CommaList = ()
    max_batch_size: int = Field(64, ge=1)
    max_queue: int = Field(256, ge=1)
    max_new_tokens: int = Field(1024, ge=1)
    max_prompt_chars: int = Field(20000, ge=1)
    request_timeout_s: float = Field(60.0, gt=0)
    cors_origins: CommaList = ()
    # None: the engine chooses per step (every core for a prompt being read or a few rows; all but one, left to
    # the event loop, for a big batch: docs/serving.md). A number forces it.
    threads: int | None = Field(None, ge=1)
    log_prompts: bool = False
    device: str = "auto"

    @field_validator("*", mode="before")
    @classmethod
    def _read_text(cls, value: Any, info: ValidationInfo) -> Any:
        """A variable's text: a list is comma-separated (empty when blank); any other blank value
        counts as not set."""
        if not isinstance(value, str):
            return value
        if get_origin(cls.model_fields[info.field_name].annotation) is tuple:
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if not value.strip():
            raise PydanticUseDefault()
        return value.strip()

    @field_validator("models")
    @classmethod
    def _some_model(cls, models: tuple[str, ...]) -> tuple[str, ...]:
        if not models:
            raise ValueError(f"{PREFIX}MODELS must name at least one checkpoint directory")
        return models

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not DEVICE.fullmatch(device):
            raise ValueError(f"{PREFIX}DEVICE must be auto, cpu, cuda or cuda:N, got {device!r}")
        return device

    @property
    def max_body_bytes(self) -> int:
        """A JSON body is the prompt (4 bytes a character at most, escaped up to 6) and a few fields."""
        return 6 * self.max_prompt_chars + 64 * 1024

    def torch_device(self):
        """The device the models run on: `auto` is the first GPU torch finds, else the CPU."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if (device.index or 0) >= count:
                raise ValueError(f"{PREFIX}DEVICE is {self.device!r}, but torch finds "
                                 f"{count or 'no'} CUDA device{'s' if count != 1 else ''}")
        return device

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Each setting's environment variable."""
        return {name: f"{PREFIX}{name.upper()}" for name in cls.model_fields}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Settings from `environ` (default os.environ); `flags` that are not None win. A bad value is a
        ValueError of one line that names the variable."""
        given = {name: value for name, value in flags.items() if value is not None}
        try:
            if environ is None:
                return cls(**given)
            variables = _Variables(cls, environ)()
            return cls.model_validate({**variables, **given})
        except ValidationError as error:
            raise ValueError("; ".join(_problem(e) for e in error.errors())) from None


class _Variables(EnvSettingsSource):
    """The variables of a given mapping instead of os.environ (a compose file's, a test's), read as
    pydantic-settings reads the environment."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:  # the hook pydantic-settings' .env source uses too
        return {name.lower(): value for name, value in self._environ.items()}


def _problem(error: Any) -> str:
    """One validation error as one clause: the variable, the rule, the value."""
    name = f"{PREFIX}{str(error['loc'][0]).upper()}" if error["loc"] else "settings"
    got = error.get("input")
    kind = error["type"]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind in ("greater_than_equal", "greater_than"):
        bound = f'{error["ctx"].get("ge", error["ctx"].get("gt")):g}'
        return f"{name} must be {'at least' if kind == 'greater_than_equal' else 'more than'} {bound}, got {got}"
    if kind.startswith(("int_", "float_")):
        return f"{name} must be a number, got {got!r}"
    if kind.startswith("bool_"):
        return f"{name} must be true or false, got {got!r}"
    return f"{name}: {error['msg']}, got {got!r}"
