"""The cache the file extracts its compiled modules into is never one another user
prepared, and a first run killed while extracting leaves nothing the next one trips on.

A root run loads shared libraries from that cache: a directory or symlink another user
made at the cache path (before the run: in a world-writable sticky directory, the
``/tmp`` case) is refused, never followed or written into, and its code never loaded.
The hostile user is a forked child running as uid 65534 (tests/host/hostile.py).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from convergent.remote.dist_boot import NATIVE, TMP
from tests.dist import pyz as P
from tests.dist_support import built_pyz
from tests.host.hostile import NOBODY, lab, needs_root, run_as_nobody

pytestmark = [P.needs_system_python, pytest.mark.timeout(300)]


def _key(pyz: Path) -> str:
    """The cache key of the file's compiled modules (their SHA-256, in its manifest)."""
    import zipfile

    main = zipfile.ZipFile(pyz).read("__main__.py").decode()
    start = main.index("'sha256': '") + len("'sha256': '")
    return main[start : start + 64]


def _trap(shared: Path) -> Path:
    """A directory of the hostile user's with code that leaves a mark when imported."""

    def make() -> None:
        trap = shared / "trap"
        os.mkdir(trap, 0o777)
        (trap / "msgspec").mkdir()
        (trap / "msgspec" / "__init__.py").write_text(
            f"open({str(shared / 'pwned')!r}, 'w').close()\n"
        )

    run_as_nobody(make)
    return shared / "trap"


def _shared(tmp_path: Path) -> Path:
    shared = lab(tmp_path) / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # world-writable and sticky, as /tmp
    return shared


def _cache_symlink(shared: Path, trap: Path) -> Path:
    run_as_nobody(lambda: os.symlink(trap, shared / "cache"))
    return shared / "cache"


def _cache_dir_of_nobody(shared: Path, trap: Path) -> Path:
    def make() -> None:
        os.mkdir(shared / "cache", 0o777)
        os.symlink(trap, shared / "cache" / NATIVE)

    run_as_nobody(make)
    return shared / "cache"


def _native_symlink(shared: Path, trap: Path) -> Path:
    cache = shared.parent / "rootcache"
    cache.mkdir(mode=0o755)
    (cache / NATIVE).symlink_to(trap)
    return cache


def _native_of_nobody(shared: Path, trap: Path) -> Path:
    cache = shared.parent / "rootcache"
    cache.mkdir(mode=0o755)
    os.chown(trap, NOBODY, NOBODY)
    trap.rename(cache / NATIVE)  # a directory of nobody's where the cache keeps its own
    return cache


def _key_of_nobody(shared: Path, trap: Path) -> Path:
    cache = shared.parent / "rootcache"
    (cache / NATIVE).mkdir(parents=True, mode=0o700)
    trap.rename(cache / NATIVE / _key(built_pyz()))  # nobody's "extraction", with code
    return cache


CASES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "cache path is nobody's symlink": (_cache_symlink, "is a symlink owned by uid 65534"),
    "cache path is nobody's directory": (_cache_dir_of_nobody, "belongs to uid 65534"),
    "native is a symlink": (_native_symlink, "is a symlink"),
    "native is nobody's directory": (_native_of_nobody, "belongs to uid 65534"),
    "the extraction is nobody's": (_key_of_nobody, "belongs to uid 65534"),
}


@needs_root
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cache_another_user_prepared_is_refused_never_followed(
    tmp_path: Path, case: str
) -> None:
    prepare, said = CASES[case]
    shared = _shared(tmp_path)
    trap = _trap(shared)
    before = sorted(p.name for p in trap.rglob("*")) if trap.exists() else None
    cache = prepare(shared, trap)
    cwd = tmp_path / "empty"
    cwd.mkdir()

    done = P.run(built_pyz(), "--version", cwd=cwd, cache=cache)

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("convergent.pyz: /") and said in done.stderr, done.stderr
    assert "set $CONVERGENT_CACHE_DIR" in done.stderr or "rm " in done.stderr  # the fix
    assert not (shared / "pwned").exists()  # the trap's code never ran
    for left in (trap, cache / NATIVE / _key(built_pyz())):
        if left.exists() and left.is_dir() and before is not None:
            assert sorted(p.name for p in left.rglob("*")) == before  # nothing written


# -- kill -9 during the first extraction -----------------------------------------------------

_IN_CREATE = 0x00000100
_EVENT = struct.Struct("iIII")


def _kill_when_created(proc: subprocess.Popen[str], base: Path, name: str) -> str:
    """SIGKILL ``proc`` once the directory ``name`` is created inside the ``.tmp-``
    directory its extraction makes in ``base``; return that directory's name."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(base), _IN_CREATE) >= 0
        tmp = ""
        deadline = time.monotonic() + P.TIMEOUT
        while time.monotonic() < deadline:
            if tmp and (base / tmp / name).exists():  # made before the watch was set
                proc.send_signal(signal.SIGKILL)
                return tmp
            if not select.select([fd], [], [], deadline - time.monotonic())[0]:
                break
            data = os.read(fd, 65536)
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                got = raw.rstrip(b"\0").decode()
                if not tmp and got.startswith(TMP):
                    tmp = got
                    assert libc.inotify_add_watch(fd, os.fsencode(base / tmp), _IN_CREATE) >= 0
                elif tmp and got == name:
                    proc.send_signal(signal.SIGKILL)
                    return tmp
        raise AssertionError(f"no {name} was created in a {TMP} directory of {base}")
    finally:
        os.close(fd)


def test_a_first_run_killed_while_extracting_is_repaired_by_the_next(tmp_path: Path) -> None:
    """The kill lands when the extraction has made ``grpc/``: cryptography's library is
    written, grpc's (the largest) and the rename to the final name are still to come."""
    pyz = built_pyz()
    cache = tmp_path / "cache"
    base = cache / NATIVE
    base.mkdir(parents=True, mode=0o700)
    cwd = tmp_path / "empty"
    cwd.mkdir()
    proc = subprocess.Popen(
        [P.SYSTEM_PYTHON, "-I", str(pyz), "--version"],
        cwd=cwd,
        env=P.bare_env(cache, cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tmp = _kill_when_created(proc, base, "grpc")
        out, _ = proc.communicate(timeout=P.TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=P.TIMEOUT)
    assert proc.returncode == -signal.SIGKILL and out == ""
    key = _key(pyz)
    assert sorted(os.listdir(base)) == [tmp]  # half an extraction, never under its key
    assert (base / tmp / "cryptography").is_dir()

    done = P.run(pyz, "--version", cwd=cwd, cache=cache)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("convergent ")
    assert sorted(os.listdir(base)) == [key]  # the leftover removed, the whole one in place
    assert (base / key / "grpc").is_dir()


def test_first_runs_at_once_share_one_extraction(tmp_path: Path) -> None:
    pyz = built_pyz()
    cache = tmp_path / "cache"
    cwd = tmp_path / "empty"
    cwd.mkdir()
    procs = [
        subprocess.Popen(
            [P.SYSTEM_PYTHON, "-I", str(pyz), "--version"],
            cwd=cwd,
            env=P.bare_env(cache, cwd),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=P.TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    assert sorted(os.listdir(cache / NATIVE)) == [_key(pyz)]
