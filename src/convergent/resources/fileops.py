"""Steps of a ``file`` write besides the write itself: ``validate`` on the temp file,
``backup`` of the old inode, and links put in place atomically. Every path is reached
through a directory descriptor (:class:`convergent.host.fs.At`)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from convergent.errors import ResourceError
from convergent.host import atomic, fs
from convergent.resources.filechange import FileChange

__all__ = [
    "BACKUP_TRIES",
    "backup",
    "before_commit",
    "discard",
    "hard_target",
    "put_link",
    "read_source",
    "same_file_system",
    "validate",
]

BACKUP_TRIES = 100  # names tried for a backup when others keep taking them
VALIDATE_SECONDS = 120.0


async def before_commit(
    rid: str,
    check: tuple[str, ...] | None,
    keep: bool,
    at: fs.At,
    fd: int,
    temp: str,
    change: FileChange,
) -> str | None:
    """Run ``validate`` (``check``) on the written temp file, then keep a backup of the
    file it replaces (``keep``); the summary naming the backup. On failure the temp file
    is closed and removed, ``at`` closed, and the file left as it was."""
    summary = None
    try:
        if check is not None:
            await validate(rid, check, at, fd, temp)
        if keep:
            kept = backup(at)
            if kept is not None:
                summary = f"{change.summary} (previous kept as {kept})"
    except BaseException:
        os.close(fd)
        discard(at, temp)
        at.close()
        raise
    return summary


async def validate(rid: str, argv: tuple[str, ...], at: fs.At, fd: int, temp: str) -> None:
    """Run ``argv`` with ``%s`` standing for the written temp file ``temp`` (next to
    ``at``); ResourceError with the command's output when it fails. The temp file is the
    agent's (private, or the final owner's and mode), so what is checked is what gets
    renamed into place: in a directory only root can write, nobody can swap it."""
    from convergent.host import process

    os.fsync(fd)
    where = f"{at.dir.rstrip('/')}/{temp}"
    command = [arg.replace("%s", where) for arg in argv]
    shown = " ".join(argv)
    try:
        done = await process.run(command, time_limit=VALIDATE_SECONDS)
    except OSError as exc:
        raise ResourceError(
            rid, f"validate: cannot run {argv[0]}: {exc.strerror}; install it or fix validate"
        ) from None
    except TimeoutError:
        raise ResourceError(
            rid, f"validate: {shown} ran over {VALIDATE_SECONDS:.0f} s; the file was left as it was"
        ) from None
    if done.code == 0:
        return
    output = (done.stdout.text() + done.stderr.text()).replace(where, "%s").strip()
    status = f"exited with {done.code}" if done.code > 0 else f"was killed by signal {-done.code}"
    raise ResourceError(
        rid,
        f"validate: {shown} {status}; the file was left as it was"
        + (f"\n{output}" if output else ""),
    )


def backup(at: fs.At) -> str | None:
    """Keep the file at ``at`` as ``NAME.~N~`` (N one more than the highest there): a hard
    link to the old inode, which the coming rename leaves alone, so no copy is made and
    the backup keeps the old owner and mode. None when there is no regular file."""
    st = fs.lstat(at)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    import re

    pattern = re.compile(re.escape(at.name) + r"\.~([0-9]+)~")
    listing = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=at.fd)
    try:
        names = os.listdir(listing)
    finally:
        os.close(listing)
    numbers = [int(m.group(1)) for n in names if (m := pattern.fullmatch(n))]
    number = max(numbers, default=0)
    for _ in range(BACKUP_TRIES):
        number += 1
        name = f"{at.name}.~{number}~"
        try:
            os.link(at.name, name, src_dir_fd=at.fd, dst_dir_fd=at.fd, follow_symlinks=False)
        except FileExistsError:
            continue
        return f"{at.dir.rstrip('/')}/{name}"
    raise fs.PathRefused(
        errno.EEXIST, f"no free backup name for {at.path} after {BACKUP_TRIES} tries"
    )


def discard(at: fs.At, temp: str) -> None:
    """Remove a temp file that will not be committed."""
    with contextlib.suppress(OSError):
        os.unlink(temp, dir_fd=at.fd)


def put_link(at: fs.At, target: str, *, hard: bool, tree: bool) -> None:
    """Make ``at`` a symlink to ``target`` (as given) or a hard link to the file at the
    absolute ``target``: made under a temp name, then renamed over the path, so the path
    is never missing. ``tree``: a directory there is removed first."""
    while True:
        temp = atomic.temp_name(at.name)
        try:
            if hard:
                with fs.locate(target) as source:
                    os.link(
                        source.name, temp, src_dir_fd=source.fd, dst_dir_fd=at.fd,
                        follow_symlinks=False,
                    )  # fmt: skip
            else:
                os.symlink(target, temp, dir_fd=at.fd)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise fs.PathRefused(
                    errno.EXDEV,
                    f"cannot hard link {at.path} to {target}: they are on different file "
                    "systems; use state: link (a symlink) or copy it with source",
                ) from None
            raise
    try:
        if tree:
            import shutil

            shutil.rmtree(at.name, dir_fd=at.fd)
        os.rename(temp, at.name, src_dir_fd=at.fd, dst_dir_fd=at.fd)
    finally:
        discard(at, temp)  # gone after a rename, unless both names were one inode already


def read_source(rid: str, source: str) -> bytes:
    """The bytes of the regular file ``source`` (followed by CHASE_SAFE rules)."""
    try:
        with fs.locate(source, follow=True) as at:
            return fs.read_regular(at)[0]
    except FileNotFoundError:
        raise ResourceError(
            rid, f"source {source} does not exist; create it or fix source"
        ) from None
    except fs.PathRefused as exc:
        hint = "; use state: directory to copy a tree" if "a directory" in exc.message else ""
        raise ResourceError(rid, f"source: {exc.message}{hint}") from None


def hard_target(rid: str, target: str) -> os.stat_result:
    """The hard link target's own stat: it must be a regular file."""
    try:
        with fs.locate(target) as at:
            st = fs.lstat(at)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if st is None:
        raise ResourceError(rid, f"target {target} does not exist; create it (and require it)")
    if not stat.S_ISREG(st.st_mode):
        raise ResourceError(
            rid,
            f"target {target} is a {fs.kind_name(st.st_mode)}; a hard link needs a regular "
            "file (use state: link for anything else)",
        )
    return st


def same_file_system(rid: str, path: str, target: str) -> None:
    """A hard link across file systems is refused before anything is made."""
    st = hard_target(rid, target)
    try:
        with fs.locate(path) as at:
            device = at.ident[0]
    except (FileNotFoundError, NotADirectoryError):
        return
    if device != st.st_dev:
        raise ResourceError(
            rid,
            f"cannot hard link {path} to {target}: they are on different file systems "
            "(a hard link cannot cross them); use state: link (a symlink) or copy it with source",
        )


def remove_path(rid: str, path: str, *, force: bool) -> None:
    """Remove what is at ``path`` (a non-empty directory only with ``force``)."""
    try:
        at = fs.locate(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    with at:
        try:
            fs.remove(at, tree=force)
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:  # filled since check
                raise
            raise ResourceError(
                rid,
                f"{path} is a directory that is not empty; set force: true to remove it "
                "with everything in it",
            ) from exc
