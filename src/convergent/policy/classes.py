"""Classes as contexts: hard classes from facts, ``classes:``, ``--class`` and ``if:``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yaml.nodes import Node

    from convergent.policy.nodes import Values
    from convergent.policy.sitebase import SiteView

__all__ = ["condition"]


def condition(site: SiteView, node: Node, values: Values) -> bool:
    """Whether the ``if:`` at ``node`` holds."""
    return True
