"""Resolve ``module:attr`` and ``module.attr`` strings: the edge where names become objects."""

from __future__ import annotations

import importlib
from typing import Any


def symbol_by_name(name: str) -> Any:
    """Import ``pkg.mod:attr`` or ``pkg.mod.attr`` (or a plain module)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        module, _, attr = name.rpartition(".")
        if not module or exc.name not in (name, None):
            raise
        return getattr(importlib.import_module(module), attr)
