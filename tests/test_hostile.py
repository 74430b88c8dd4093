"""Hostile input against the real server: every answer is a 4xx in the envelope (never a 500), huge
bodies are refused without being read whole, slow clients hold up no one, and with API keys set no
/v1 path answers without one."""

import asyncio
import hmac
import json
import re
import select
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from lyricist.app.auth import require_api_key
from lyricist.app.errors import APIError
from lyricist.app.server import create_app
from lyricist.app.settings import Settings
from lyricist.model.sampling import MAX_SEED

from .helpers import start_server

LIMITS = {"LYRICIST_MAX_PROMPT_CHARS": "1000", "LYRICIST_MAX_NEW_TOKENS": "16"}
BODY_LIMIT = Settings.from_env(LIMITS).max_body_bytes
KEYS = ("k1-first-key", "s3cret-second-key")
ALLOWED_ORIGIN = "http://good.example"
OTHER_ORIGIN = "http://evil.example"
# One body every POST route accepts: each reads its own fields and ignores the others.
# A valid small body for each POST path (unknown fields are refused: each gets only its own).
POST_BODIES = {"/v1/predict": {"prompt": "a"}, "/v1/generate": {"prompt": "a", "max_new_tokens": 2},
               "/v1/score": {"text": "a"}, "/v1/completions": {"prompt": "a", "max_tokens": 2},
               "/v1/analyze": {"text": "a"}, "/v1/lines": {"prompt": "a"},
               "/v1/verse": {"prompt": "a", "scheme": "X"},  # X: a line free of rhymes
               "/v1/embeddings": {"input": "a"}, "/v1/neighbours": {"word": "the"},
               "/v1/alternatives": {"text": "a day", "start": 0, "end": 1, "max_words": 1}}


@pytest.fixture(scope="module")
def server(served_checkpoint):
    process, base = start_server("--model", str(served_checkpoint), env=LIMITS)
    yield base, process
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def keyed(served_checkpoint):
    """API keys and one allowed CORS origin; prompts logged too, so the logs hold all they can."""
    process, base = start_server("--model", str(served_checkpoint), env={
        **LIMITS, "LYRICIST_API_KEYS": ",".join(KEYS), "LYRICIST_CORS_ORIGINS": ALLOWED_ORIGIN,
        "LYRICIST_LOG_PROMPTS": "true"})
    yield base, process
    process.kill()
    process.wait()


def assert_error(response, status, *words) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    for word in words:
        assert word in body["error"]["message"], body
    return body["error"]


def rss_kb(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))


def in_flight_at_most() -> int:
    """The most one connection can hold between two processes: the sender's and the receiver's socket buffers."""
    return sum(int(Path(f"/proc/sys/net/ipv4/tcp_{side}").read_text().split()[2]) for side in ("wmem", "rmem"))


def push_until_answered(base: str, head: bytes, piece: bytes, total: int) -> tuple[int, bytes, bool]:
    """Send `head`, then `piece` after `piece` (up to `total` bytes) for as long as the server reads and has
    not answered. Returns (body bytes sent when the answer began, the answer, whether the server closed)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        sent, answer, answered_at = 0, b"", None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            writable = [sock] if answered_at is None and sent < total else []
            readable, writable, _ = select.select([sock], writable, [], 5)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    return answered_at, answer, True
                if not data:
                    return answered_at, answer, True
                answered_at = sent if answered_at is None else answered_at
                answer += data
            elif writable:
                try:
                    sent += sock.send(piece)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed under us: the answer, if any, is still to be read
        return answered_at, answer, False


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


# -- bodies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_huge_body_is_refused_long_before_it_has_arrived(server, framing):
    base, process = server
    total = max(50_000_000, 4 * in_flight_at_most())
    if framing == "content-length":
        head, piece = f"Content-Length: {total}".encode(), b"x" * 65536
    else:  # no length announced: only counting the bytes as they arrive can stop it
        head, piece = b"Transfer-Encoding: chunked", b"10000\r\n" + b"x" * 65536 + b"\r\n"
    before = rss_kb(process.pid)
    sent, answer, closed = push_until_answered(
        base, b"POST /v1/generate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" + head + b"\r\n\r\n",
        piece, total)
    status, body = status_and_body(answer)
    assert status == 413 and body["error"]["code"] == "too_large" and str(BODY_LIMIT) in body["error"]["message"]
    # It answered having read no more than the limit: what the client had sent by then fits in the limit,
    # the socket buffers, and the piece being sent. Then it hung up.
    assert sent <= BODY_LIMIT + in_flight_at_most() + len(piece) and closed
    assert rss_kb(process.pid) - before < 20_000
    assert httpx.get(f"{base}/healthz").status_code == 200


@pytest.mark.parametrize("body, words", [
    (b'{"prompt": "caf\xe9 \xff"}', ["UTF-8"]),
    (b"[" * 30000 + b"]" * 30000, ["JSON", "recursion"]),
    (b'{"prompt": ' + b"[" * 500 + b"]" * 500 + b"}", ["prompt"]),
    (b'{"prompt": "a"', ["JSON"]),
    (b"", ["body"]),
    (b"null", ["body"]),
    (b'["prompt", "a"]', ["body"]),
    (b'"a"', ["body"]),
])
def test_malformed_bodies_are_400_in_the_envelope(server, body, words):
    base, _ = server
    response = httpx.post(f"{base}/v1/generate", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, *words)
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml", None])
def test_a_body_that_is_not_declared_json_is_400(server, content_type):
    base, _ = server
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{base}/v1/predict", content=b'{"prompt": "a"}', headers=headers)
    assert assert_error(response, 400, "must be JSON")["code"] == "invalid_content_type"


# -- values ---------------------------------------------------------------------------------

TEXT_FIELDS = {"/v1/predict": {"prompt"}, "/v1/generate": {"prompt", "max_new_tokens", "stop"}, "/v1/score": {"text"},
               "/v1/completions": {"prompt", "max_tokens", "stop"}}


@pytest.mark.parametrize("path", TEXT_FIELDS)
def test_nul_and_control_characters_are_just_text(server, path):
    base, _ = server
    text = "a\x00b\x01\x1b[31m\x7f\u2028z"
    body = {"prompt": text, "text": text, "max_new_tokens": 3, "max_tokens": 3, "stop": ["\x00"]}
    response = httpx.post(f"{base}{path}", json={k: v for k, v in body.items() if k in TEXT_FIELDS[path]}, timeout=30)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path, stop, words", [
    ("/v1/generate", ["a"] * 1000, ["stop", "4"]),
    ("/v1/generate", ["x" * 20_000], ["stop.0", "64"]),
    ("/v1/completions", ["a"] * 1000, ["stop", "4"]),
    ("/v1/completions", "x" * 20_000, ["stop", "64"]),
])
def test_stop_lists_and_stop_strings_are_bounded(server, path, stop, words):
    base, _ = server
    length = "max_new_tokens" if path == "/v1/generate" else "max_tokens"
    response = httpx.post(f"{base}{path}", json={"prompt": "a", "stop": stop, length: 2})
    assert assert_error(response, 400, *words)["param"].startswith("stop")


@pytest.mark.parametrize("path, field, raw", [
    ("/v1/generate", "temperature", "1e309"),
    ("/v1/generate", "temperature", "NaN"),
    ("/v1/generate", "noise", "1e309"),
    ("/v1/generate", "noise", "Infinity"),
    ("/v1/generate", "repetition_penalty", "1e309"),
    ("/v1/generate", "top_p", "-1e309"),
    ("/v1/generate", "min_p", "-0.5"),
    ("/v1/generate", "top_k", str(10**40)),
    ("/v1/generate", "top_k", "-1"),
    ("/v1/generate", "top_k", "1.5"),
    ("/v1/generate", "max_new_tokens", str(10**40)),
    ("/v1/generate", "max_new_tokens", "-5"),
    ("/v1/generate", "logprobs", str(10**40)),
    ("/v1/generate", "seed", str(2**63)),
    ("/v1/generate", "seed", str(-(10**40))),
    ("/v1/generate", "stream", "0"),
    ("/v1/completions", "n", str(10**40)),
    ("/v1/completions", "max_tokens", str(10**40)),
    ("/v1/completions", "logprobs", "-1"),
    ("/v1/completions", "seed", "1e400"),
    ("/v1/completions", "presence_penalty", "1e309"),
    ("/v1/predict", "top_k", str(10**40)),
    ("/v1/predict", "temperature", "-1e309"),
])
def test_out_of_range_numbers_are_400_naming_the_field(server, path, field, raw):
    base, _ = server
    body = f'{{"prompt": "a", "{field}": {raw}}}'.encode()
    response = httpx.post(f"{base}{path}", content=body, headers={"content-type": "application/json"})
    assert assert_error(response, 400, field)["param"] == field


def test_the_largest_seed_works_for_every_choice(server):
    base, _ = server
    request = {"prompt": "KING:", "max_tokens": 6, "n": 3, "seed": MAX_SEED}
    choices = httpx.post(f"{base}/v1/completions", json=request).json()["choices"]
    # choice i uses seed + i, past the largest seed wrapping round to 0
    alone = httpx.post(f"{base}/v1/completions", json={**request, "n": 1, "seed": 1}).json()["choices"]
    assert len(choices) == 3 and choices[2]["text"] == alone[0]["text"]


# Tiny doubles, float32's smallest denormal and normal, and just above: z / T overflows or rounds to 0.
@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1.4e-45, 1.2e-38, 1e-30])
def test_a_vanishing_temperature_is_the_greedy_limit(server, temperature):
    """Any positive temperature is valid, and as it goes to 0 every answer becomes the greedy one."""
    base, _ = server
    for prompt in ("", "KING:"):
        for unit in ("word", "token"):
            request = {"prompt": prompt, "unit": unit, "top_k": 3}
            cold = httpx.post(f"{base}/v1/predict", json={**request, "temperature": temperature}).json()
            greedy = httpx.post(f"{base}/v1/predict", json={**request, "temperature": 0}).json()
            assert cold["distribution"] == greedy["distribution"] and cold["entropy"] == greedy["entropy"] == 0, cold
        # (the random test model's greedy word may never end; its greedy piece always exists)
        assert cold["distribution"][0]["prob"] == 1.0, cold
    request = {"prompt": "KING:", "max_new_tokens": 8, "seed": 7}
    greedy = httpx.post(f"{base}/v1/generate", json={**request, "temperature": 0}).json()
    for sampling in ({}, {"top_p": 0.5}, {"min_p": 0.2}, {"top_k": 5, "noise": 1.0}):
        cold = httpx.post(f"{base}/v1/generate", json={**request, **sampling, "temperature": temperature})
        assert cold.status_code == 200 and cold.json()["text"] == greedy["text"], (sampling, cold.text)
    cold = httpx.post(f"{base}/v1/completions", json={"prompt": "KING:", "max_tokens": 8, "temperature": temperature})
    greedy = httpx.post(f"{base}/v1/completions", json={"prompt": "KING:", "max_tokens": 8, "temperature": 0})
    assert cold.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/generate", "/v1/score", "/v1/completions"])
def test_model_names_are_looked_up_never_opened(server, served_checkpoint, path):
    """A model is a name in the table of loaded ones. The absolute path of a checkpoint that loads
    fine is one of the names tried: had the server opened paths it was given, that one would work."""
    base, _ = server
    for name in (str(served_checkpoint), "../../etc/passwd", "/etc/passwd", "tiny-lstm/../tiny-lstm",
                 "./tiny-lstm", "tiny-lstm\x00", "TINY-LSTM", ""):
        response = httpx.post(f"{base}{path}", json={**POST_BODIES[path], "model": name})
        error = assert_error(response, 404)
        assert error["param"] == "model" and error["code"] == "model_not_found"
        assert "root:" not in response.text


def test_paths_do_not_climb_out_of_the_static_folder(server):
    base, _ = server
    host, port = base.removeprefix("http://").split(":")
    for target in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py",
                   "/static/../../pyproject.toml", "/../../etc/passwd"):
        with socket.create_connection((host, int(port))) as sock:  # raw: httpx would tidy the path up
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.split()[1] == b"404", (target, answer[:200])
        assert b"import" not in answer and b"root:" not in answer


# -- connections ------------------------------------------------------------------------------

def test_slow_clients_hold_up_no_one(server):
    """Slowloris: several connections trickle their headers a byte at a time; others are served meanwhile."""
    base, _ = server
    host, port = base.removeprefix("http://").split(":")
    stop = threading.Event()
    head = b"POST /v1/generate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nX-Padding: " + b"p" * 4000

    def trickle(sock: socket.socket) -> None:
        for byte in head:
            if stop.wait(0.01):
                return
            sock.send(bytes([byte]))

    sockets = [socket.create_connection((host, int(port))) for _ in range(12)]
    threads = [threading.Thread(target=trickle, args=(s,)) for s in sockets]
    for thread in threads:
        thread.start()
    try:
        latencies = []
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(20):
                started = time.perf_counter()
                assert client.post("/v1/predict", json={"prompt": "ROMEO:"}).status_code == 200
                latencies.append(time.perf_counter() - started)
        assert all(thread.is_alive() for thread in threads)  # still trickling while all that was served
        assert max(latencies) < 1.0, latencies
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in sockets:
            sock.close()


# -- keys and origins -----------------------------------------------------------------------

# Every /v1 route, as the app itself lists them (its OpenAPI paths), so that a new one is covered too.
V1_ROUTES = sorted((path, method.upper()) for path, operations in create_app(Settings(models=("unused",))).openapi()[
    "paths"].items() if path.startswith("/v1") for method in operations)


def test_the_v1_routes_are_enumerated():
    assert {path for path, _ in V1_ROUTES} >= {"/v1/models", "/v1/predict", "/v1/generate", "/v1/score",
                                                "/v1/completions"}


@pytest.mark.parametrize("path, method", V1_ROUTES)
def test_every_v1_route_wants_a_valid_key(keyed, path, method):
    base, _ = keyed
    body = POST_BODIES.get(path, {}) if method == "POST" else None
    for authorization in (None, "Bearer wrong-key-attempt", f"Basic {KEYS[0]}", f"Bearer {KEYS[0]}x",
                          f"Bearer {KEYS[0][:-1]}", f"{KEYS[1]}", "Bearer", f"Bearer {KEYS[0]},{KEYS[1]}"):
        headers = {"authorization": authorization} if authorization is not None else {}
        response = httpx.request(method, f"{base}{path}", json=body, headers=headers)
        error = assert_error(response, 401, "API key")
        assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"
    # Without a key, a body of wrong values learns nothing beyond the 401 (nor one that is not JSON at all:
    # test_the_key_is_checked_before_the_body_is_read).
    assert httpx.request(method, f"{base}{path}", json={"prompt": 3, "text": 3, "top_k": -1}).status_code == 401
    for key in KEYS:
        response = httpx.request(method, f"{base}{path}", json=body, headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text


NOT_JSON = [(b"{not json", "application/json"), (b"\xff\xfe\x00", "application/json"), (b"prompt=a", "text/plain"),
            (b'{"prompt": ' * 5000, "application/json")]


@pytest.mark.parametrize("path", [path for path, method in V1_ROUTES if method == "POST"])
def test_the_key_is_checked_before_the_body_is_read(keyed, path):
    """Without a valid key no body is read or parsed: whatever it holds, the answer is 401. With one, the
    same bodies are each the 400 that says what is wrong with it."""
    base, _ = keyed
    for content, content_type in NOT_JSON:
        for authorization in (None, "Bearer wrong-key-attempt"):
            headers = {"content-type": content_type, **({"authorization": authorization} if authorization else {})}
            response = httpx.post(f"{base}{path}", content=content, headers=headers)
            assert assert_error(response, 401, "API key")["code"] == "invalid_api_key", content[:20]
        response = httpx.post(f"{base}{path}", content=content,
                              headers={"content-type": content_type, "authorization": f"Bearer {KEYS[1]}"})
        assert_error(response, 400)


def test_keys_never_reach_the_logs_or_the_metrics(keyed):
    base, process = keyed
    for key in (*KEYS, "wrong-key-attempt"):
        httpx.post(f"{base}/v1/generate", json={"prompt": "secret prompt", "max_new_tokens": 2},
                   headers={"authorization": f"Bearer {key}"})
    metrics = httpx.get(f"{base}/metrics").text
    log = process.log.read_text()
    assert "secret prompt" in log  # this server logs prompts: the log does hold request contents
    for key in (*KEYS, "wrong-key-attempt"):
        assert key not in log and key not in metrics


def test_the_key_check_compares_against_every_key_with_compare_digest(monkeypatch):
    """What this proves: the check runs hmac.compare_digest (whose time does not depend on where two
    strings differ) against every configured key, whichever key matches and whether any does, so its
    time says nothing about which key a guess came near. It does not time the server: on a shared
    machine such a measurement could not tell nanoseconds apart."""
    keys = ("key-number-one", "key-number-two", "key-number-three")
    app = create_app(Settings(models=("unused",), api_keys=keys))
    compared, compare_digest = [], hmac.compare_digest

    def spy(given, key):
        compared.append(key)
        return compare_digest(given, key)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for given, accepted in [(keys[0], True), (keys[2], True), ("key-number-on", False), ("", False)]:
        compared.clear()
        request = Request({"type": "http", "app": app, "headers": [(b"authorization", f"Bearer {given}".encode())]})
        if accepted:
            asyncio.run(require_api_key(request, app.state.settings))
        else:
            with pytest.raises(APIError):
                asyncio.run(require_api_key(request, app.state.settings))
        assert compared == [key.encode() for key in keys], given


def preflight(base: str, origin: str) -> httpx.Response:
    return httpx.options(f"{base}/v1/generate", headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})


def test_cors_is_closed_by_default(server):
    base, _ = server
    response = preflight(base, ALLOWED_ORIGIN)
    assert "access-control-allow-origin" not in response.headers and response.status_code == 405
    response = httpx.post(f"{base}/v1/predict", json={"prompt": "a"}, headers={"origin": ALLOWED_ORIGIN})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_cors_opens_to_the_configured_origin_only(keyed):
    base, _ = keyed
    allowed = preflight(base, ALLOWED_ORIGIN)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    refused = preflight(base, OTHER_ORIGIN)
    assert "access-control-allow-origin" not in refused.headers
    assert assert_error(refused, 400, "origin")["code"] == "cors_refused"
    key = {"authorization": f"Bearer {KEYS[0]}"}
    response = httpx.post(f"{base}/v1/predict", json={"prompt": "a"}, headers={"origin": ALLOWED_ORIGIN, **key})
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
    response = httpx.post(f"{base}/v1/predict", json={"prompt": "a"}, headers={"origin": OTHER_ORIGIN, **key})
    assert "access-control-allow-origin" not in response.headers


def test_nothing_above_crashed_the_servers(server, keyed):
    """Runs last in this module: whatever came before, no request met an unexpected error."""
    for _, process in (server, keyed):
        log = process.log.read_text()
        assert "unexpected error" not in log and "Traceback" not in log, log[-3000:]
        assert '"status": 500' not in log
