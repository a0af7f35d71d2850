"""The host's own durable state (SQLite): pending notifications, secrets, key-values."""

from convergent.state.db import StateDB

__all__ = ["StateDB"]
