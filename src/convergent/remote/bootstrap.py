"""Putting convergent on a remote host and starting its agent there.

On the host, everything lives under ``$CONVERGENT_REMOTE_DIR`` (default
``~/.cache/convergent-remote``), made private (umask 077):

- ``dist/DIGEST/convergent.pyz``: the single file, keyed by its sha256. A run finds it
  there and copies nothing; ``--no-caching`` copies it anyway. A copy is written to a
  temporary name, its digest checked on the host, then renamed: never half a file, nor
  another file, under the name.
- ``hosts/NAME/policy/``: the policy files of host NAME, replaced atomically when the
  initiator's copy is saved (the agent reloads them as it reloads a saved policy).
- ``hosts/NAME/state/``: the agent's state directory; ``hosts/NAME/join-token``: its way
  into the world (0600; the same secret its state directory's ``tls/`` then holds).

:func:`start_script` is one round trip: the probe (python3 found, its version checked,
the files read from stdin written, the single file looked for), then the agent in the
same shell; it exits ``MISSING`` when the file must be copied first (:func:`copy_script`).
The agent stops when the initiator closes its standard input (or the connection ends),
unless detached.
"""

from __future__ import annotations

import json
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

from convergent.remote.urls import RemoteError

__all__ = [
    "MIN_PYTHON",
    "MISSING",
    "READY",
    "TOO_OLD",
    "Payload",
    "check_python",
    "copy_script",
    "files_script",
    "payload",
    "probe_input",
    "relay_script",
    "start_script",
]

MIN_PYTHON = (3, 11)
BASE = '"${CONVERGENT_REMOTE_DIR:-$HOME/.cache/convergent-remote}"'


@dataclass(frozen=True)
class Payload:
    """What the remote runs: the single file at ``path``, copied by its ``digest``."""

    path: Path
    digest: str
    size: int

    def launcher(self) -> str:
        """The shell words that start ``convergent`` on the host (after the probe set
        ``$PY`` and ``$D``)."""
        return f'"$PY" -I "$D/dist/{self.digest}/convergent.pyz"'


def payload() -> Payload:
    """The single file (built now, or found in its cache: :mod:`convergent.remote.dist`)."""
    from convergent.remote import dist

    path, digest = dist.find()
    return Payload(path, digest, path.stat().st_size)


READY, MISSING, TOO_OLD = 0, 10, 11  # the probe's exit statuses (see start_script)

_PROBE_PY = r"""
import os, sys
print("python", *sys.version_info[:2], sys.executable, flush=True)
if sys.version_info < (3, 11):
    sys.exit(11)
import json
base, digest, home, fresh = sys.argv[1:5]
def take(n):
    data = b""
    while len(data) < n:
        block = os.read(0, n - len(data))
        if not block:
            sys.exit("the files ended early")
        data += block
    return data
files = json.loads(take(int(take(32).split()[0])))  # "SIZE\n" padded to 32 bytes, JSON
for name, text in files.items():
    path = os.path.join(home, name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(temp, path)
print("wrote", len(files), flush=True)
cached = os.path.isfile(os.path.join(base, "dist", digest, "convergent.pyz"))
print("cached", cached, flush=True)
sys.exit(0 if cached and fresh == "0" else 10)
"""

_AGENT_PY = r"""
if not (cached and fresh == "0"):
    sys.exit(10)
gated, argv = sys.argv[5], sys.argv[6:]
if gated == "1":
    line = b""
    while not line.endswith(b"\n"):
        block = os.read(0, 1)
        if not block:
            sys.exit(0)
        line += block
os.makedirs(home, mode=0o700, exist_ok=True)
os.chdir(home)
import runpy, signal, threading
watched = os.dup(0)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
def ends():
    while os.read(watched, 4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=ends, daemon=True).start()
pyz = os.path.join(base, "dist", digest, "convergent.pyz")
print("agent", flush=True)
sys.argv = [pyz, *argv]
runpy.run_path(pyz, run_name="__main__")
"""
_START_PY = _PROBE_PY.replace('sys.exit(0 if cached and fresh == "0" else 10)\n', _AGENT_PY)

_VERIFY_PY = r"""
import hashlib, sys
got = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        got.update(block)
sys.exit(0 if got.hexdigest() == sys.argv[2] else "the copy is damaged: its digest differs")
"""


def start_script(
    payload: Payload, name: str, argv: list[str], *, fresh: bool, detach: bool, gated: bool = False
) -> tuple[str, str]:
    """One round trip that bootstraps and starts agent ``name`` (``convergent ARGV``),
    and the marker of the line that carries the agent's exit status (``MARKER STATUS``).

    First the probe: python3 found (or ``python none``), its version said (exit
    ``TOO_OLD`` when older than 3.11), the files read from stdin (:func:`probe_input`)
    written under ``hosts/NAME/``, and whether ``dist/DIGEST/convergent.pyz`` is there
    (exit ``MISSING`` when not, or when ``fresh``: copy it, then start again). Then the
    agent.

    ``gated``: after the probe, the agent waits for a line on stdin (``go``): a host
    that bootstraps hosts behind it starts its agent with theirs, so that none of them
    counts the whole set converged before the others joined. Stdin ending first: no
    agent (exit 0).

    Attached, the agent runs in the probe's own interpreter (one Python start per run,
    not two): the probe says ``agent``, then runs the single file (``runpy``) in
    ``hosts/NAME/`` with its stdin on /dev/null; a thread reads the session's stdin and
    sends the process SIGTERM when it ends (the initiator closed it, or the connection
    is gone); the shell then prints ``MARKER STATUS`` (a marker after no ``agent`` line
    is the probe's status). Detached, the agent runs in its own session, its output
    appended to ``hosts/NAME/agent.log``, and the line says its PID (``MARKER detached
    PID``)."""
    marker = f"convergent-exit-{secrets.token_hex(8)}"
    words = " ".join(shlex.quote(w) for w in argv)
    if not detach:
        return (
            f'umask 077; unset SSH_AUTH_SOCK; D={BASE}; H="$D/hosts/{name}"; '
            'PY="$(command -v python3)" || { echo "python none"; exit 0; }; '
            f'"$PY" -I -c {shlex.quote(_START_PY)} "$D" {shlex.quote(payload.digest)} "$H" '
            f'{int(fresh)} {int(gated)} {words}; rc=$?; echo "{marker} $rc"; exit $rc'
        ), marker
    head = (
        f'umask 077; unset SSH_AUTH_SOCK; D={BASE}; H="$D/hosts/{name}"; mkdir -p "$H" || exit 3; '
        'PY="$(command -v python3)" || { echo "python none"; exit 0; }; '
        f'"$PY" -I -c {shlex.quote(_PROBE_PY)} "$D" {shlex.quote(payload.digest)} "$H" '
        f'{int(fresh)} || exit $?; cd "$H" || exit 3; '
    )
    run = f"{payload.launcher()} {words}"
    if gated:
        head += f'read -r go || {{ echo "{marker} 0"; exit 0; }}; '
    body = f'setsid {run} </dev/null >>"$H/agent.log" 2>&1 & echo "{marker} detached $!"'
    return head + body, marker


def relay_script(payload: Payload, name: str, argv: list[str]) -> str:
    """Start ``convergent ARGV`` in ``hosts/NAME/`` from the single file the probe found
    there: the relay that bootstraps the hosts behind host NAME (it keeps the ssh agent
    the initiator forwarded, and stops when its stdin ends)."""
    words = " ".join(shlex.quote(w) for w in argv)
    return (
        f'umask 077; D={BASE}; H="$D/hosts/{name}"; cd "$H" || exit 3; '
        f'PY="$(command -v python3)" || exit 3; exec {payload.launcher()} {words}'
    )


def files_script(name: str) -> str:
    """Write the files read on stdin (:func:`probe_input`) under ``hosts/NAME/``, as the
    probe does (a saved policy, copied again)."""
    return (
        f'umask 077; D={BASE}; H="$D/hosts/{name}"; '
        'PY="$(command -v python3)" || exit 3; '
        f'"$PY" -I -c {shlex.quote(_PROBE_PY)} "$D" - "$H" 1 >/dev/null; '
        "[ $? = 10 ] && echo wrote"
    )


def copy_script(digest: str) -> str:
    """Read the single file on stdin into ``dist/DIGEST/convergent.pyz``: written under a
    temporary name, its digest checked, then renamed."""
    where = f'"$D/dist/{digest}"'
    temp = f"{where}/.convergent.pyz.$$"
    return (
        f'umask 077; D={BASE}; PY="$(command -v python3)" || exit 3; mkdir -p {where} && '
        f'cat > {temp} && "$PY" -I -c {shlex.quote(_VERIFY_PY)} {temp} {shlex.quote(digest)} '
        f"&& mv -f {temp} {where}/convergent.pyz || {{ rm -f {temp}; exit 1; }}"
    )


def probe_input(files: dict[str, str]) -> bytes:
    """The probe's stdin: the size of the files' JSON (padded to 32 bytes), then it."""
    data = json.dumps(files).encode()
    return f"{len(data)}\n".encode().ljust(32, b" ") + data


def check_python(name: str, probe: dict[str, str]) -> None:
    """RemoteError when the probe found no python3, or one too old."""
    need = ".".join(map(str, MIN_PYTHON))
    version = probe.get("python", "")
    if version in ("", "none"):
        raise RemoteError(
            f"{name}: no python3 on the host (convergent needs python3 >= {need} there "
            "and nothing else): install it, e.g. apt-get install python3"
        )
    major, minor, python = [*version.split(" ", 2), "", ""][:3]
    if (int(major), int(minor)) < MIN_PYTHON:
        raise RemoteError(
            f"{name}: {python or 'python3'} is Python {major}.{minor}; convergent needs "
            f"{need} or newer on the host: install a newer python3"
        )
