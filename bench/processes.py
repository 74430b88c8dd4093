"""What the benchmark scripts share: the server they start, and what /proc says of it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]


def start_server(model: Path, threads: int | None, output: IO | int = subprocess.DEVNULL,
                 beside: tuple[Path, ...] = (), **env: str) -> tuple[subprocess.Popen, str]:
    """`lyricist serve --model MODEL` (the default model; `beside`: more loaded after it) on a free port with
    `threads` torch threads (None: the engine's own choice per step) and the LYRICIST_* `env`; returns (the
    process, its base URL) once it is ready."""
    port = free_port()
    environment = {name: value for name, value in os.environ.items() if name != "LYRICIST_THREADS"}
    if threads is not None:
        environment["LYRICIST_THREADS"] = str(threads)
    models = [argument for path in (model, *beside) for argument in ("--model", str(path))]
    server = subprocess.Popen([sys.executable, "-m", "lyricist.model.cli", "serve", "--port", str(port), *models],
                              env={**environment, **env}, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            where = f"; its output is in {output.name}" if hasattr(output, "name") else ""
            sys.exit(f"the server exited before it was ready (exit code {server.returncode}){where}")
        time.sleep(0.1)
    server.kill()
    sys.exit("the server was not ready after a minute")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_figures(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (MB), open file descriptors, threads."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task"))}
