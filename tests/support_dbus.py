"""A private system bus for tests: a real ``dbus-daemon`` with a config of its own.

The bus listens on a socket in a temp directory, never on /run/dbus/system_bus_socket,
so a test never disturbs a real system bus (or another test's). It activates services
from copies of the host's system service files (``/usr/share/dbus-1/system-services``:
PackageKit, polkit) by executing them directly, with the environment it was started
with, in which ``DBUS_SYSTEM_BUS_ADDRESS`` points at this bus: an activated daemon joins
this bus, not the host's. (``packagekitd`` clears its environment at start-up unless given
``--keep-environment``: its copied service file adds that flag.) Its policy allows
everything (the test's processes are root anyway).

Use::

    with private_system_bus() as bus:
        env = {"DBUS_SYSTEM_BUS_ADDRESS": bus.address}   # give it to what you spawn

Starting waits (bounded) for the daemon to print its address, which it does once it
listens; the end kills the daemon, then every service it activated (they are found by the
bus address in their environment), by PID, and waits (bounded, on pidfds) until they are
gone.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SERVICES", "PrivateBus", "dbus_daemon", "private_system_bus"]

SERVICES = "/usr/share/dbus-1/system-services"
START_BOUND = 10.0  # seconds for the daemon's socket to accept a connection
STOP_BOUND = 5.0  # seconds for a killed daemon or service to be gone

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  {servicedirs}
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
  <limit name="service_start_timeout">60000</limit>
</busconfig>
"""


def dbus_daemon() -> str | None:
    """The path of ``dbus-daemon``, or None when it is not installed."""
    return shutil.which("dbus-daemon")


class PrivateBus:
    """A running private bus: its ``address`` (``unix:path=...``), ``socket`` and ``pid``."""

    def __init__(self, socket_path: str, process: subprocess.Popen[bytes]) -> None:
        self.socket = socket_path
        self.address = f"unix:path={socket_path}"
        self.process = process
        self.pid = process.pid

    def env(self) -> dict[str, str]:
        """The environment that points a spawned process at this bus."""
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}


def _read_line(fd: int, bound: float) -> bytes:
    """One line from ``fd``, waiting at most ``bound`` seconds (b"" at EOF or timeout)."""
    deadline = time.monotonic() + bound
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return b""
            chunk = os.read(fd, 4096)
            if not chunk:
                return b""
            data += chunk
    return data


def _copy_services(tmp: str) -> str:
    """A directory of copies of the host's system service files, in ``tmp``."""
    target = os.path.join(tmp, "services")
    os.mkdir(target)
    if not os.path.isdir(SERVICES):
        return target
    for entry in os.listdir(SERVICES):
        if not entry.endswith(".service"):
            continue
        lines = Path(SERVICES, entry).read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("Exec=") and line.split()[0].endswith("/packagekitd"):
                lines[i] = line + " --keep-environment"
        Path(target, entry).write_text("\n".join(lines) + "\n")
    return target


def _activated(address: str) -> list[int]:
    """The PIDs of processes whose environment names this bus (the services it started)."""
    wanted = f"DBUS_SYSTEM_BUS_ADDRESS={address}".encode()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdecimal() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry))
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: list[int], bound: float) -> None:
    """Wait (at most ``bound`` seconds) until each of ``pids`` has exited."""
    deadline = time.monotonic() + bound
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                sel.select(max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)


@contextlib.contextmanager
def private_system_bus(*, services: bool = True) -> Iterator[PrivateBus]:
    """Start a private system bus (see the module docstring), yield it, kill it.

    ``services``: activate the host's system services (PackageKit...) on demand.
    """
    daemon = dbus_daemon()
    if daemon is None:
        raise RuntimeError("dbus-daemon is not installed; apt-get install dbus-daemon")
    with tempfile.TemporaryDirectory(prefix="convergent-bus-") as tmp:
        os.chmod(tmp, 0o755)  # services that drop root (polkitd) must reach the socket
        socket_path = os.path.join(tmp, "system_bus_socket")
        config = os.path.join(tmp, "bus.conf")
        dirs = f"<servicedir>{_copy_services(tmp)}</servicedir>" if services else ""
        Path(config).write_text(_CONFIG.format(socket=socket_path, servicedirs=dirs))
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket_path}"}
        process = subprocess.Popen(
            [daemon, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        bus = PrivateBus(socket_path, process)
        try:
            assert process.stdout is not None
            if not _read_line(process.stdout.fileno(), START_BOUND):
                _kill(process.pid)
                _, err = process.communicate(timeout=STOP_BOUND)
                raise RuntimeError(
                    f"dbus-daemon did not listen within {START_BOUND} s "
                    f"(exit status {process.returncode}): {err.decode(errors='replace')}"
                )
            yield bus
        finally:
            _kill(process.pid)
            process.wait(timeout=STOP_BOUND)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
            left = _activated(bus.address)
            for pid in left:
                _kill(pid)
            _wait_gone(left, STOP_BOUND)
