"""The cyclic garbage collector stays off through a run's first pass and is on from its
first convergence (or after a bound, for a run that never converges): its collections
during the first pass cost more than linear time at 50,000 files."""

from __future__ import annotations

import asyncio
import gc

from convergent.cli import run
from convergent.engine.report import Converged, Log, Report


def test_the_collector_is_off_until_the_first_convergence_then_on() -> None:
    was = gc.isenabled()
    seen: list[Report] = []

    async def main() -> tuple[bool, bool]:
        gc.disable()
        report = run._collect_after_first_pass(seen.append)
        report(Log("file[/x]", "working"))
        during = gc.isenabled()
        report(Converged(0, 0))
        return during, gc.isenabled()

    try:
        assert asyncio.run(main()) == (False, True)
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [Log("file[/x]", "working"), Converged(0, 0)]  # every record passed on


def test_a_run_that_never_converges_turns_the_collector_on_after_the_bound() -> None:
    was = gc.isenabled()
    bound = run.FIRST_PASS_BOUND

    async def main() -> bool:
        gc.disable()
        loop = asyncio.get_running_loop()
        run._collect_after_first_pass(lambda record: None)
        after = loop.create_future()  # a timer due after the bound's: runs after it
        loop.call_later(0.001, after.set_result, None)
        await asyncio.wait_for(after, 5)
        return gc.isenabled()

    run.FIRST_PASS_BOUND = 0.0
    try:
        assert asyncio.run(main())
    finally:
        run.FIRST_PASS_BOUND = bound
        (gc.enable if was else gc.disable)()


def test_what_lives_at_the_first_convergence_is_not_walked_by_later_collections() -> None:
    """An agent on 100,000 files holds ~1.2 million tracked objects once converged: a
    full collection over them took about a second, a stall in the drift repair that
    happened to run into it. They are frozen at the first convergence."""
    was = gc.isenabled()
    made_in_the_first_pass: list[list[int]] = []

    async def main() -> None:
        gc.disable()
        report = run._collect_after_first_pass(lambda record: None)
        made_in_the_first_pass.append([1, 2, 3])
        report(Converged(0, 0))

    try:
        asyncio.run(main())
        held = made_in_the_first_pass[0]
        assert not any(obj is held for obj in gc.get_objects())  # frozen: out of every gen
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


def test_a_run_that_ends_at_its_convergence_leaves_the_collector_off() -> None:
    """``--converged-timeout 0``: the process ends right after; a collection then would
    only scan the first pass's objects once more."""
    was = gc.isenabled()
    seen: list[Report] = []

    async def main() -> bool:
        gc.disable()
        report = run._collect_after_first_pass(seen.append, ends=True)
        report(Converged(0, 0))
        return gc.isenabled()

    try:
        assert asyncio.run(main()) is False
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [Converged(0, 0)]
