"""Signatures and the canvas: task calls packed as dicts, and ways to combine them.

A ``Signature`` is a ``dict`` with Celery's keys (``task``, ``args``, ``kwargs``,
``options``, ``subtask_type``, ``immutable``) so it travels in JSON messages as is. The
combinations are signatures too, told apart by ``subtask_type``:

- ``chain`` (``"chain"``, ``kwargs.tasks``): one message for the first step; the rest
  ride in ``embed.chain``, last step first, and each worker sends the next step.
- ``group`` (``"group"``, ``kwargs.tasks``): one message per member, with the group id
  and the member's index in the headers.
- ``chord`` (``"chord"``, ``kwargs.header``/``kwargs.body``): a group whose members
  carry the body in ``embed.chord``; the result backend counts finished members and
  the worker that finishes the last one sends the body with all their results.
"""

from __future__ import annotations

import copy
import uuid
from typing import TYPE_CHECKING, Any, Iterable

from . import _state

if TYPE_CHECKING:
    from .app import Celery
    from .result import GroupResult


def _uuid() -> str:
    return str(uuid.uuid4())


class Signature(dict):  # type: ignore[type-arg]
    """A task name with arguments and call options.

    Args:
        task: a task, a task name, or a signature dict to wrap.
        args: partial positional arguments; a call's arguments go before them.
        kwargs: partial keyword arguments; a call's keyword arguments update them.
        options: ``apply_async`` options (``queue``, ``countdown``, ``link`` ...).
        immutable: a call's arguments (and a parent's result) are ignored.
    """

    def __init__(self, task: Any = None, args: Any = None, kwargs: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, subtask_type: str | None = None,
                 immutable: bool = False, app: Celery | None = None, **extra: Any) -> None:
        if isinstance(task, dict):
            super().__init__(task)
            self.setdefault("args", [])
            self.setdefault("kwargs", {})
            self.setdefault("options", {})
            self.setdefault("subtask_type", None)
            self.setdefault("immutable", False)
            app = app or getattr(task, "_app", None)
        else:
            name = getattr(task, "name", task)
            super().__init__(task=name, args=list(args or ()), kwargs=dict(kwargs or {}),
                             options=dict(options or {}, **extra), subtask_type=subtask_type,
                             immutable=immutable)
        self._app = app

    @property
    def app(self) -> Celery:
        app = self._app or _state.get_current_app()
        if app is None:
            raise RuntimeError("a signature needs an app to be sent; create one first")
        return app

    @property
    def name(self) -> str:
        return self["task"]

    task = name

    @property
    def args(self) -> list[Any]:
        return self["args"]

    @property
    def kwargs(self) -> dict[str, Any]:
        return self["kwargs"]

    @property
    def options(self) -> dict[str, Any]:
        return self["options"]

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def id(self) -> str | None:
        """The pre-assigned task id (see ``freeze``), if any."""
        return self.options.get("task_id")

    # -- building ---------------------------------------------------------------------
    def _merge(self, args: Any = None, kwargs: dict[str, Any] | None = None
               ) -> tuple[list[Any], dict[str, Any]]:
        if self.immutable:
            return list(self.args), dict(self.kwargs)
        return list(args or ()) + list(self.args), dict(self.kwargs, **(kwargs or {}))

    def clone(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        """A deep copy, with ``args`` prepended and ``kwargs``/``options`` merged in."""
        sig = from_dict(copy.deepcopy(dict(self)), app=self._app)
        if not sig.immutable:
            if args:
                sig["args"] = list(args) + list(sig["args"])
            if kwargs:
                sig["kwargs"] = dict(sig["kwargs"], **kwargs)
        sig["options"].update(options)
        return sig

    partial = clone

    def replace(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                options: dict[str, Any] | None = None) -> Signature:
        """A copy with ``args``, ``kwargs`` or ``options`` replaced (not merged)."""
        sig = self.clone()
        if args is not None:
            sig["args"] = list(args)
        if kwargs is not None:
            sig["kwargs"] = dict(kwargs)
        if options is not None:
            sig["options"] = dict(options)
        return sig

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set call options in place (``queue``, ``countdown`` ...); returns self."""
        if immutable is not None:
            self["immutable"] = immutable
        self["options"].update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def link(self, callback: Any) -> Any:
        """Add a callback, sent with this task's result when it succeeds."""
        self._append_option("link", callback)
        return callback

    def link_error(self, errback: Any) -> Any:
        """Add an errback, called when this task fails."""
        self._append_option("link_error", errback)
        return errback

    def on_error(self, errback: Any) -> Signature:
        """``link_error`` that returns this signature, to keep building in one line."""
        self.link_error(errback)
        return self

    def _append_option(self, key: str, sig: Any) -> None:
        current = self.options.get(key)
        if current is None:
            current = []
        elif isinstance(current, dict):
            current = [current]
        self.options[key] = list(current) + [sig]

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> Any:
        """Pre-assign the task id (kept in ``options.task_id``); returns its result."""
        from .result import AsyncResult

        opts = self.options
        if _id is not None:
            opts["task_id"] = _id
        tid = opts.setdefault("task_id", _uuid())
        if group_id is not None:
            opts["group_id"] = group_id
        if group_index is not None:
            opts["group_index"] = group_index
        return AsyncResult(tid, app=self._app or _state.get_current_app(), task_name=self.name)

    # -- calling ----------------------------------------------------------------------
    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send the task, with the call's arguments merged into the partial ones."""
        args, kwargs = self._merge(args, kwargs)
        opts = dict(self.options, **options)
        task = self.app.tasks.get(self.name)
        if task is not None:
            return task.apply_async(args, kwargs, **opts)
        return self.app.send_task(self.name, args, kwargs, **opts)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run here and now (see ``Task.apply``)."""
        args, kwargs = self._merge(args, kwargs)
        opts = dict(self.options, **options)
        return self.app.tasks[self.name].apply(args, kwargs, **opts)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task's function in this process (no message)."""
        task = self.app.tasks[self.name]
        args_, kwargs_ = self._merge(args, kwargs)
        return task(*args_, **kwargs_)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Signature):
            return chain(self, other, app=self._app)
        return NotImplemented

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        return from_dict(copy.deepcopy(dict(self), memo), app=self._app)

    def __reduce__(self) -> Any:
        return (from_dict, (dict(self),))

    def __repr__(self) -> str:
        args = ", ".join([repr(a) for a in self.args] +
                         [f"{k}={v!r}" for k, v in self.kwargs.items()])
        return f"{self.name}({args})"


def _sig(value: Any, app: Celery | None) -> Signature:
    if isinstance(value, Signature):
        return value
    if isinstance(value, dict):
        return from_dict(value, app=app)
    raise TypeError(f"expected a signature, got {value!r}")


class _Container(Signature):
    """A signature made of signatures: chain steps, group members, a chord's header."""

    #: where in ``kwargs`` the member signatures live (Celery's layout)
    members_key = "tasks"

    @property
    def tasks(self) -> list[Signature]:
        """The members as signatures (dicts read off the wire are turned in place)."""
        members = self.kwargs[self.members_key]
        members[:] = [_sig(t, self._app) for t in members]
        return members


class _chain(_Container):
    """Steps run one after another, each given the previous one's result."""

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])  # chain(generator) / chain(list)
        steps: list[Signature] = []
        for task in tasks:
            sig = _sig(task, app)
            app = app or sig._app
            if isinstance(sig, _chain) and not sig.options:
                steps.extend(sig.tasks)  # flatten
            else:
                steps.append(sig)
        super().__init__("celery.chain", (), {"tasks": steps}, options,
                         subtask_type="chain", app=app)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, _chain):
            return chain(*self.tasks, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app)
        return NotImplemented

    def _prepared(self) -> list[Signature]:
        """The steps, cloned, each group followed by a step turned into a chord.

        Built from the end, as Celery does, so ``g1 | g2 | t`` becomes
        ``chord(g1, chord(g2, t))``: every group hands its list of results to what
        follows, including another group, whose members each receive that list.
        """
        steps: list[Signature] = []
        for step in reversed(self.tasks):
            step = step.clone()
            if steps and isinstance(step, group) and not isinstance(steps[-1], _chain):
                step = chord(step.tasks, steps.pop(), app=self._app, **step.options)
            steps.append(step)
        steps.reverse()
        return steps

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> Any:
        """Pre-assign every step's id; returns the last step's result (``.parent`` set)."""
        steps = self._prepared()
        self.kwargs["tasks"] = steps
        parent: Any = None
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            # the last step is the chain's result, so it is the one in a group
            res = step.freeze(_id if last else None,
                              group_id=group_id if last else None,
                              group_index=group_index if last else None)
            res.parent = parent
            parent = res
        if parent is not None:
            self.options["task_id"] = parent.id
        return parent

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send the first step with the rest in its ``embed.chain``.

        Returns:
            The last step's result; ``.parent`` walks back to the first step.
        """
        app = self.app
        opts = dict(self.options, **options)
        steps = self._prepared()
        if not steps:
            raise ValueError("an empty chain cannot be sent")
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **opts)
        link = opts.pop("link", None)
        link_error = opts.pop("link_error", None)
        # As a group member (maybe in a chord header) it is the last step that belongs
        # to the group: its result is the chain's.
        for key in ("group_id", "group_index", "chord"):
            if opts.get(key) is not None:
                steps[-1].options[key] = opts.pop(key)
            opts.pop(key, None)
        last_id = opts.pop("task_id", None)  # the chain's id is its last step's
        results: list[Any] = []
        for i, step in enumerate(steps):
            if link_error is not None:
                for errback in _as_list(link_error):
                    step.link_error(errback)
            results.append(step.freeze(last_id if i == len(steps) - 1 else None))
        if link is not None:
            for callback in _as_list(link):
                steps[-1].link(callback)
        root_id = opts.pop("root_id", None) or results[0].id
        parent: Any = None
        for res in results:
            res.parent = parent
            parent = res
        first, rest = steps[0], steps[1:]
        for step in rest:
            step.options.setdefault("root_id", root_id)
        remaining = [dict(s) for s in reversed(rest)]
        first.apply_async(args, kwargs, chain=remaining or None, root_id=root_id, **opts)
        return results[-1]

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Any:
        """Run every step here, in order."""
        value: Any = None
        result: Any = None
        first = True
        for step in self._prepared():
            if first:
                result = step.apply(args, kwargs, **options)
                first = False
            else:
                result = step.apply((value,) if not step.immutable else ())
            value = result.get(disable_sync_subtasks=False)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"


class chain(_chain):  # noqa: N801 - Celery's name
    """``chain(a.s(1), b.s(), c.s())``, also written ``a.s(1) | b.s() | c.s()``."""


class group(_Container):  # noqa: N801 - Celery's name
    """Members run in parallel; ``group(...)()`` returns a ``GroupResult``."""

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        sigs = [_sig(t, app) for t in tasks]
        if app is None and sigs:
            app = sigs[0]._app
        super().__init__("celery.group", (), {"tasks": sigs}, options,
                         subtask_type="group", app=app)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, (group, _chain)):
            return chain(self, other, app=self._app)
        if isinstance(other, Signature):
            return chord(self.tasks, other, app=self._app, **self.options)
        return NotImplemented

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> GroupResult:
        from .result import GroupResult

        gid = self.options.setdefault("task_id", _id or _uuid())
        results = [t.freeze(group_id=gid, group_index=i) for i, t in enumerate(self.tasks)]
        return GroupResult(gid, results, app=self._app)

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> GroupResult:
        """Send one message per member; returns their ``GroupResult``."""
        from .result import GroupResult

        app = self.app
        opts = dict(self.options, **options)
        if opts.pop("chain", None):
            # chain() turns every group followed by a step into a chord; only a message
            # built by hand can carry a group with steps after it.
            raise ValueError("a group cannot carry the rest of a chain; make it a chord "
                             "(group | step) so the step receives its results")
        gid = opts.pop("task_id", None) or opts.pop("group_id", None) or _uuid()
        opts.pop("group_id", None)
        results = []
        eager = app.conf.task_always_eager
        with app.batch_publish():
            for i, task in enumerate(self.tasks):
                task = task.clone()
                if eager:
                    results.append(task.apply(args, kwargs))
                    continue
                results.append(task.apply_async(args, kwargs, group_id=gid, group_index=i,
                                                **opts))
        result = GroupResult(gid, results, app=app)
        if opts.get("add_to_parent", True):
            _add_to_trail(result, eager)
        return result

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> GroupResult:
        from .result import GroupResult

        gid = self.options.get("task_id") or _uuid()
        return GroupResult(gid, [t.clone().apply(args, kwargs) for t in self.tasks],
                           app=self._app)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def skew(self, start: float = 1.0, stop: float | None = None,
             step: float = 1.0) -> group:
        """Spread the members out in time: countdowns ``start``, ``start + step`` ...
        up to ``stop``, after which the last one repeats (Celery's rule); returns the
        group."""
        countdown = start
        for task in self.tasks:
            task.set(countdown=countdown)
            if stop is None or countdown + step <= stop:
                countdown += step
        return self

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Any:
        return iter(self.tasks)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


class chord(_Container):  # noqa: N801 - Celery's name
    """A header group and a body run with the list of the header's results.

    ``chord(header)(body)`` or ``chord(header, body)()``; ``group(...) | body`` too.
    """

    members_key = "header"

    def __init__(self, header: Any, body: Any = None, app: Celery | None = None,
                 **options: Any) -> None:
        if isinstance(header, dict) and header.get("subtask_type") == "chord" and body is None:
            super().__init__(header, app=app)  # from a dict
            return
        if isinstance(header, group):
            header = header.tasks
        sigs = [_sig(t, app) for t in header]
        if app is None:
            app = sigs[0]._app if sigs else getattr(body, "_app", None)
        super().__init__("celery.chord", (), {"header": sigs, "body": body}, options,
                         subtask_type="chord", app=app)

    @property
    def body(self) -> Signature | None:
        body = self.kwargs.get("body")
        return None if body is None else _sig(body, self._app)

    def link_error(self, errback: Any) -> Any:
        """Add an errback to the body (called with ``ChordError`` when a header task
        fails); with ``task_allow_error_cb_on_chord_header``, a copy to every header
        task too (Celery 5.3+), so that it is also called for the header task that
        failed, with that task's id. A chord in the header links it by the same rule.

        ``apply_async(link_error=...)`` links the body only, as in Celery.
        """
        app = self._app or _state.get_current_app()
        to_header = bool(app is not None and app.conf.task_allow_error_cb_on_chord_header)
        if to_header or any(isinstance(task, chord) for task in self.tasks):
            errback_sig = _sig(errback, self._app)
            for task in self.tasks:
                if isinstance(task, chord):
                    task.link_error(errback_sig)
                elif to_header:
                    task.link_error(errback_sig.clone())
        body = self.body
        if body is not None:
            body.link_error(errback)
            self.kwargs["body"] = body
        return errback

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               root_id: str | None = None, parent_id: str | None = None,
               group_index: int | None = None) -> Any:
        from .result import GroupResult

        body = self.body
        if body is None:
            raise ValueError("a chord needs a body")
        gid = self.options.setdefault("group_id", _uuid())
        header = GroupResult(gid, [t.freeze(group_id=gid, group_index=i)
                                   for i, t in enumerate(self.tasks)], app=self._app)
        result = body.freeze(_id)
        self.kwargs["body"] = body
        # A chord's id is its body's: apply_async sends the body under it, also when
        # this chord is itself the body of another.
        self.options["task_id"] = result.id
        result.parent = header
        return result

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    body: Any = None, **options: Any) -> Any:
        """Record the chord size in the result backend, then send the header.

        Returns:
            The body's ``AsyncResult``; its ``.parent`` is the header's ``GroupResult``.
        """
        from .result import AsyncResult, GroupResult

        app = self.app
        body = _sig(body, app) if body is not None else self.body
        if body is None:
            raise ValueError("a chord needs a body")
        body = body.clone()
        opts = dict(self.options, **options)
        rest = opts.pop("chain", None)
        if rest:
            body.options["chain"] = rest
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, body=body)
        link_error = opts.pop("link_error", None)
        for errback in _as_list(link_error):
            body.link_error(errback)
        link = opts.pop("link", None)
        for callback in _as_list(link):
            body.link(callback)
        gid = opts.pop("group_id", None) or _uuid()
        body_id = opts.pop("task_id", None) or body.id or _uuid()
        # A chord body is a chord of its own (``g1 | g2 | t``): it must not share this
        # chord's group id, or the two counters would be one.
        body.set(task_id=body_id)
        if not isinstance(body, chord):
            # Kept when set: a body that takes a replaced task's place in an outer group
            # (Task.replace) reports there.
            body.options.setdefault("group_id", gid)
        # A group body's members get their ids now, so the caller's GroupResult
        # names the tasks the worker will send.
        body_result = body.freeze(body_id) if isinstance(body, group) else None
        if opts.get("root_id"):
            body.options.setdefault("root_id", opts["root_id"])
        header = self.tasks
        if not header:
            result = body.apply_async(([],))
            result.parent = GroupResult(gid, [], app=app)
            return result
        app.backend.set_chord_size(gid, len(header))
        body_dict = dict(body)
        results = []
        with app.batch_publish():
            for i, task in enumerate(header):
                task = task.clone()
                results.append(task.apply_async(args, kwargs, group_id=gid, group_index=i,
                                                chord=body_dict, **opts))
        result = body_result or AsyncResult(body_id, app=app, task_name=body.name)
        result.parent = GroupResult(gid, results, app=app)
        if opts.get("add_to_parent", True):
            _add_to_trail(result.parent, eager=False)
        return result

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None,
              body: Any = None, **options: Any) -> Any:
        body = _sig(body, self._app) if body is not None else self.body
        assert body is not None
        values = [t.clone().apply(args, kwargs).get(disable_sync_subtasks=False)
                  for t in self.tasks]
        return body.clone().apply((values,))

    def __call__(self, body: Any = None, **options: Any) -> Any:
        return self.apply_async((), body=body, **options)

    def __repr__(self) -> str:
        return f"chord([{', '.join(repr(t) for t in self.tasks)}], {self.body!r})"


class chunks(Signature):  # noqa: N801 - Celery's name
    """Split an iterable of argument tuples into ``n``-sized parts, one task per part."""

    def __init__(self, task: Any, it: Iterable[Any], n: int, app: Celery | None = None,
                 **options: Any) -> None:
        task = _sig(task, app)
        super().__init__("celery.chunks", (), {"task": task, "it": list(it), "n": n},
                         options, subtask_type="chunks", app=app or task._app)

    def group(self) -> group:
        task = _sig(self.kwargs["task"], self._app)
        it, n = self.kwargs["it"], self.kwargs["n"]
        parts = [it[i:i + n] for i in range(0, len(it), n)]
        return group((xstarmap(task, part, app=self._app) for part in parts), app=self._app)

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None,
                    **options: Any) -> GroupResult:
        return self.group().apply_async(args, kwargs, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)


def _mapper(kind: str, task: Any, it: Iterable[Any], app: Celery | None,
            options: dict[str, Any]) -> Signature:
    task = _sig(task, app)
    return Signature(f"celery.{kind}", (), {"task": dict(task), "it": list(it)}, options,
                     subtask_type=None, app=app or task._app)


def xmap(task: Any, it: Iterable[Any], app: Celery | None = None, **options: Any) -> Signature:
    """One task that calls ``task`` once per item of ``it``; returns the list."""
    return _mapper("map", task, it, app, options)


def xstarmap(task: Any, it: Iterable[Any], app: Celery | None = None,
             **options: Any) -> Signature:
    """Like ``xmap``, each item being an argument tuple."""
    return _mapper("starmap", task, it, app, options)


def _add_to_trail(result: Any, eager: bool) -> None:
    # A group sent from inside a task is one child of it (its members were sent with a
    # group id, so send_task left them out).
    task = _state.current_task.get()
    if task is not None and not eager and task.trail and task.request.id is not None:
        task.request.add_child(result)


def register_builtins(app: Celery) -> None:
    """Register the tasks ``xmap``, ``xstarmap``, ``chunks`` and ``Task.replace`` send,
    and beat's ``celery.backend_cleanup`` (Celery's names)."""

    def _map(task: dict[str, Any], it: list[Any]) -> list[Any]:
        sig = from_dict(task, app=app)
        return [sig(item) for item in it]

    def _starmap(task: dict[str, Any], it: list[Any]) -> list[Any]:
        sig = from_dict(task, app=app)
        return [sig(*item) for item in it]

    def _accumulate(*args: Any, index: int | None = None) -> Any:
        # The body a group replacement gets (Task.replace): hands back the header's list.
        return args[index] if index is not None else args

    app.task(name="celery.map")(_map)
    app.task(name="celery.starmap")(_starmap)
    app.task(name="celery.accumulate")(_accumulate)

    def _backend_cleanup() -> None:
        # Beat sends it daily when the backend keeps expired results (database)
        app.backend.cleanup()

    app.task(name="celery.backend_cleanup")(_backend_cleanup)

    def _chord_unlock(self: Any, group_id: str, callback: Any, interval: float | None = None,
                      max_retries: int | None = None, result: list[Any] | None = None,
                      **_: Any) -> None:
        # A Celery client sends this with a chord whose result backend cannot count
        # (Celery's database and cache backends): celeriac's backends count chords
        # themselves, but a celeriac worker serving a Celery client must still poll the
        # header and send the body, or that chord never completes.
        from . import states
        from .exceptions import ChordError
        from .result import GroupResult, result_from_tuple

        header = GroupResult(group_id, [result_from_tuple(r, app=app) for r in result or ()],
                             app=app)
        if not all(member.ready() for member in header.results):
            wait = app.conf.result_chord_retry_interval if interval is None else interval
            raise self.retry(countdown=wait, max_retries=max_retries)
        body = callback if isinstance(callback, Signature) else from_dict(callback, app=app)
        failed = next((m for m in header.results if m.state in states.PROPAGATE_STATES), None)
        if failed is None:
            body.apply_async(([member.result for member in header.results],))
            return
        error = ChordError(f"Dependency {failed.id} raised {failed.result!r}")
        if body.id:
            app.backend.mark_as_failure(body.id, error)
        for errback in body.options.get("link_error") or ():
            Signature(errback, app=app).apply_async([body.id])

    # max_retries=None: it polls until the header is done, as Celery's does
    app.task(name="celery.chord_unlock", bind=True, max_retries=None,
             ignore_result=True)(_chord_unlock)


_TYPES: dict[str, type[Signature]] = {"chain": chain, "group": group, "chord": chord}


def from_dict(value: dict[str, Any], app: Celery | None = None) -> Signature:
    """Rebuild a signature (or chain, group, chord) from its dict form."""
    kind = _TYPES.get(value.get("subtask_type") or "")
    if kind is None:
        return Signature(value, app=app)
    sig = Signature.__new__(kind)
    dict.__init__(sig, value)
    sig._app = app
    return sig


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """``signature('tasks.add', args=(2, 2))``, ``signature(task)`` or ``signature(a_dict)``."""
    if isinstance(varies, Signature):
        return varies
    if isinstance(varies, dict):
        return from_dict(varies, app=kwargs.get("app"))
    return Signature(varies, *args, **kwargs)


def maybe_signature(value: Any, app: Celery | None = None) -> Signature | None:
    if value is None:
        return None
    if isinstance(value, Signature):
        return value
    return from_dict(value, app=app)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, dict) else list(value)


__all__ = ["Signature", "signature", "maybe_signature", "chain", "group", "chord", "chunks",
           "xmap", "xstarmap"]

