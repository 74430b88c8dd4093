"""The API reference (docs/api.md) keeps up with the code, and the docs send no reader outside the repository."""

from __future__ import annotations

import dataclasses
import re

import pytest
from fastapi.testclient import TestClient

from .helpers import ROOT

try:  # the app factory moves out of app/server.py; the package exports it once it has
    from lyricist.app import create_app
except ImportError:
    from lyricist.app.server import create_app
try:
    from lyricist.app import Settings
except ImportError:
    from lyricist.app.settings import Settings

API_DOC = ROOT / "docs" / "api.md"
SOURCES = ("app", "model", "training")
VARIABLE = re.compile(r"LYRICIST_[A-Z_]+")
# Every Markdown file a reader of the repository meets: the top-level ones (README, RELIABILITY, ...) and docs/.
DOCS = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md")])


@pytest.fixture(scope="module")
def api_doc() -> str:
    return API_DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def openapi(served_checkpoint) -> dict:
    """The document a running server serves, with a tiny checkpoint loaded (the lifespan runs)."""
    with TestClient(create_app(Settings(models=(str(served_checkpoint),)))) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


def test_every_served_path_is_documented_with_its_method(openapi, api_doc):
    operations = [(method.upper(), path) for path, item in openapi["paths"].items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")]
    assert ("POST", "/v1/predict") in operations  # the document is the one we think it is
    missing = [f"{method} {path}" for method, path in operations
               if not re.search(rf"\b{method} {re.escape(path)}(?![\w/{{-])", api_doc)]
    assert not missing, f"docs/api.md does not document {missing} (write them as 'METHOD /path')"


def _variables_in_sources() -> set[str]:
    names = set()
    for folder in SOURCES:
        for source in (ROOT / folder).rglob("*.py"):
            names.update(match.rstrip("_") for match in VARIABLE.findall(source.read_text(encoding="utf-8")))
    return names - {"LYRICIST"}


def _variables_of_settings() -> set[str]:
    """The variables the settings class reads: a dataclass with `env` metadata, or pydantic-settings."""
    if dataclasses.is_dataclass(Settings):
        return {f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata}
    prefix = getattr(Settings, "model_config", {}).get("env_prefix", "")
    names = set()
    for name, field in getattr(Settings, "model_fields", {}).items():
        alias = field.validation_alias or field.alias
        names.add((alias if isinstance(alias, str) else prefix + name).upper())
    return names


def test_every_variable_is_documented(api_doc):
    variables = _variables_in_sources() | _variables_of_settings()
    assert {"LYRICIST_MODELS", "LYRICIST_MAX_PROMPT_CHARS"} <= variables  # the scan finds what it should
    missing = sorted(v for v in variables if not re.search(rf"`{v}`", api_doc))
    assert not missing, f"docs/api.md does not document {missing}"


def _outside_code(markdown: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    markdown = re.sub(r"^(```|~~~).*?^\1", "", markdown, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", markdown)


def _link_targets(markdown: str) -> list[str]:
    text = _outside_code(markdown)
    inline = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)", text)
    references = re.findall(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", text, flags=re.M)
    html = re.findall(r"(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", text)
    return inline + references + html


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_link_only_to_files_in_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text and "/work/" not in text, f"{doc.name} names a path outside the repository"
    # The contract file kept beside the repository (upper case) is not something a reader has: docs/api.md is.
    assert not re.search(r"(?<![\w/.-])API\.md", text), \
        f"{doc.name} sends readers to the contract outside the repository; link docs/api.md"
    problems = []
    for target in _link_targets(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor in the same page
        path = target.split("#")[0].split("?")[0]
        resolved = (doc.parent / path).resolve()
        if path.startswith("/") or not resolved.is_relative_to(ROOT):
            problems.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            problems.append(f"{target} (no such file)")
    assert not problems, f"{doc.relative_to(ROOT)} links to {problems}"


def test_the_readme_links_the_api_reference():
    assert "](docs/api.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_link_check_catches_what_it_should():
    """The checker itself: links that leave the repository are found, code and URLs are not links."""
    sample = ("[a](../shared/contract.md) [b](docs/api.md#errors) [c](https://example.com)\n"
              "[ref]: ../../elsewhere.md\n```\nx[0](y)\n```\n`z[1](w)` <a href=\"/etc/passwd\">x</a>\n")
    assert _link_targets(sample) == ["../shared/contract.md", "docs/api.md#errors", "https://example.com",
                                     "../../elsewhere.md", "/etc/passwd"]
