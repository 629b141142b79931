"""The code and the protos stay clean: buf lint (CONTRACT §1), ruff and mypy."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["buf", "lint"],
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "services", "gateway", "devtools", "tests", "bench"],
    ],
    ids=["buf-lint", "ruff-check", "ruff-format", "mypy"],
)
def test_clean(command: list[str]) -> None:
    result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
