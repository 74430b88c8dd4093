"""Small builders the tests share."""

from contextlib import contextmanager
from pathlib import Path

import torch

from lyricist.model import DropoutConfig, LanguageModel, ModelConfig

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare" / "input.txt"

def tiny_model(vocab_size: int = 50, cell: str = "lstm", seed: int = 0, **overrides) -> LanguageModel:
    torch.manual_seed(seed)
    fields = dict(vocab_size=vocab_size, cell=cell, layers=2, embedding_size=12, hidden_size=16)
    fields.update(overrides)
    if isinstance(fields.get("dropout"), dict):
        fields["dropout"] = DropoutConfig(**fields["dropout"])
    return LanguageModel(ModelConfig(**fields))


def same_state(a, b) -> bool:
    """Two model states hold the same bits (model.memory.State: every tensor of it)."""
    ta, tb = a.tensors(), b.tensors()
    return ta.keys() == tb.keys() and all(torch.equal(x, tb[name]) for name, x in ta.items())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args: str, env: dict | None = None):
    """`lyricist serve ARGS` on a free port, one torch thread; returns (process, base URL) once
    it is ready. Its output goes to a file (`process.log`), so a long run never blocks on a pipe."""
    import os
    import subprocess
    import sys
    import tempfile
    import time

    import httpx

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="lyricist-serve-", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, "-m", "lyricist.model.cli", "serve", "--port", str(port), *args],
                               env={**os.environ, "LYRICIST_THREADS": "1", **(env or {})},
                               stdout=log, stderr=subprocess.STDOUT)
    process.log = Path(log.name)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the server did not become ready:\n{process.log.read_text()}")


def wait_for(predicate, seconds: float = 10.0) -> bool:
    """Whether `predicate()` becomes true within `seconds` (checked every 20 ms)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
