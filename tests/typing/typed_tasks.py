"""What a type checker knows about tasks: mypy checks this file (test_typed_tasks.py),
nothing runs it.

Each ``# type: ignore[code]`` marks a call mypy must reject; with ``warn_unused_ignores``
an ignore on a line mypy accepts is itself an error, so the rejections are checked too.
"""

from __future__ import annotations

from typing import Any, assert_type

from celeriac import AsyncResult, Celery, Signature, Task, shared_task
from celeriac.contrib.once import QueueOnce
from celeriac.result import EagerResult

app = Celery("typed", broker="memory://")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="typed.greet", ignore_result=False)
def greet(name: str, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


@app.task(bind=True, max_retries=5)
def bound(self: Task[Any, Any], n: int) -> list[int]:
    return [n] * (self.request.retries + 1)


@app.task(base=QueueOnce, once={"keys": []})
def once(n: int) -> None:
    return None


@shared_task
def shared(flag: bool) -> float:
    return 1.0 if flag else 0.0


@shared_task(bind=True)
def shared_bound(self: Task[Any, Any], text: str) -> bytes:
    return text.encode()


# -- what passes ---------------------------------------------------------------------------
typed: Task[[int, int], int] = add
assert_type(add(1, 2), int)
assert_type(add.delay(1, 2), AsyncResult[int])
assert_type(add.delay(1, 2).get(timeout=10), int)
assert_type(add.apply_async((1, 2), countdown=5), AsyncResult[int])
assert_type(add.apply((1, 2)), EagerResult[int])
assert_type(greet.delay("ann"), AsyncResult[str])
assert_type(greet.delay("ann", punctuation="?").get(), str)
assert_type(bound.delay(3).get(), list[int])
assert_type(once.delay(1).get(), None)
assert_type(shared.delay(True).get(), float)
assert_type(shared_bound.delay("x").get(), bytes)
assert_type(add.si(1, 2), Signature)
assert_type(add.s(1), Signature)  # partial: the rest comes from the previous task


async def in_asyncio() -> int:
    result = await add.adelay(1, 2)
    return await result.aget(timeout=10)


# -- what is rejected ----------------------------------------------------------------------
add.delay("a", "b")  # type: ignore[arg-type]
add.delay(1)  # type: ignore[call-arg]
add.delay(1, 2, 3)  # type: ignore[call-arg]
add(1, z=2)  # type: ignore[call-arg]
greet.delay(name=1)  # type: ignore[arg-type]
bound.delay("three")  # type: ignore[arg-type]
shared.delay()  # type: ignore[call-arg]
add.si(1)  # type: ignore[call-arg]
text: str = add.delay(1, 2).get()  # type: ignore[assignment]
