"""Member -> vertex and member -> resource maps of a running plan, without a table each.

A plan's ``vertex_of`` and the exchange's ``members`` used to be dicts with one entry
per resource (~40 bytes each, ~8 MiB at 100,000 resources), although almost every
vertex is its own only member. These views store the group members alone and answer
for every other vertex from the dict that holds it already (the prepared graph's
vertices, the running workers); they read as the dicts did, in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from convergent.resources.group import Group

if TYPE_CHECKING:
    from convergent.resources.base import Resource

__all__ = ["MemberView", "VertexOf"]

D = TypeVar("D")


class VertexOf(Mapping[str, str]):
    """Member identity -> the vertex that runs it (a group's members -> the group;
    any other vertex -> itself). ``vertices``: the prepared graph's, never changed."""

    __slots__ = ("_grouped", "_len", "_vertices")

    def __init__(self, vertices: Mapping[str, Any]) -> None:
        self._vertices = vertices
        self._grouped: dict[str, str] = {}
        alone = 0
        for vid, payload in vertices.items():
            if isinstance(payload, Group):
                for member in payload.members:
                    self._grouped[member.id] = vid
            else:
                alone += 1
        self._len = alone + len(self._grouped)

    def __getitem__(self, mid: str) -> str:
        vid = self.get(mid)
        if vid is None:
            raise KeyError(mid)
        return vid

    @overload
    def get(self, mid: str, /) -> str | None: ...
    @overload
    def get(self, mid: str, default: D, /) -> str | D: ...

    def get(self, mid: str, default: Any = None, /) -> Any:
        vid = self._grouped.get(mid)
        if vid is not None:
            return vid
        payload = self._vertices.get(mid)
        if payload is None or isinstance(payload, Group):
            return default
        return mid

    def __contains__(self, mid: object) -> bool:
        return isinstance(mid, str) and self.get(mid) is not None

    def __iter__(self) -> Iterator[str]:
        for vid, payload in self._vertices.items():
            if isinstance(payload, Group):
                yield from (member.id for member in payload.members)
            else:
                yield vid

    def __len__(self) -> int:
        return self._len


class _Runs(Protocol):
    @property
    def resource(self) -> Resource[Any]: ...


class MemberView(Mapping[str, "Resource[Any]"]):
    """Member identity -> the running resource, over ``workers`` (vertex -> worker);
    only the members of groups are stored."""

    __slots__ = ("_grouped", "_len", "_workers")

    def __init__(self, workers: Mapping[str, _Runs]) -> None:
        self._workers = workers
        self._grouped: dict[str, Resource[Any]] = {}
        alone = 0
        for worker in workers.values():
            resource = worker.resource
            if isinstance(resource, Group):
                for member in resource.members:
                    self._grouped[member.id] = member
            else:
                alone += 1
        self._len = alone + len(self._grouped)

    def __getitem__(self, mid: str) -> Resource[Any]:
        found = self.get(mid)
        if found is None:
            raise KeyError(mid)
        return found

    @overload
    def get(self, mid: str, /) -> Resource[Any] | None: ...
    @overload
    def get(self, mid: str, default: D, /) -> Resource[Any] | D: ...

    def get(self, mid: str, default: Any = None, /) -> Any:
        member = self._grouped.get(mid)
        if member is not None:
            return member
        worker = self._workers.get(mid)
        if worker is None or isinstance(worker.resource, Group):
            return default
        return worker.resource

    def __contains__(self, mid: object) -> bool:
        return isinstance(mid, str) and self.get(mid) is not None

    def __iter__(self) -> Iterator[str]:
        for vid, worker in self._workers.items():
            resource = worker.resource
            if isinstance(resource, Group):
                yield from (member.id for member in resource.members)
            else:
                yield vid

    def __len__(self) -> int:
        return self._len
