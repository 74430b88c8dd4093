"""The README's example outputs, made by running the README's own commands against the shipped models.

Every ```bash block of README.md that holds one `curl ... localhost:8000/v1/...` command and is followed by a
```json block is an example: the command's body is sent to the service (in process, both shipped models loaded,
as `lyricist serve` loads them) and its answer, floats rounded to 4 significant digits and lists past 5 items cut
to `...`, is what the json block must show. tests/test_readme.py fails when they differ.

    python bench/readme_examples.py           # print what differs
    python bench/readme_examples.py --write   # rewrite README.md's json blocks from the answers
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MODELS = (ROOT / "checkpoints" / "songs-lstm", ROOT / "checkpoints" / "shakespeare-lstm")
EXAMPLE = re.compile(r"```bash\n(?P<command>curl [^`]*?)```\n\n```json\n(?P<output>.*?)```", re.S)
WIDTH = 118
LIST_ITEMS = 5


def examples(readme: str) -> list[re.Match]:
    return [m for m in EXAMPLE.finditer(readme) if "localhost:8000/v1/" in m["command"]]


def request_of(command: str) -> tuple[str, dict]:
    """The path and JSON body of a README curl command."""
    words = shlex.split(command.replace("\\\n", " "))
    url = next(w for w in words if "localhost:8000/" in w)
    body = json.loads(words[words.index("-d") + 1]) if "-d" in words else None
    return "/" + url.split("localhost:8000/", 1)[1], body


def rounded(value):
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def render(value, indent: int = 0) -> str:
    """JSON laid out to fit WIDTH: compact where it fits, else a key or an item a line; lists past LIST_ITEMS
    items end in `...`."""
    compact = _compact(value)
    if indent + len(compact) <= WIDTH or not isinstance(value, (dict, list)) or not value:
        return compact
    pad = " " * (indent + 1)
    if isinstance(value, list):
        items = [render(v, indent + 1) for v in value[:LIST_ITEMS]] + (["..."] if len(value) > LIST_ITEMS else [])
        return "[" + (",\n" + pad).join(items) + "]"
    lines, line = [], ""
    for key, item in value.items():
        head = json.dumps(key, ensure_ascii=False) + ": "
        text = render(item, indent + 1 + len(head))
        part = head + text
        if "\n" not in part and len(pad) + len(line) + len(part) + 2 <= WIDTH:
            line = f"{line}, {part}" if line else part
            continue
        if line:
            lines.append(line)
        if "\n" in part:  # a container past the width: its items under its first one
            lines.append(part)
            line = ""
        else:
            line = part
    if line:
        lines.append(line)
    return "{" + (",\n" + pad).join(lines) + "}"


def _compact(value) -> str:
    if isinstance(value, list):
        items = [_compact(v) for v in value[:LIST_ITEMS]] + (["..."] if len(value) > LIST_ITEMS else [])
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_compact(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def answers(readme: str) -> list[tuple[re.Match, str]]:
    """Each example with the output the service gives now."""
    from fastapi.testclient import TestClient

    from lyricist.app.server import create_app
    from lyricist.app.settings import Settings

    found = []
    with TestClient(create_app(Settings(models=tuple(str(m) for m in MODELS)))) as client:
        for match in examples(readme):
            path, body = request_of(match["command"])
            response = client.post(path, json=body) if body is not None else client.get(path)
            response.raise_for_status()
            found.append((match, render(rounded(response.json())) + "\n"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md's example outputs")
    args = parser.parse_args()
    readme = README.read_text(encoding="utf-8")
    found = answers(readme)
    stale = [(m, out) for m, out in found if m["output"] != out]
    for match, out in stale:
        print(f"--- README shows, after {request_of(match['command'])[0]}:\n{match['output']}+++ served:\n{out}")
    if args.write and stale:
        for match, out in sorted(stale, key=lambda pair: -pair[0].start("output")):
            readme = readme[:match.start("output")] + out + readme[match.end("output"):]
        README.write_text(readme, encoding="utf-8")
        print(f"README.md: {len(stale)} example outputs rewritten")
    print(f"{len(found)} examples, {len(stale)} differ from the service")
    sys.exit(1 if stale and not args.write else 0)


if __name__ == "__main__":
    main()
