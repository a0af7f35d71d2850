"""The host's own durable state (SQLite): pending notifications, secrets, key-values."""

from convergent.state.db import SCHEMA_VERSION, StateDB, StateError

__all__ = ["SCHEMA_VERSION", "StateDB", "StateError"]
