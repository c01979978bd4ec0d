"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- test -->\s*```python\n(.*?)```", re.S)


def readme_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_readme_has_tested_examples() -> None:
    assert len(readme_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_example(index: int) -> None:
    code = readme_blocks()[index]
    exec(compile(code, f"README.md example {index + 1}", "exec"), {"__name__": "readme"})


def test_quickstart_prints_results() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "add(4, 4) = 8" in done.stdout
    assert "ten adds  = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" in done.stdout
    assert "async     = title of https://example.com" in done.stdout
    assert "ZeroDivisionError" in done.stdout and "FAILURE" in done.stdout
