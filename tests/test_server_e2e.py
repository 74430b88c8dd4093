"""The real server: `lyricist serve` in a subprocess, over HTTP, with the official openai client."""

import json
import math
import re
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from .helpers import free_port, start_server, wait_for


@pytest.fixture(scope="module")
def server(served_checkpoint):
    process, base = start_server("--model", str(served_checkpoint), env={"LYRICIST_MAX_NEW_TOKENS": "1000000"})
    yield base, process
    if process.poll() is None:
        process.kill()
        process.wait()


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)


def test_openai_client_completion(client):
    result = client.completions.create(model="tiny-lstm", prompt="ROMEO:", max_tokens=10, seed=3, logprobs=2)
    (choice,) = result.choices
    assert result.object == "text_completion" and choice.finish_reason in ("length", "stop")
    assert result.usage.completion_tokens == len(choice.logprobs.tokens) and choice.text
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
    again = client.completions.create(model="tiny-lstm", prompt="ROMEO:", max_tokens=10, seed=3)
    assert again.choices[0].text == choice.text


def test_openai_client_stream_equals_the_plain_completion(client):
    kwargs = {"model": "tiny-lstm", "prompt": ["KING:", "QUEEN:"], "max_tokens": 8, "seed": 11, "n": 2}
    plain = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    texts = {}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert [texts[c.index] for c in plain.choices] == [c.text for c in plain.choices]
    assert len(plain.choices) == 4 and chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_openai_client_echo_scoring(client):
    result = client.completions.create(model="tiny-lstm", prompt="To be, or not to be", max_tokens=0, echo=True,
                                       logprobs=0)
    logprobs = result.choices[0].logprobs
    assert result.choices[0].text == "To be, or not to be" and "".join(logprobs.tokens) == "To be, or not to be"
    assert all(lp < 0 for lp in logprobs.token_logprobs)


def test_openai_client_raises_its_usual_errors(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="tiny-lstm", prompt="x", max_tokens=5, logprobs=6)
    assert "logprobs" in str(error.value)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=5)


def test_generate_stream_over_http(server):
    base, _ = server
    with httpx.stream("POST", f"{base}/v1/generate", json={"prompt": "A", "max_new_tokens": 5, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["usage"]["completion_tokens"] == 5


def test_a_streaming_client_that_leaves_frees_its_slot(server):
    base, _ = server
    before = metric(base, 'lyricist_cancelled_requests_total{model="tiny-lstm"}')
    with httpx.stream("POST", f"{base}/v1/generate", json={"prompt": "", "max_new_tokens": 900000,
                                                            "stream": True}) as response:
        events = (line for line in response.iter_lines() if line)
        assert all("finish_reason" not in next(events) for _ in range(3))
        assert metric(base, 'lyricist_running_sequences{model="tiny-lstm"}') == 1
    assert wait_for(lambda: metric(base, 'lyricist_running_sequences{model="tiny-lstm"}') == 0)
    assert metric(base, 'lyricist_cancelled_requests_total{model="tiny-lstm"}') == before + 1


def test_a_waiting_client_that_leaves_frees_its_slot(server):
    base, _ = server
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base}/v1/generate", json={"prompt": "", "max_new_tokens": 900000}, timeout=0.5)
    assert wait_for(lambda: metric(base, 'lyricist_running_sequences{model="tiny-lstm"}') == 0)


def test_many_concurrent_clients_each_get_their_own_answer(server):
    base, _ = server
    import concurrent.futures

    def ask(seed):
        return httpx.post(f"{base}/v1/generate", json={"prompt": "KING:", "max_new_tokens": 20, "seed": seed},
                          timeout=60).json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, [1, 2, 3, 4] * 6))
    for seed, result in zip([1, 2, 3, 4] * 6, results):
        assert result["seed"] == seed and result["text"] == results[seed - 1]["text"]
    assert len({r["text"] for r in results[:4]}) > 1


def test_sigterm_lets_running_requests_finish_then_exits(served_checkpoint):
    import concurrent.futures

    process, base = start_server("--model", str(served_checkpoint))
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(httpx.post, f"{base}/v1/generate",
                                  json={"prompt": "", "max_new_tokens": 1000, "temperature": 0}, timeout=60)
            time.sleep(0.3)  # it is under way
            process.send_signal(signal.SIGTERM)
            response = running.result()
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 1000
        process.wait(timeout=20)  # uvicorn re-raises the signal once it has shut down
        assert "Application shutdown complete" in process.log.read_text()
    finally:
        if process.poll() is None:
            process.kill()


def test_a_broken_checkpoint_fails_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lyricist.model.cli", "serve", "--port", str(free_port()), "--model",
                             str(tmp_path / "missing")], check=False, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "missing" in result.stderr



def test_openai_client_embeddings(client):
    """The client asks for base64 by default and decodes it; with either, the vectors are the model's own."""
    texts = ["ROMEO: I love thee", "ROMEO: I adore thee", "KING: Bring me my horse"]
    packed = client.embeddings.create(model="tiny-lstm", input=texts)
    plain = client.embeddings.create(model="tiny-lstm", input=texts, encoding_format="float")
    assert [d.index for d in packed.data] == [0, 1, 2] and packed.model == "tiny-lstm"
    for a, b in zip(packed.data, plain.data):
        assert len(a.embedding) == 48 and a.embedding == pytest.approx(b.embedding, abs=1e-7)
        assert math.fsum(x * x for x in a.embedding) == pytest.approx(1.0, abs=1e-5)
    assert packed.usage.prompt_tokens > 0
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="tiny-lstm", input=texts, dimensions=7)
