"""``StateDB``: one SQLite database under the state directory (placeholder API)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["StateDB"]


class StateDB:
    """The agent's durable state. Every write is committed before the call returns."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- pending refresh notifications: written before the sender is done -----------
    def add_refreshes(self, sender: str, receivers: Iterable[str]) -> None:
        raise NotImplementedError

    def pending_refreshes(self) -> dict[str, set[str]]:
        """receiver -> senders whose refresh it has not handled yet."""
        raise NotImplementedError

    def remove_refreshes(self, receiver: str, senders: Iterable[str]) -> None:
        raise NotImplementedError

    # -- secrets (password kind) and key-values (kv kind) ------------------------------
    def get_secret(self, resource: str) -> str | None:
        raise NotImplementedError

    def set_secret(self, resource: str, value: str) -> None:
        raise NotImplementedError

    def get_kv(self, key: str) -> str | None:
        raise NotImplementedError

    def set_kv(self, key: str, value: str | None) -> None:
        raise NotImplementedError
