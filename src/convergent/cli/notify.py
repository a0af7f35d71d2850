"""Telling systemd how the agent is doing: the sd_notify protocol, with no library.

Under a ``Type=notify`` unit systemd sets ``$NOTIFY_SOCKET``, a datagram socket (a path,
or an abstract name written with a leading ``@``); each message is one datagram of
``KEY=value`` lines. ``convergent run`` sends:

- ``READY=1`` when the policy first converged (settled, failures included: the agent is
  up and says what failed), with a ``STATUS=`` line;
- ``STATUS=`` each time the state it reports changes (``converged; watching for
  changes``, ``settled with 1 failed, 0 blocked``);
- ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` (``WatchdogSec=``), from a task of the
  event loop: a loop that stops turning stops the pings and systemd restarts the agent;
- ``RELOADING=1`` (with ``MONOTONIC_USEC=``) when SIGHUP (``systemctl reload``) or a
  saved policy starts a reload, ``READY=1`` once the new policy is in place or refused;
- ``STOPPING=1`` on SIGTERM/SIGINT.

The variables are removed from the environment once read, so the commands the agent runs
do not talk to systemd in its name. A message that cannot be sent is dropped (systemd
gone, socket full): reporting to systemd never stops the agent.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convergent.engine.report import Converged, Report, Reporter

__all__ = ["SystemdNotifier"]


class SystemdNotifier:
    """Sends sd_notify messages to ``address`` (``$NOTIFY_SOCKET``'s syntax).

    ``watchdog``: seconds of ``WatchdogSec=`` (None: no watchdog).
    """

    def __init__(self, address: str, watchdog: float | None = None) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog = watchdog
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)
        self._ready = False
        self._reloading = False
        self._status: str | None = None

    @classmethod
    def from_environment(cls) -> SystemdNotifier | None:
        """The notifier systemd asked for, or None; the variables leave the environment."""
        address = os.environ.pop("NOTIFY_SOCKET", None)
        usec = os.environ.pop("WATCHDOG_USEC", None)
        pid = os.environ.pop("WATCHDOG_PID", None)
        if not address or address[0] not in "/@":
            return None
        watchdog = None
        if usec and usec.isdigit() and int(usec) > 0 and (pid is None or pid == str(os.getpid())):
            watchdog = int(usec) / 1_000_000
        return cls(address, watchdog)

    def send(self, *lines: str) -> bool:
        """Send one message of ``lines`` (each one line: a control character in it, such as
        a newline in a resource's name, is escaped); False when it could not be sent."""
        from convergent.render import escape

        try:
            message = "\n".join(map(escape, lines))
            self._socket.sendto(message.encode("utf-8", "backslashreplace"), self.address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self._socket.close()

    # -- what the run reports -----------------------------------------------------------

    def reporter(self, inner: Reporter) -> Reporter:
        """``inner``, followed by the messages a report means to systemd."""
        from convergent.engine.report import Converged

        def report(record: Report) -> None:
            inner(record)
            if isinstance(record, Converged):
                self.converged(record)

        return report

    def converged(self, report: Converged) -> None:
        if report.failed or report.blocked:
            status = f"settled with {report.failed} failed, {report.blocked} blocked"
        else:
            status = "converged; watching for changes"
        if not self._ready:
            self._ready = True
            self._status = status
            self.send("READY=1", f"STATUS={status}")
        elif status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def reloading(self, why: str) -> None:
        self._reloading = True
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS=reloading the policy ({why})")

    def reloaded(self, status: str) -> None:
        """The reload is over (``status`` says how); systemd's reload job ends."""
        if not self._reloading:
            return
        self._reloading = False
        self._status = status
        self.send("READY=1", f"STATUS={status}")

    def stopping(self, why: str) -> None:
        self.send("STOPPING=1", f"STATUS=stopping ({why})")

    async def keep_alive(self) -> None:
        """Send ``WATCHDOG=1`` at half the watchdog interval, for as long as it runs."""
        if self.watchdog is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog / 2)
