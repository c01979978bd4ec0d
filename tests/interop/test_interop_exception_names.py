"""How celeriac names exceptions in stored results so that Celery clients understand them.

celeriac's public exceptions that have a Celery twin are stored under
``celery.exceptions`` (a Celery client re-raises its own class) and read back as
celeriac's classes, whether celeriac or Celery wrote them. No server needed.
"""

from __future__ import annotations

import pytest

from celeriac import exceptions as exc
from celeriac.backends.base import Backend

TWINS = [
    exc.NotRegistered("interop.nope"), exc.TaskRevokedError("expired"),
    exc.MaxRetriesExceededError("too many"), exc.TimeLimitExceeded(10.0),
    exc.SoftTimeLimitExceeded(), exc.ChordError("member failed"),
    exc.WorkerLostError("died"), exc.Reject("no", False), exc.Ignore(), exc.Retry("again"),
]


@pytest.mark.parametrize("error", TWINS, ids=lambda e: type(e).__name__)
def test_twins_are_written_under_celery_and_read_back_as_celeriac(error: Exception) -> None:
    stored = Backend.prepare_exception(error)
    assert stored["exc_module"] == "celery.exceptions"
    assert stored["exc_type"] == type(error).__name__
    back = Backend.exception_to_python(stored)
    assert type(back) is type(error)
    assert back.args == error.args


@pytest.mark.parametrize("module", ["celery.exceptions", "billiard.exceptions"])
def test_what_celery_writes_reads_as_celeriac(module: str) -> None:
    # Celery's worker writes the billiard-born ones (time limits, lost workers) under
    # billiard.exceptions and the rest under celery.exceptions.
    for name, args in [("TaskRevokedError", ["expired"]), ("TimeLimitExceeded", [5.0]),
                       ("WorkerLostError", ["gone"]), ("NotRegistered", ["x.y"])]:
        back = Backend.exception_to_python(
            {"exc_type": name, "exc_message": args, "exc_module": module})
        assert type(back) is getattr(exc, name) and list(back.args) == args


def test_subclasses_and_user_errors_keep_their_module() -> None:
    class MyRevoked(exc.TaskRevokedError):
        pass

    assert Backend.prepare_exception(MyRevoked("x"))["exc_module"] == __name__
    assert Backend.prepare_exception(ValueError("x"))["exc_module"] == "builtins"


def test_other_celery_exceptions_are_not_mapped() -> None:
    back = Backend.exception_to_python(
        {"exc_type": "NoSuchThing", "exc_message": ["m"], "exc_module": "celery.exceptions"})
    assert isinstance(back, exc.RemoteError)
    assert (back.exc_module, back.exc_type) == ("celery.exceptions", "NoSuchThing")


def test_delayed_delivery_option_is_checked() -> None:
    pytest.importorskip("redis")
    from celeriac.brokers.redis import RedisBroker

    assert not RedisBroker("redis://127.0.0.1:6379/8").delay_in_broker  # as Celery does
    assert RedisBroker("redis://127.0.0.1:6379/8",
                       {"delayed_delivery": "broker"}).delay_in_broker
    with pytest.raises(exc.ImproperlyConfigured, match="delayed_delivery"):
        RedisBroker("redis://127.0.0.1:6379/8", {"delayed_delivery": "memory"})
