"""Resources: one module per kind; ``base`` holds the contract and the registry."""

from convergent.resources.abilities import Refreshable
from convergent.resources.base import (
    Change,
    Context,
    Meta,
    Params,
    Resource,
    get_kind,
    kinds,
)

__all__ = [
    "Change",
    "Context",
    "Meta",
    "Params",
    "Refreshable",
    "Resource",
    "get_kind",
    "kinds",
]
