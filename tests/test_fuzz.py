"""Property-based tests generated from the API's OpenAPI document (schemathesis), against the real server.

Every operation gets schema-valid and schema-invalid requests; every answer must pass schemathesis's
checks (no 5xx; status, content type, headers and body as declared; valid data accepted, invalid data
refused) and ours: an error is the one envelope, and every answer carries an X-Request-ID.
Generation stays cheap: the server caps max_new_tokens at 8 and prompts at 200 characters.

The operations are collected from `create_app(...).openapi()` with the server's settings (pytest
collects before any fixture can start a server), and the first test proves that this is exactly the
document the running server serves.
"""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from lyricist.app.server import create_app
from lyricist.app.settings import Settings

from .helpers import start_server

LIMITS = {"LYRICIST_MAX_NEW_TOKENS": "8", "LYRICIST_MAX_PROMPT_CHARS": "200"}
DOCUMENT = create_app(Settings.from_env(LIMITS, models=("tiny-lstm",))).openapi()
# Refusing a schema-violating request: 400, or 413 for a prompt past maxLength (docs/api.md); never a 5xx.
# Accepting a schema-valid one: schemathesis's default statuses, plus the songwriting 422 ("no dictionary word or
# line meets these constraints": which words rhyme is no schema's to say). Rules the document cannot state answer
# 400 to schema-valid bodies: /v1/verse's `syllables` list must have the scheme's length, a `syllables` range of
# /v1/lines and /v1/verse is [min, max] with min <= max, a `stress` pattern's length must fit `syllables`,
# /v1/predict's `rhymes_with` / `syllables` need `unit: "word"`, /v1/embeddings' `dimensions` must be the
# model's own, and /v1/alternatives' offsets must mark a part of one line within the text.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
CONFIG = schemathesis.Config.from_dict({
    "checks": {"negative_data_rejection": {"expected-statuses": [400, 413]},
               "positive_data_acceptance": {"expected-statuses": ACCEPTED}},
    "operations": [{"include-path": path,
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}}}
                   for path in ("/v1/verse", "/v1/lines", "/v1/predict", "/v1/embeddings", "/v1/alternatives")]})
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


@pytest.fixture(scope="module")
def base(served_checkpoint):
    process, base = start_server("--model", str(served_checkpoint), env=LIMITS)
    yield base
    process.kill()
    process.wait()


def errors_use_the_envelope(ctx, response, case):
    assert response.headers.get("x-request-id"), "no X-Request-ID"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def test_the_fuzzed_document_is_the_one_the_server_serves(base):
    assert httpx.get(f"{base}/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))  # cases per run: the profile's
def test_every_operation_keeps_its_declared_contract(case, base):
    case.call_and_validate(base_url=base, additional_checks=[errors_use_the_envelope], timeout=30)
