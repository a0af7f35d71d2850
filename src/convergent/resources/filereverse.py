"""Reversal for ``file`` (``meta: {reverse: true}``).

Before the first change the engine calls ``record_reverse``, which keeps in the state
database either "created" (nothing was at the path) or what was there: a regular file's
content, mode, owner and group, or a directory's mode, owner and group. When the
resource leaves the graph, ``reverse`` removes what it created or puts the recorded
content and metadata back (through descriptors: a symlink that has taken the
directory's place is refused, never followed), then forgets the record. A symlink or
special file it replaced is not recorded, and so not restored.
"""

from __future__ import annotations

import os
import stat
from typing import Protocol

from convergent.errors import ResourceError
from convergent.host import fs, posix
from convergent.resources.base import Change, Context
from convergent.resources.filechange import FileChange

__all__ = ["ReversedFile", "plan_reverse", "record_reverse", "reverse"]


class ReversedFile(Protocol):
    """What reversal needs of a ``file`` resource (not an ability: those are the protocols
    of :mod:`convergent.resources.abilities`, ``Reversible`` among them)."""

    @property
    def id(self) -> str: ...

    @property
    def path(self) -> str: ...

    def remove_path(self) -> None: ...

    async def write(self, ctx: Context, change: FileChange) -> str | None: ...

    def error(self, exc: fs.PathRefused | posix.NoSuchName) -> ResourceError: ...


def _record(res: ReversedFile, ctx: Context) -> str | None:
    """The reversal record (the state database's own table, out of reach of ``kv``)."""
    return None if ctx.state is None else ctx.state.get_reversal(res.id)


def _keep(res: ReversedFile, ctx: Context, record: str | None) -> None:
    if ctx.state is not None:
        ctx.state.set_reversal(res.id, record)


def record_reverse(res: ReversedFile, ctx: Context, change: Change) -> None:
    """Keep how to undo the first change (later changes keep the first record)."""
    if ctx.state is None or ctx.state.readonly or _record(res, ctx) is not None:
        return
    if isinstance(change, FileChange) and change.action == "refuse":
        return  # apply fails without changing anything: nothing to undo
    try:
        with fs.locate(res.path) as at:
            st = fs.lstat(at)
            if st is not None and stat.S_ISREG(st.st_mode):
                data, st = fs.read_regular(at)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except fs.PathRefused as exc:
        raise res.error(exc) from None
    if st is None:
        _keep(res, ctx, "created")
        return
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        return
    import json

    record: dict[str, object] = {
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }
    if stat.S_ISREG(st.st_mode):
        import base64

        record["content"] = base64.b64encode(data).decode()
    _keep(res, ctx, json.dumps(record))


def plan_reverse(res: ReversedFile, ctx: Context) -> str | None:
    """What :func:`reverse` would do (read only), or None."""
    record = _record(res, ctx)
    if record is None:
        return None
    if record != "created":
        return f"restore {res.path}"
    try:
        with fs.locate(res.path) as at:
            return f"remove {res.path}" if fs.lstat(at) is not None else None
    except (FileNotFoundError, NotADirectoryError):
        return None


async def reverse(res: ReversedFile, ctx: Context) -> str | None:
    """Undo what the resource did (see above); None when there is nothing to undo."""
    record = _record(res, ctx)
    if record is None:
        return None
    summary: str | None = None
    try:
        if record == "created":
            if plan_reverse(res, ctx) is not None:
                res.remove_path()
                summary = "removed"
        else:
            import json

            saved = json.loads(record)
            mode, uid, gid = saved["mode"], saved["uid"], saved["gid"]
            if "content" in saved:
                import base64

                data = base64.b64decode(saved["content"])
                await res.write(ctx, FileChange("restored", None, "write", data, mode, uid, gid))
                summary = "restored content, mode and owner"
            else:
                with fs.locate(res.path) as at:
                    fd, _ = fs.open_node(at, directory=True)
                    try:
                        fs.set_meta(fd, mode, uid, gid)
                    finally:
                        os.close(fd)
                summary = "restored mode and owner"
    except fs.PathRefused as exc:
        raise res.error(exc) from None
    _keep(res, ctx, None)
    return summary
