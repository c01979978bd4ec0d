"""``task.request``: the request context of a running task.

Its own module so that what runs tasks (``worker/``, eager mode) needs nothing of
``task.py`` at import time.
"""

from __future__ import annotations

from typing import Any


class Context:
    """``task.request``: what the worker knows about the message being run.

    Unknown attributes read as None, as in Celery, so ``self.request.foo`` never raises.
    """

    id: str | None = None
    task: str | None = None
    args: Any = None
    kwargs: Any = None
    retries: int = 0
    eta: str | None = None
    expires: str | None = None
    is_eager: bool = False
    headers: dict[str, Any] | None = None
    delivery_info: dict[str, Any] | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    chord: Any = None
    chain: Any = None
    callbacks: Any = None
    errbacks: Any = None
    hostname: str | None = None
    origin: str | None = None
    timelimit: Any = None
    ignore_result: bool = False
    called_directly: bool = True
    shadow: str | None = None
    properties: dict[str, Any] | None = None
    content_type: str | None = None
    #: results of the tasks this one sent while running (``trail``), for ``collect()``
    children: list[Any] | None = None

    def add_child(self, result: Any) -> None:
        if self.children is None:
            self.children = []
        self.children.append(result)

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"<Context: {self.__dict__!r}>"
