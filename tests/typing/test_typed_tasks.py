"""Tasks keep their function's signature and return type for a type checker (mypy)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SNIPPET = '''
from celeriac import Celery

app = Celery("snippet", broker="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


add.delay("a", "b")
reveal_type(add.delay(1, 2).get())
'''


def test_mypy_checks_calls_and_results_against_the_function(tmp_path: Path) -> None:
    if shutil.which("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    # One run for both files; a private cache, as other tests may run mypy meanwhile.
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--warn-unused-ignores", "--cache-dir", str(tmp_path / "cache"),
         "--no-error-summary", str(HERE / "typed_tasks.py"), str(snippet)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    # typed_tasks.py: every accepted call accepted, every rejected one rejected
    assert "typed_tasks.py" not in out, out
    assert 'Argument 1 to "delay" of "Task" has incompatible type "str"; expected "int"' in out
    assert 'Argument 2 to "delay" of "Task" has incompatible type "str"; expected "int"' in out
    assert 'Revealed type is "int"' in out or 'Revealed type is "builtins.int"' in out, out
