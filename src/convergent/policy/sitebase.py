"""What the parts of the policy language see of one load (:class:`convergent.policy.lang.Site`),
so that they need not import it (imports point one way)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from yaml.nodes import Node

    from convergent.policy.entries import Link, Problems
    from convergent.policy.nodes import Values
    from convergent.policy.vars import Inputs

__all__ = ["SiteView"]


class SiteView(Protocol):
    """One load of a policy in the language."""

    problems: Problems
    inputs: Inputs
    scope: dict[str, Any]
    secrets: set[str]
    bundles: dict[str, Any]
    uses: dict[str, Node]
    links: list[Link]
    classes: Any
    last_shows: bool  # the last template rendered showed a secret

    def render(self, node: Node, scope: Any, owner: str | None = None) -> Node: ...

    def shifted_as(self, name: str, value: Any) -> None: ...

    def expand(
        self,
        node: Node,
        values: Values,
        scope: Any,
        clusters: tuple[str, ...] = (),
        depth: int = 0,
    ) -> None: ...
