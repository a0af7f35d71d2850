"""Where convergent keeps its own state on this host (the state database lives there)."""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["default_state_dir", "ensure_state_dir"]


def default_state_dir(uid: int | None = None, env: Mapping[str, str] | None = None) -> str:
    """``/var/lib/convergent`` for root, else ``$XDG_STATE_HOME/convergent`` or
    ``~/.local/state/convergent`` (a relative ``XDG_STATE_HOME`` is ignored, as the XDG
    specification says)."""
    uid = os.geteuid() if uid is None else uid
    env = os.environ if env is None else env
    if uid == 0:
        return "/var/lib/convergent"
    base = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".local", "state")
    return os.path.join(base, "convergent")


def ensure_state_dir(path: str) -> str:
    """Create ``path`` (mode 0700, parents as needed) unless it is already a directory.

    An existing directory is left as it is. Raises OSError when it cannot be created or
    exists and is not a directory.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(20, "exists and is not a directory", path) from None
        return path
    os.chmod(path, 0o700)  # exactly 0700, whatever the umask
    return path
