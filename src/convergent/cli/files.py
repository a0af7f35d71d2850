"""Writing the files the command line itself installs (a unit file, a schema, a man page).

One helper: :func:`write_text` writes a whole file atomically through the host layer
(``convergent.host.atomic.write_file``), so a reader (systemd, an editor) sees the old
file or the new one, never half of one: a private temp file next to the target, fsynced,
renamed over it (a symlink there is replaced, not followed).
"""

from __future__ import annotations

__all__ = ["write_text"]


def write_text(path: str, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` by a file holding ``text`` (UTF-8) with permission bits ``mode``.

    The directory must exist. A symlink at ``path`` is replaced, not followed.
    """
    from convergent.host.atomic import write_file

    write_file(path, text.encode("utf-8"), mode=mode)
