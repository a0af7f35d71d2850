"""A first pass that ends at once: a resource already right costs no task.

A worker's first pass used to be a task of its own (``Worker.first_pass``): created,
scheduled, stepped once, its two done callbacks scheduled and run, ~5.5 us of a ~40 us
resource, although a converged file's pass never waits for anything. :func:`pass_now`
runs that pass right where the first passes are started (``engine/pool.py``'s pump),
when nothing in it can wait and its kind tells at once that it is right
(``ChecksNow.check_now``); in every other case it does nothing and returns False, and
the worker runs the pass in its task as before. What the pass does is what
``Worker._passes`` does for a clean check, in the same order: the state goes
WAITING -> RUNNING -> CLEAN (each change counted, observed and passed downstream), the
pass is recorded as an event with its cause, a sender says it passed.

Only a plain first pass qualifies: the watch ready, a check owed, the wake flag set,
every upstream worker clean, and none of what may wait or needs the task: ``limit``,
``sema``, ``timeout`` (it cancels the task it runs in), ``recv``, a pending refresh, a
``--noop`` run's prediction. A check that is not clean (or fails, or would wait) is run
again by the task, except that a change ``check_now`` found is handed to that pass
(``Worker.found``) instead of being looked for again: a file to create costs one check,
not two. An event before that pass (``Worker.poke``) drops the change handed over, and
the pass checks again. The error of a failing check is reported by the usual path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from convergent.engine.convergence import State
from convergent.engine.events import REFRESH
from convergent.resources.base import Context, Meta, Resource

__all__ = ["Passing", "pass_now"]

_CLEAN, _RUNNING, _WAITING = State.CLEAN, State.RUNNING, State.WAITING  # plain globals


class _Upstream(Protocol):
    @property
    def state(self) -> State: ...


class Passing(Protocol):
    """What the pass needs of a worker (``engine/worker.py``'s ``Worker`` is one)."""

    ready: bool
    stopped: bool
    dirty: bool
    looping: bool
    watch_failed: bool
    tries: int
    watch_tries: int
    blocked_by: str | None
    cause: str
    since: float
    woken: bool  # the wake flag
    found: Any  # a change check_now found, for the pass in the task

    @property
    def resource(self) -> Resource[Any]: ...
    @property
    def meta(self) -> Meta: ...
    @property
    def ctx(self) -> Context: ...
    @property
    def runtime(self) -> Any: ...
    def wake(self) -> None: ...
    @property
    def upstream(self) -> Sequence[_Upstream]: ...
    @property
    def semaphores(self) -> Sequence[Any]: ...
    @property
    def bucket(self) -> object | None: ...
    @property
    def recv(self) -> Sequence[Any]: ...
    @property
    def refresh_from(self) -> frozenset[str]: ...
    @property
    def waiting(self) -> object | None: ...
    def _set_state(self, state: State) -> None: ...
    def _passed(self, received: dict[str, Any] | None) -> None: ...


def pass_now(w: Passing) -> bool:
    """Run ``w``'s first pass here when it can end here (see the module); True when it did.

    False: nothing was changed (``check_now`` may have read), run the pass as usual.
    """
    if w.stopped:
        return True  # a changeover stopped it meanwhile: no pass at all
    res = w.resource
    check_now = getattr(res, "check_now", None)
    if check_now is None:
        return False
    meta = w.meta
    runtime = w.runtime
    if (
        not w.ready
        or not w.dirty
        or w.watch_failed
        or not w.woken
        or w.semaphores
        or w.bucket is not None
        or w.recv
        or w.refresh_from
        or meta.timeout is not None
        or runtime.prediction is not None
    ):
        return False
    if w.upstream and any(up.state is not _CLEAN for up in w.upstream):
        return False  # blocked or waiting: the task says which
    began = time.perf_counter()
    found = check_now(w.ctx)
    if found is not True:
        if found is not False:
            w.found = found  # the pass in the task applies it without checking again
        return False
    rid = res.id
    w.woken = False
    w.blocked_by = None
    w._set_state(_RUNNING)
    w.dirty = False
    cause = REFRESH if w.refresh_from else w.cause
    w._passed(None)
    events = runtime.events
    if events is not None:
        events.passed(rid, cause, began, w.since, None)
    w.tries = 0
    w.watch_tries = 0
    w._set_state(_WAITING if w.dirty or w.waiting else _CLEAN)
    w.looping = False
    if w.dirty or w.woken:  # owed another pass meanwhile: the loop, in a task
        w.woken = False
        w.wake()  # sets the flag again and, the loop not running, starts it
    return True
