"""The README's commands and its API example stay true."""

import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_starts_with_exactly_two_setup_commands():
    block = re.search(r"```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert block[0].startswith("pip install -e .") and block[1].startswith("pip install -e")
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    test_command = block[1].split("&&", 1)[1].strip()
    assert test_command in ci, "CI must run the README's test command"


def test_readme_python_example_runs():
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "torch.Size([5, 62, 192]) 0.098" in result.stdout
