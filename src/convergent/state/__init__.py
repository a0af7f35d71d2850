"""The host's own durable state (SQLite): pending notifications, secrets, key-values,
reversal records; the state directory that holds it (one agent at a time, never silently
recreated, backed up)."""

from convergent.state.db import (
    SCHEMA_VERSION,
    STATE_DB,
    StateBusy,
    StateDamaged,
    StateDB,
    StateError,
    open_state,
)
from convergent.state.statedir import StateDir, default_state_dir, open_state_dir

__all__ = [
    "SCHEMA_VERSION",
    "STATE_DB",
    "StateBusy",
    "StateDB",
    "StateDamaged",
    "StateDir",
    "StateError",
    "default_state_dir",
    "open_state",
    "open_state_dir",
]
