"""The one settings object: API.md's configuration variables, overridden by `lyricist serve` flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "shakespeare-lstm"
BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = field(default=(str(DEFAULT_MODEL),), metadata={"env": "LYRICIST_MODELS"})
    host: str = field(default="127.0.0.1", metadata={"env": "LYRICIST_HOST"})
    port: int = field(default=8000, metadata={"env": "LYRICIST_PORT"})
    api_keys: tuple[str, ...] = field(default=(), metadata={"env": "LYRICIST_API_KEYS"})
    max_batch_size: int = field(default=64, metadata={"env": "LYRICIST_MAX_BATCH_SIZE"})
    max_queue: int = field(default=256, metadata={"env": "LYRICIST_MAX_QUEUE"})
    max_new_tokens: int = field(default=1024, metadata={"env": "LYRICIST_MAX_NEW_TOKENS"})
    max_prompt_chars: int = field(default=20000, metadata={"env": "LYRICIST_MAX_PROMPT_CHARS"})
    request_timeout_s: float = field(default=60.0, metadata={"env": "LYRICIST_REQUEST_TIMEOUT_S"})
    cors_origins: tuple[str, ...] = field(default=(), metadata={"env": "LYRICIST_CORS_ORIGINS"})
    # One core is left to the event loop (HTTP, JSON, the search's bookkeeping): on 2 cores, two torch threads
    # fighting it for a core gave 32 clients 7.8x one client's rate, one thread 13.6x (docs/serving.md).
    threads: int = field(default_factory=lambda: max(1, (os.cpu_count() or 1) - 1),
                         metadata={"env": "LYRICIST_THREADS"})
    log_prompts: bool = field(default=False, metadata={"env": "LYRICIST_LOG_PROMPTS"})

    def __post_init__(self):
        problems = [f"{f.metadata['env']} must be at least 1, got {getattr(self, f.name)}"
                    for f in fields(self) if f.type in ("int", "float") and f.name != "port" and getattr(self, f.name) <= 0]
        if not self.models:
            problems.append("LYRICIST_MODELS must name at least one checkpoint directory")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def max_body_bytes(self) -> int:
        """A JSON body is the prompt (4 bytes a character at most, escaped up to 6) and a few fields."""
        return 6 * self.max_prompt_chars + 64 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `environ` (default os.environ); `overrides` (not None) win, as flags do."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw.strip() == "" and f.type != "tuple[str, ...]":
                continue
            values[f.name] = _parse(f.metadata["env"], f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _parse(name: str, kind: str, raw: str) -> Any:
    if kind == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind == "bool":
        if raw.strip().lower() not in BOOLEANS:
            raise ValueError(f"{name} must be true or false, got {raw!r}")
        return BOOLEANS[raw.strip().lower()]
    try:
        return int(raw) if kind == "int" else float(raw) if kind == "float" else raw.strip()
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
