"""Putting convergent on a remote host and starting its agent there.

On the host, everything lives under ``$CONVERGENT_REMOTE_DIR`` (default
``~/.cache/convergent-remote``), made private (umask 077):

- ``dist/DIGEST/convergent.pyz``: the single file, keyed by its sha256. A run finds it
  there (its digest checked) and copies nothing; ``--no-caching`` copies it anyway. The
  copy is written to a temporary name and renamed: never half a file under the name.
- ``hosts/NAME/policy/``: the policy files of host NAME, replaced atomically when the
  initiator's copy is saved (the agent reloads them as it reloads a saved policy).
- ``hosts/NAME/state/``: the agent's state directory; ``hosts/NAME/join-token``: its way
  into the world (0600; the same secret its state directory's ``tls/`` then holds).

One round trip (:data:`PROBE`) finds python3 (>= 3.11), checks the cached file and writes
the policy files; a second copies the single file when needed; a third starts the agent
(:func:`agent_script`), which stops when the initiator closes its standard input (or
the connection ends), unless detached.
"""

from __future__ import annotations

import json
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MIN_PYTHON",
    "Payload",
    "agent_script",
    "copy_script",
    "payload",
    "probe_input",
    "probe_script",
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

    path = Path(dist.build())
    return Payload(path, dist.digest(path), path.stat().st_size)


_PROBE_PY = r"""
import sys
print("python", *sys.version_info[:2], sys.executable, flush=True)
if sys.version_info < (3, 11):
    sys.exit(0)
import hashlib, json, os
base, digest, home = sys.argv[1:4]
got = hashlib.sha256()
try:
    with open(os.path.join(base, "dist", digest, "convergent.pyz"), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            got.update(block)
    print("cached", got.hexdigest() == digest)
except OSError:
    print("cached", False)
files = json.loads(sys.stdin.buffer.read())
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
"""


def probe_script(digest: str, name: str) -> str:
    """Find python3, say its version, whether ``dist/DIGEST`` holds the right file, and
    write the JSON object of files (path under ``hosts/NAME/`` -> text) read on stdin."""
    return (
        f'umask 077; D={BASE}; H="$D/hosts/{name}"; mkdir -p "$H" || exit 3; '
        'PY="$(command -v python3)" || { echo "python none"; exit 0; }; '
        f'exec "$PY" -I -c {shlex.quote(_PROBE_PY)} "$D" {shlex.quote(digest)} "$H"'
    )


def copy_script(digest: str) -> str:
    """Read the single file on stdin into ``dist/DIGEST/convergent.pyz`` (atomically)."""
    where = f'"$D/dist/{digest}"'
    return (
        f"umask 077; D={BASE}; mkdir -p {where} && "
        f"cat > {where}/.convergent.pyz.$$ && mv -f {where}/.convergent.pyz.$$ "
        f"{where}/convergent.pyz"
    )


def agent_script(
    payload: Payload, python: str, name: str, argv: list[str], *, detach: bool
) -> tuple[str, str]:
    """The command that runs ``convergent ARGV`` on the host as agent ``name``, and the
    marker of the line that carries its exit status (``MARKER STATUS``).

    Attached, the agent stops (SIGTERM) when stdin ends: the initiator closed it, or the
    connection is gone. Detached, it runs in its own session, its output appended to
    ``hosts/NAME/agent.log``, and the line says its PID (``MARKER detached PID``)."""
    marker = f"convergent-exit-{secrets.token_hex(8)}"
    words = " ".join(shlex.quote(w) for w in argv)
    head = (
        f'umask 077; D={BASE}; H="$D/hosts/{name}"; PY={shlex.quote(python)}; cd "$H" || exit 3; '
    )
    run = f"{payload.launcher()} {words}"
    if detach:
        body = f'setsid {run} </dev/null >>"$H/agent.log" 2>&1 & echo "{marker} detached $!"'
        return head + body, marker
    body = (
        f"exec 3<&0 </dev/null; {run} 3<&- & a=$!; "
        "{ cat <&3 >/dev/null; kill -TERM $a 2>/dev/null; } & w=$!; exec 3<&-; "
        f'wait $a; rc=$?; kill $w 2>/dev/null; echo "{marker} $rc"; exit $rc'
    )
    return head + body, marker


def probe_input(files: dict[str, str]) -> bytes:
    """The probe's stdin: the files to write on the host."""
    return json.dumps(files).encode()
