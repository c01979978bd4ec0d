"""Helpers shared by the integration and fault tests (importable as ``support``)."""

from __future__ import annotations

import importlib
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def load_proj(project: Path) -> Any:
    """Import the test project's ``proj`` module afresh."""
    sys.modules.pop("proj", None)
    sys.path.insert(0, str(project))
    try:
        return importlib.import_module("proj")
    finally:
        sys.path.remove(str(project))


@contextmanager
def project_module(project: Path, name: str, source: str) -> Iterator[Any]:
    """Write ``<name>.py`` (which imports the ``proj`` app) into the project; import it."""
    (project / f"{name}.py").write_text(source)
    proj = load_proj(project)
    sys.path.insert(0, str(project))
    sys.modules.pop(name, None)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(project))
        proj.app.close()
        for module in ("proj", name):
            sys.modules.pop(module, None)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it is true; a test asserts on the returned flag."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def lines(path: Path) -> list[str]:
    """The words a marker file holds (tasks append one per line)."""
    return path.read_text().split() if path.exists() else []
