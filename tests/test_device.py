"""LYRICIST_DEVICE: the engine, its sampler, the prompt cache and scoring follow the model's device."""

import asyncio
import os
import subprocess
import sys

import pytest
import torch

from lyricist.app.engine import GenerationRequest, ModelEngine
from lyricist.app.metrics import Metrics
from lyricist.app.registry import ModelRegistry
from lyricist.app.settings import Settings
from lyricist.model import SamplingParams, load_checkpoint
from lyricist.model.scoring import score_text


async def serve_once(engine, prompt, text):
    tokens, finished = await engine.submit(
        GenerationRequest(prompt, 12, SamplingParams(temperature=0.9, top_k=30, repetition_penalty=1.2, seed=3),
                          logprobs=1)).result()
    scored = await engine.score(text)
    return [t.id for t in tokens], [t.logprob for t in tokens], finished, scored


def test_an_explicit_cpu_device_serves(served_checkpoint):
    settings = Settings.from_env({"LYRICIST_MODELS": str(served_checkpoint), "LYRICIST_DEVICE": "cpu"})

    async def go():
        registry = ModelRegistry()
        await registry.load(settings, Metrics())
        engine = registry.default
        try:
            return engine.device, await serve_once(engine, "ROMEO:" * 100, "KING: to be")
        finally:
            await registry.stop(5)

    device, (ids, _, finished, scored) = asyncio.run(go())
    assert device == torch.device("cpu") and finished.reason == "length" and len(ids) == 12
    assert scored.logprobs.device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_serving_on_a_missing_gpu_is_refused_at_start_in_one_line(served_checkpoint):
    result = subprocess.run([sys.executable, "-m", "lyricist.model.cli", "serve", "--model", str(served_checkpoint)],
                            env={**os.environ, "LYRICIST_DEVICE": "cuda"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == "lyricist serve: error: LYRICIST_DEVICE is 'cuda', but torch finds no CUDA devices"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_on_a_gpu_the_engine_runs_there_and_a_seed_reproduces_its_output(served_checkpoint, shakespeare_text):
    checkpoint = load_checkpoint(served_checkpoint)
    checkpoint.model.to("cuda")
    prompt, text = shakespeare_text[:2000], shakespeare_text[:5000]

    def once(slice_tokens):
        engine = ModelEngine(checkpoint, slice_tokens=slice_tokens)
        engine.start()
        try:
            return engine.device, asyncio.run(serve_once(engine, prompt, text))
        finally:
            engine.stop()

    device, first = once(256)
    _, again = once(256)
    assert device.type == "cuda"
    assert first[0] == again[0] and first[1] == again[1]  # the same seed, the same tokens on one device
    assert torch.equal(first[3].logprobs, again[3].logprobs)
    cpu = load_checkpoint(served_checkpoint).model.eval()
    on_cpu = score_text(cpu, checkpoint.tokenizer, text)
    torch.testing.assert_close(first[3].logprobs, on_cpu.logprobs, atol=1e-3, rtol=1e-3)  # the same model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_on_a_gpu_auto_serves_every_endpoint_there_with_the_cpus_figures(served_checkpoint):
    from fastapi.testclient import TestClient

    from lyricist.app.server import create_app

    requests = [
        ("/v1/predict", {"prompt": "ROMEO:\nI will", "top_k": 5}),
        ("/v1/predict", {"prompt": "ROMEO:\nI will", "top_k": 5, "unit": "token"}),
        ("/v1/predict", {"prompt": "ROMEO:\nI will", "top_k": 5, "rhymes_with": "day"}),
        ("/v1/predict", {"prompt": "ROMEO:\nI will", "top_k": 5, "syllables": 1}),
        ("/v1/lines", {"prompt": "ROMEO:\n", "syllables": 6, "n": 2, "seed": 1}),
        ("/v1/verse", {"prompt": "ROMEO:\n", "scheme": "AA", "syllables": 5, "seed": 1}),
        ("/v1/analyze", {"text": "I will go\nand so will you\n"}),
        ("/v1/score", {"text": "KING: to be or not", "adapt": False}),
        ("/v1/generate", {"prompt": "KING:", "max_tokens": 8, "seed": 2}),
    ]

    def answers(device):
        settings = Settings.from_env({"LYRICIST_MODELS": str(served_checkpoint), "LYRICIST_DEVICE": device})
        with TestClient(create_app(settings)) as client:
            replies = [client.post(path, json=body) for path, body in requests]
        assert [r.status_code for r in replies] == [200] * len(requests), [r.text for r in replies]
        return [r.json() for r in replies]

    on_gpu, on_cpu = answers("auto"), answers("cpu")
    for path_body, gpu, cpu in zip(requests, on_gpu, on_cpu):
        if path_body[0] == "/v1/predict":  # the exact distributions agree to float32's precision
            assert len(gpu["distribution"]) == len(cpu["distribution"])
            for a, b in zip(gpu["distribution"], cpu["distribution"]):
                assert a["text"] == b["text"] and a["prob"] == pytest.approx(b["prob"], abs=1e-4)
        if path_body[0] == "/v1/score":
            assert gpu["nll"] == pytest.approx(cpu["nll"], rel=1e-4)
