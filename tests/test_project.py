"""The promises the README makes: its test command is CI's, its example runs."""

import json
import re
import subprocess
import sys

from .helpers import ROOT, start_server

README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert len(ci_lines) == 1
    assert ci_lines[0] in re.findall(r"```bash\n(.*?)\n```", README, re.S)


def test_readme_python_example_runs(tmp_path):
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", README, re.S) if "save_checkpoint" in block]
    (tmp_path / "data").symlink_to(ROOT / "data")
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) > len("ROMEO:") + 10
    assert (tmp_path / "runs" / "untrained" / "model.safetensors").is_file()


def test_readme_service_examples_run_against_the_shipped_model():
    server, base = start_server()  # no --model: the shipped default
    try:
        commands = [line for block in re.findall(r"```bash\n(.*?)```", README, re.S)
                    for line in block.replace("\\\n", " ").splitlines()]  # a trailing backslash continues the line
        curls = [line for line in commands if line.startswith("curl ")]
        assert len(curls) >= 8 and any("/v1/verse" in line for line in curls)
        for line in curls:
            result = subprocess.run(line.replace("localhost:8000", base.removeprefix("http://")), shell=True,
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0 and result.stdout, line
            if '"stream": true' in line:
                assert result.stdout.rstrip().endswith("data: [DONE]")
            else:
                assert "error" not in json.loads(result.stdout), result.stdout
        (client_example,) = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "OpenAI(" in b]
        result = subprocess.run([sys.executable, "-c", client_example.replace("http://127.0.0.1:8000", base)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.strip(), result.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
