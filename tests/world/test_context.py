"""``ctx.world``: the world whoever builds the Context gives, else one local world per run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from convergent.resources.base import Context
from convergent.state import StateDB
from convergent.world.local import LocalWorld


def _services() -> Callable[[Callable[[], Any]], Any]:
    """``ctx.shared`` as an engine run gives it: one instance per factory."""
    made: dict[Callable[[], Any], Any] = {}

    def shared(factory: Callable[[], Any]) -> Any:
        if factory not in made:
            made[factory] = factory()
        return made[factory]

    return shared


def _ctx(rid: str, shared: Callable[[Callable[[], Any]], Any], **kwargs: Any) -> Context:
    return Context(rid, ready=lambda: None, event=lambda: None, log=print, shared=shared, **kwargs)


def test_every_resource_of_a_run_gets_the_same_local_world_over_its_state(
    tmp_path: Path,
) -> None:
    with StateDB(tmp_path / "state.db") as db:
        shared = _services()
        one, two = _ctx("kv[a]", shared, state=db), _ctx("kv[b]", shared, state=db)
        assert isinstance(one.world, LocalWorld)
        assert one.world is two.world
        assert one.world.durable
        other_run = _ctx("kv[a]", _services(), state=db)
        assert other_run.world is not one.world


def test_a_context_without_state_gets_a_world_in_memory() -> None:
    world = _ctx("kv[a]", _services()).world
    assert isinstance(world, LocalWorld) and not world.durable


def test_a_given_world_is_used_and_reaches_a_group_s_members() -> None:
    given = LocalWorld()
    ctx = _ctx("autogroup[noop:a,b]", _services(), world=given)
    member = ctx.for_member("noop[a]", ready=lambda: None, log=print)
    assert ctx.world is given and member.world is given
    assert member.id == "noop[a]"
