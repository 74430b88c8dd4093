"""The access log of the real server: one JSON line per request, its id echoed in X-Request-ID, and no
prompt text unless LYRICIST_LOG_PROMPTS says so."""

import json
import re
import time

import httpx
import pytest

from .helpers import start_server

PROMPT = "a very particular prompt"


@pytest.fixture(scope="module")
def server(served_checkpoint):
    process, base = start_server("--model", str(served_checkpoint))
    yield base, process
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def prompt_logging_server(served_checkpoint):
    process, base = start_server("--model", str(served_checkpoint), env={"LYRICIST_LOG_PROMPTS": "true"})
    yield base, process
    process.kill()
    process.wait()


def access_lines(process, request_id: str, seconds: float = 5.0) -> list[dict]:
    """The access-log lines of one request, once there is one (it is written as the response ends)."""
    deadline = time.monotonic() + seconds
    while True:
        lines = [json.loads(line) for line in process.log.read_text().splitlines()
                 if line.startswith("{") and request_id in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_a_request_gets_one_json_line_with_its_facts(server):
    base, process = server
    response = httpx.post(f"{base}/v1/generate", json={"prompt": PROMPT, "max_new_tokens": 5},
                          headers={"X-Request-ID": "client-chosen.id:42"})
    assert response.headers["x-request-id"] == "client-chosen.id:42"
    (line,) = access_lines(process, "client-chosen.id:42")
    assert line["method"] == "POST" and line["path"] == "/v1/generate" and line["status"] == 200
    assert line["model"] == "tiny-lstm" and line["completion_tokens"] == 5
    assert line["prompt_tokens"] == response.json()["usage"]["prompt_tokens"]
    assert 0 < line["duration_ms"] < 10_000 and "incomplete" not in line
    log = process.log.read_text()
    assert PROMPT not in log  # prompts are not logged by default
    assert "HTTP/1.1\" 200" not in log  # uvicorn's own access line is off: one line per request, ours


def test_ids_are_unique_and_only_safe_client_ids_are_kept(server):
    base, _ = server
    generated = {httpx.get(f"{base}/healthz").headers["x-request-id"] for _ in range(20)}
    assert len(generated) == 20 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in generated)
    for unsafe in ("x" * 129, "has space", "quote\"d", "semi;colon", "caf\u00e9"):
        echoed = httpx.get(f"{base}/healthz", headers={"X-Request-ID": unsafe.encode()}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), unsafe


def test_errors_and_streams_are_logged_when_they_end(server):
    base, process = server
    response = httpx.post(f"{base}/v1/generate", json={"prompt": "x", "top_k": -1}, headers={"X-Request-ID": "bad-1"})
    assert response.status_code == 400
    (line,) = access_lines(process, "bad-1")
    assert line["status"] == 400 and "completion_tokens" not in line
    request = {"prompt": "x", "max_new_tokens": 7, "stream": True}
    with httpx.stream("POST", f"{base}/v1/generate", json=request, headers={"X-Request-ID": "stream-1"}) as r:
        assert r.headers["x-request-id"] == "stream-1"
        assert [line for line in r.iter_lines() if line][-1] == "data: [DONE]"
    (line,) = access_lines(process, "stream-1")
    assert line["status"] == 200 and line["completion_tokens"] == 7
    # A client that leaves halfway: the line still comes, marked incomplete.
    with httpx.stream("POST", f"{base}/v1/generate", json={**request, "max_new_tokens": 1000},
                      headers={"X-Request-ID": "stream-left"}) as r:
        next(r.iter_lines())
    (line,) = access_lines(process, "stream-left")
    assert line["incomplete"] is True and line["status"] == 200


def test_prompts_are_logged_only_when_enabled(prompt_logging_server):
    base, process = prompt_logging_server
    httpx.post(f"{base}/v1/completions", json={"prompt": [PROMPT, "second"], "max_tokens": 2},
               headers={"X-Request-ID": "with-prompt"})
    (line,) = access_lines(process, "with-prompt")
    assert line["prompt"] == [PROMPT, "second"] and line["completion_tokens"] == 4
