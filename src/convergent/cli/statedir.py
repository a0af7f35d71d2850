"""Where convergent keeps its own state on this host: kept for the CLI's imports; the
state layer (:mod:`convergent.state.statedir`) opens, locks and checks the directory."""

from __future__ import annotations

from convergent.state.statedir import default_state_dir, ensure_state_dir

__all__ = ["default_state_dir", "ensure_state_dir"]
