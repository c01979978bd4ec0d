"""Result waiting calls take Celery's arguments, in Celery's order, so code written for
Celery (keyword or positional) calls them unchanged."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from celeriac.result import AsyncResult, GroupResult, ResultSet


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize("cls_name, method", [
    ("AsyncResult", "get"), ("AsyncResult", "wait"), ("ResultSet", "get"),
    ("ResultSet", "join"), ("ResultSet", "join_native"), ("GroupResult", "get"),
    ("GroupResult", "join"),
])
def test_same_arguments_as_celery(cls_name: str, method: str) -> None:
    celery_result = pytest.importorskip("celery.result")
    ours = {"AsyncResult": AsyncResult, "ResultSet": ResultSet, "GroupResult": GroupResult}
    theirs = getattr(getattr(celery_result, cls_name), method)
    assert parameters(getattr(ours[cls_name], method)) == parameters(theirs)
