"""The Prometheus metrics of docs/api.md, in a registry of their own so several apps can live in one process."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 256)
MODEL_SERIES = ("ttft", "tpot", "prompt_tokens", "generated_tokens", "batch_size", "queue_depth", "running",
                "cancelled")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("lyricist_requests_total", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.request_duration = Histogram("lyricist_request_duration_seconds", "Time to answer a request",
                                          ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("lyricist_time_to_first_token_seconds", "From submission to the first token",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("lyricist_time_per_output_token_seconds", "One batched model step",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("lyricist_prompt_tokens", "Prompt pieces read", ["model"], registry=r)
        self.generated_tokens = Counter("lyricist_generated_tokens", "Pieces generated", ["model"], registry=r)
        self.batch_size = Histogram("lyricist_batch_size", "Sequences per model step", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("lyricist_queue_depth", "Requests waiting", ["model"], registry=r)
        self.running = Gauge("lyricist_running_sequences", "Sequences in the batch", ["model"], registry=r)
        self.rejected = Counter("lyricist_rejected_requests", "Requests refused", ["reason"], registry=r)
        self.cancelled = Counter("lyricist_cancelled_requests", "Clients that left before the end", ["model"],
                                 registry=r)
        self.model_info = Gauge("lyricist_model_info", "A loaded model", ["model", "cell", "parameters"], registry=r)
        # What the engine's worker spends its calls on, by kind of work: "decode" (a step of the running batch),
        # "prompt" (a slice of a generation's prompt), and each kind of sliced job ("score", "songwriting", ...).
        self.engine_seconds = Counter("lyricist_engine_seconds", "Worker time spent in model calls, by work",
                                      ["model", "work"], registry=r)
        self.engine_pieces = Counter("lyricist_engine_pieces", "Pieces (or search rows) the worker's calls read, "
                                     "by work", ["model", "work"], registry=r)

    def for_model(self, model: str) -> SimpleNamespace:
        """The series labelled `model=model`, looked up once: the engine updates them at every step."""
        return SimpleNamespace(**{name: getattr(self, name).labels(model) for name in MODEL_SERIES})
