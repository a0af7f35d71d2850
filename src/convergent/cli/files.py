"""Writing the files the command line itself installs (a unit file, a schema, a man page).

:func:`emit` prints a command's text or writes it to ``--output``; :func:`write_text`
writes a whole file atomically through the host layer
(``convergent.host.atomic.write_file``), so a reader (systemd, an editor) sees the old
file or the new one, never half of one: a private temp file next to the target, fsynced,
renamed over it (a symlink there is replaced, not followed).
"""

from __future__ import annotations

__all__ = ["emit", "write_text"]


def write_text(path: str, text: str, *, mode: int | None = 0o644) -> None:
    """Replace ``path`` by a file holding ``text`` (UTF-8) with permission bits ``mode``
    (None: 0666 less the umask).

    The directory must exist. A symlink at ``path`` is replaced, not followed. A
    relative path is the working directory's (the host layer takes paths from /).
    """
    import os

    from convergent.host.atomic import write_file

    write_file(os.path.abspath(path), text.encode("utf-8"), mode=mode)


def emit(text: str, output: str | None, *, mode: int | None = 0o644) -> int:
    """Print ``text`` (``output`` None or ``-``) or write it to ``output`` atomically.

    Returns the exit code: 0, or 1 after saying why the file could not be written.
    """
    import sys

    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        write_text(output, text, mode=mode)
    except OSError as exc:
        from convergent.render import say

        say(f"convergent: cannot write {output}: {exc.strerror or exc}")
        return 1
    return 0
