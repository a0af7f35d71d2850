"""A worker's rarely changed state (``engine/rare.py``) reads as plain attributes with
their defaults, costs no object until a value other than the default is written, and
keeps every value written."""

from __future__ import annotations

import asyncio

from convergent.engine.rare import RareFields


class Holder(RareFields):
    __slots__ = ()


def test_defaults_read_and_written_cost_nothing() -> None:
    h = Holder()
    assert (h.recv, h.received, h.put, h.tried, h.waiting) == ((), {}, None, {}, None)
    assert (h.semaphores, h.bucket, h.blocked_by) == ((), None, None)
    assert (h.tries, h.watch_tries, h.watch_failed) == (0, 0, False)
    h.tries = 0
    h.watch_tries = 0
    h.watch_failed = False
    h.blocked_by = None
    h.put = None
    h.waiting = None
    h.recv = ()
    h.semaphores = ()
    h.bucket = None
    assert h._rare is None


def test_a_value_written_is_kept_and_the_others_stay_default() -> None:
    h = Holder()
    h.tries += 1
    h.tries += 1
    assert h.tries == 2 and h._rare is not None
    assert (h.watch_tries, h.watch_failed, h.blocked_by, h.recv) == (0, False, None, ())
    h.tries = 0  # back to the default, on the object made for it
    assert h.tries == 0
    h.blocked_by = "file[/a]"
    sema = (asyncio.Semaphore(1),)
    h.semaphores = sema
    h.received = {"x": 1}
    assert (h.blocked_by, h.semaphores, h.received) == ("file[/a]", sema, {"x": 1})
    h.blocked_by = None
    assert h.blocked_by is None and h.semaphores is sema
