"""The single file: ``convergent.pyz``, convergent that runs with nothing but ``python3``.

::

    from convergent.remote import dist

    path = dist.build()                  # cached: CACHE/build/convergent-KEY.pyz
    dist.build(Path("dist/convergent.pyz"))
    dist.digest(path)                    # its SHA-256, what a remote host keys it by
    dist.find()                          # (path, digest), checked quickly: run --remote

    python -m convergent.remote.dist -o dist/convergent.pyz     # make dist

The file is a zip application (a ``#!/usr/bin/env python3`` line, then a zip):

- ``__main__.py``: the manifest, a Python version check any Python can read, then
  :func:`convergent.remote.dist_boot.prepare`, then the command line;
- convergent and its pure-Python dependencies, as sources (compressed: read only for
  tracebacks) and bytecode (stored: inflating it cost a 10-file run ~10 ms more than
  the 3 MB it adds), imported from the file by zipimport;
- ``_native/ABI.zip``: the distributions with shared libraries (msgspec, PyYAML's
  libyaml loader, grpcio, protobuf, cryptography, cffi, dbus-fast) for the ABI of the
  Python that built it, extracted once per host into a private cache directory.

What goes in is :mod:`convergent.remote.dist_files`'s; the design and its figures are
in docs/single-file.md. A build is deterministic: the same installed files give the same
bytes (fixed time stamps, sorted members, hash-based bytecode), so the same digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convergent.remote.dist_boot import (
    NATIVE,
    DistError,
    abi_tag,
    cache_root,
    describe_abi,
    private_dir,
)

__all__ = ["BUILD", "LATEST", "DistError", "build", "digest", "find", "main", "running_file"]

BUILD = "build"  # CACHE/build/convergent-KEY.pyz: the files build() made
LATEST = "latest.json"  # CACHE/build/latest.json: what find() found last (see there)
_SHEBANG = b"#!/usr/bin/env python3\n"
_STAMP = (1980, 1, 1, 0, 0, 0)
_LEVEL = 6
_MAIN = """\
# {name}: convergent {version}, a single file; run it with python3 (>= 3.11), e.g.
#   python3 {name} run site.yaml
# Its compiled modules are for {described}. See docs/single-file.md.
import sys

ABIS = {abis!r}
TOPS = {tops!r}
if sys.version_info < (3, 11):
    sys.stderr.write(
        "%s: needs Python 3.11 or newer ({described}); %s is Python %s. "
        "Install python3 >= 3.11 and run the file with it\\n"
        % (
            __file__.rpartition("/")[0].rpartition("/")[2] or "{name}",
            sys.executable or "python3",
            sys.version.split()[0],
        )
    )
    sys.exit(2)
from convergent.remote.dist_boot import prepare  # noqa: E402

prepare(__file__.rpartition("/")[0], ABIS, TOPS)
from convergent.cli.main import entry  # noqa: E402

entry()
"""
_memo: dict[str, Path] = {}
_PACKAGE = Path(__file__).resolve().parents[1]  # dist_files.PACKAGE, without importing it

if TYPE_CHECKING:  # what a build reads; imported only when one is made
    from convergent.remote import dist_files


def digest(path: Path) -> str:
    """The SHA-256 (hex) of the file at ``path``: what a remote host keys its copy by."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def running_file() -> Path | None:
    """The single file this convergent runs from (None: an installed package)."""
    loader = getattr(__spec__, "loader", None)  # this module's: zipimport's in the file
    archive = getattr(loader, "archive", None)
    return Path(archive) if isinstance(archive, str) else None


def build(out: Path | None = None) -> Path:
    """Build the single file from this interpreter's convergent and its dependencies;
    return its path.

    ``out``: where to write it (atomically, mode 0755, parent directories made). None:
    into ``CACHE/build`` (see ``dist_boot.cache_root``), named by a fingerprint of what
    it is built from; a second call finds it there and builds nothing. When convergent
    itself runs from a single file, that file is the build (copied to ``out``).
    Raises :class:`DistError` (not installed, unsafe cache directory) or OSError.
    """
    running = running_file()
    if running is not None:
        if out is None:
            return running
        _write(out, running.read_bytes())
        return out
    from convergent.remote import dist_files

    return _build(dist_files.collect(), out)


def _build(parts: dist_files.Parts, out: Path | None = None) -> Path:
    from convergent.remote import dist_files

    if out is not None:
        _write(out, archive(parts))
        return out
    key = dist_files.fingerprint(parts)
    memo = _memo.get(key)
    if memo is not None and memo.is_file():
        return memo
    where = f"{cache_root()}/{BUILD}"
    os.close(private_dir(where, private=1))
    target = Path(where, f"convergent-{key[:32]}.pyz")
    if not target.is_file() or target.is_symlink():
        _write(target, archive(parts))
    _memo[key] = target
    return target


def find() -> tuple[Path, str]:
    """The single file :func:`build` gives and its SHA-256, as ``run --remote`` needs
    them on every run, without collecting the distributions again (a tenth of a second
    of CPU) nor hashing the file again when nothing changed.

    ``CACHE/build/latest.json`` (private, as the cache) names the last build, its digest,
    the file's size, modification time and inode, and the files it was built from other
    than convergent's own. It holds when a stamp of convergent's modules (every ``.py``
    file of the package: name, size, modification time) and of those files (path, size,
    modification time) is the one it recorded, with the same interpreter: what
    :func:`convergent.remote.dist_files.fingerprint` hashes (its ``FORMAT`` lives in a
    module of the package), so the same answer as :func:`build`; otherwise this builds
    (or finds) the file and records it again."""
    running = running_file()
    if running is not None:
        return running, digest(running)
    where = f"{cache_root()}/{BUILD}"
    os.close(private_dir(where, private=1))
    latest = Path(where, LATEST)
    memo = _read_latest(latest)
    if memo is not None:
        path = Path(where, str(memo.get("file", "")))
        listed = memo.get("deps")
        deps = (
            listed if isinstance(listed, list) and all(isinstance(d, str) for d in listed) else []
        )
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            st = None
        if (
            st is not None
            and "/" not in str(memo.get("file", "/"))
            and memo.get("stat") == [st.st_size, st.st_mtime_ns, st.st_ino]
            and deps
            and memo.get("stamp") == _stamp(deps)
        ):
            return path, str(memo["digest"])
    from convergent.remote import dist_files

    parts = dist_files.collect()
    path = _build(parts)
    sha = digest(path)
    package = f"{_PACKAGE}/"
    deps = sorted(
        str(src.path)
        for src in (*parts.pure, *parts.native)
        if not str(src.path).startswith(package)
    )
    st = path.stat()
    record = {
        "file": path.name,
        "digest": sha,
        "stat": [st.st_size, st.st_mtime_ns, st.st_ino],
        "stamp": _stamp(deps),
        "deps": deps,
    }
    _write(latest, json.dumps(record).encode(), mode=0o600)
    return path, sha


def _read_latest(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            data = json.loads(f.read(1 << 24))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stamp(deps: list[str]) -> str:
    """A hash of the interpreter, convergent's modules and the files ``deps``."""
    h = hashlib.sha256()
    h.update(f"{sys.version}\0{sys.executable}\0".encode())
    h.update(f"{shutil.which('strip')}\0".encode())
    for top, dirs, files in os.walk(_PACKAGE):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(top, name))
                h.update(f"{top}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update(b"\1")
    for dep in deps:
        try:
            st = os.stat(dep)
        except OSError:
            h.update(f"{dep}\0-\0".encode())
            continue
        h.update(f"{dep}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _write(out: Path, data: bytes, mode: int = 0o755) -> None:
    from convergent.host import atomic

    path = Path(os.path.abspath(out))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_file(str(path), data, mode=mode)


def archive(parts: dist_files.Parts) -> bytes:
    """The bytes of the single file holding ``parts``."""
    import io

    from convergent.remote import dist_files

    tag = abi_tag()
    native = _zip(_native_members(parts))
    member = f"_{NATIVE}/{tag}.zip"
    entry: dict[str, object] = {
        "member": member,
        "sha256": hashlib.sha256(native).hexdigest(),
        "dists": sorted(parts.native_dists),
    }
    if parts.glibc is not None:
        entry["glibc"] = list(parts.glibc)
    glibc = ".".join(map(str, parts.glibc)) if parts.glibc else ""
    main = _MAIN.format(
        name="convergent.pyz",
        version=dist_files.version(),
        described=describe_abi(tag) + (f", glibc >= {glibc}" if glibc else ""),
        abis={tag: entry},
        tops=_tops(parts),
    )
    members: list[tuple[str, bytes]] = [("__main__.py", main.encode())]
    for src in parts.pure:
        data = src.path.read_bytes()
        members.append((src.name, data))
        if src.name.endswith(".py"):
            pyc = dist_files.compiled(data, f"convergent.pyz/{src.name}")
            members.append((src.name + "c", pyc))
    members.append((member, native))
    out = io.BytesIO()
    out.write(_SHEBANG)
    stored = frozenset({member, *(name for name, _ in members if name.endswith(".pyc"))})
    out.write(_zip(members, stored=stored))
    return out.getvalue()


def _tops(parts: dist_files.Parts) -> list[str]:
    """The top-level modules the file carries (``yaml``, ``_cffi_backend``...)."""
    names = set()
    for src in (*parts.pure, *parts.native):
        top = src.name.partition("/")[0]
        if not top.endswith(".dist-info"):
            names.add(top.partition(".")[0])
    return sorted(names)


def _native_members(parts: dist_files.Parts) -> list[tuple[str, bytes]]:
    from convergent.remote import dist_files

    members: list[tuple[str, bytes]] = []
    cache_tag = sys.implementation.cache_tag
    for src in parts.native:
        if src.name.endswith(".so"):
            members.append((src.name, dist_files.stripped(src.path)))
            continue
        data = src.path.read_bytes()
        members.append((src.name, data))
        if src.name.endswith(".py"):
            head, _, file = src.name.rpartition("/")
            pyc = f"{head}/__pycache__/{file[:-3]}.{cache_tag}.pyc".lstrip("/")
            members.append((pyc, dist_files.compiled(data, src.name)))
    return members


def _zip(members: list[tuple[str, bytes]], stored: frozenset[str] = frozenset()) -> bytes:
    """A deterministic zip of ``members``: sorted, fixed time stamps and modes."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_STAMP)
            info.create_system = 3  # unix: the mode below counts
            info.external_attr = 0o100644 << 16
            if name in stored:
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, data)
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data, compresslevel=_LEVEL)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """``python -m convergent.remote.dist [-o FILE]``: build, say where, how big, and
    its SHA-256."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m convergent.remote.dist",
        description="Build convergent.pyz: convergent as one file that runs with python3 only.",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="where to write it (default: the build cache, named by what it holds)",
    )
    args = parser.parse_args(argv)
    try:
        path = build(args.output)
    except DistError as exc:
        print(f"convergent.remote.dist: {exc}", file=sys.stderr)
        return 2
    size = path.stat().st_size
    print(f"{path}: {size / 1e6:.1f} MB, sha256 {digest(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
