"""The host's own durable state (SQLite): pending notifications, secrets, key-values."""

from convergent.state.db import SCHEMA_VERSION, STATE_DB, StateDB, StateError, open_state

__all__ = ["SCHEMA_VERSION", "STATE_DB", "StateDB", "StateError", "open_state"]
