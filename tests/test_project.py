"""The promises the README makes: its test command is CI's, its example runs."""

import re
import subprocess
import sys

from .helpers import ROOT

README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert len(ci_lines) == 1
    assert ci_lines[0] in re.findall(r"```bash\n(.*?)\n```", README, re.S)


def test_readme_python_example_runs(tmp_path):
    (example,) = re.findall(r"```python\n(.*?)```", README, re.S)
    (tmp_path / "data").symlink_to(ROOT / "data")
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) > len("ROMEO:") + 10
    assert (tmp_path / "runs" / "untrained" / "model.safetensors").is_file()
