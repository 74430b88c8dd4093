"""The README's example outputs are what the shipped models answer to its commands (bench/readme_examples.py
makes them; run it with --write after a model changes)."""

import importlib.util
import re

from .helpers import ROOT


def load_examples():
    spec = importlib.util.spec_from_file_location("readme_examples", ROOT / "bench" / "readme_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_shows_what_the_shipped_models_answer():
    examples = load_examples()
    readme = examples.README.read_text(encoding="utf-8")
    found = examples.answers(readme)
    assert {examples.request_of(m["command"])[0] for m, _ in found} >= {"/v1/analyze", "/v1/predict", "/v1/lines",
                                                                         "/v1/verse"}
    for match, served in found:
        assert match["output"] == served, f"README.md is stale after {match['command']}: run bench/readme_examples.py"


def test_lines_come_most_fluent_first_as_the_readme_says():
    examples = load_examples()
    readme = examples.README.read_text(encoding="utf-8")
    assert "fewest nats per character first" in readme
    (match,) = [m for m in examples.examples(readme) if examples.request_of(m["command"])[0] == "/v1/lines"]
    figures = [float(x) for x in re.findall(r'"nats_per_char": ([0-9.]+)', match["output"])]
    assert len(figures) >= 2 and figures == sorted(figures)
