"""Load past capacity and a short soak, against the real server."""

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .helpers import ROOT, start_server, wait_for

BATCH, QUEUE, CLIENTS = 2, 4, 60


def rss_kb(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))


def metric(base: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", httpx.get(f"{base}/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def server(served_checkpoint):
    process, base = start_server("--model", str(served_checkpoint), env={
        "LYRICIST_MAX_BATCH_SIZE": str(BATCH), "LYRICIST_MAX_QUEUE": str(QUEUE)})
    yield base, process
    process.kill()
    process.wait()


def request(seed: int) -> dict:
    return {"prompt": "KING:", "max_new_tokens": 600, "seed": seed, "temperature": 0.9}


async def storm(base: str) -> list[tuple[int, httpx.Response | Exception, float]]:
    """CLIENTS different seeded requests at once, each on its own connection."""
    async def one(client: httpx.AsyncClient, seed: int):
        started = time.perf_counter()
        try:
            response = await client.post("/v1/generate", json=request(seed))
        except httpx.HTTPError as error:
            return seed, error, time.perf_counter() - started
        return seed, response, time.perf_counter() - started

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(one(client, seed) for seed in range(CLIENTS)))


def test_past_capacity_the_excess_is_refused_at_once_and_the_rest_served_exactly(server):
    base, process = server
    for seed in range(3):  # warm-up: the first requests allocate what every later one reuses
        httpx.post(f"{base}/v1/generate", json=request(seed), timeout=60).raise_for_status()
    rss_before = rss_kb(process.pid)
    refused_before = metric(base, 'lyricist_rejected_requests_total{reason="queue_full"}')

    results = asyncio.run(storm(base))

    dropped = [(seed, answer) for seed, answer, _ in results if isinstance(answer, Exception)]
    assert not dropped, dropped
    statuses = {seed: answer.status_code for seed, answer, _ in results}
    assert set(statuses.values()) <= {200, 429}, statuses
    served = [(seed, answer) for seed, answer, _ in results if answer.status_code == 200]
    refused = [(answer, took) for _, answer, took in results if answer.status_code == 429]
    # At least a batch and a queue's worth got in; most of the 60 arrived while those were full.
    assert len(served) >= BATCH + QUEUE and len(refused) >= CLIENTS // 2, statuses
    for answer, took in refused:
        assert answer.headers["retry-after"] == "1" and answer.json()["error"]["code"] == "queue_full"
        assert took < 1.0  # refused at once, not after waiting for a slot
    assert metric(base, 'lyricist_rejected_requests_total{reason="queue_full"}') - refused_before == len(refused)

    # Everything admitted finished, with the text the same request gets when it is alone.
    for seed, answer in served:
        body = answer.json()
        assert body["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 600
        alone = httpx.post(f"{base}/v1/generate", json=request(seed), timeout=60).json()
        assert alone["text"] == body["text"], seed

    assert wait_for(lambda: metric(base, 'lyricist_running_sequences{model="tiny-lstm"}') == 0
                    and metric(base, 'lyricist_queue_depth{model="tiny-lstm"}') == 0)
    assert rss_kb(process.pid) - rss_before < 20_000  # KB: the storm left nothing behind
    # And it serves as usual straight away.
    assert httpx.post(f"{base}/v1/predict", json={"prompt": "KING:"}).status_code == 200
    assert httpx.get(f"{base}/readyz").status_code == 200


def test_a_short_soak_leaves_memory_descriptors_and_threads_as_they_were(served_checkpoint):
    """bench/soak.py for 15 s on the tiny model: mixed traffic, no error, nothing left behind."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--model", str(served_checkpoint),
                             "--minutes", "0.25", "--warmup-seconds", "4", "--json"],
                            capture_output=True, text=True, timeout=180, check=True)
    soak = json.loads(result.stdout)
    assert soak["errors"] == 0, soak["error_samples"]
    assert soak["requests"] > 200 and {"predict", "generate", "stream", "stream_dropped", "score", "completion",
                                       "bad"} <= set(soak["by_kind"])
    before, after = soak["before"], soak["after"]
    assert after["rss_mb"] - before["rss_mb"] < 10, soak
    assert after["fds"] <= before["fds"] and after["threads"] <= before["threads"], soak
