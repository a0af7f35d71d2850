"""``convergent`` as process 1 of its PID namespace (a container's entry point).

Process 1 is the parent of every orphan of the namespace: a command's daemon, a
background job a shell left behind, the processes of a spawner that died. The kernel
reaps none of them; their zombies stay until process 1 waits for them. An agent that
waited for children it did not start could take the exit status of one of its own
commands before the run that started it reads it, so it waits for no other. Instead,
:func:`become_init` forks as the command starts (``cli.main.entry``, before anything
else): the child runs the command as it would have run (process 2), and process 1 stays
a minimal init, as ``tini`` or ``docker run --init`` are:

- it reaps every child it gets, and ends, with the command's exit status (128 + N when
  a signal N ended it), once the command has ended; the kernel then ends every other
  process of the namespace;
- the command runs in a process group of its own, the terminal's foreground one when
  its stdin is its terminal (a Ctrl-C reaches it, not process 1); a signal sent to
  process 1's group (``timeout``, a shell's job control) reaches process 1 alone;
- it passes on the signals the agent acts on (SIGTERM, SIGINT, SIGHUP: ``docker stop``,
  ``docker kill --signal HUP``) and turns a container manager's stop requests into
  SIGTERM (SIGPWR from ``lxc-stop``; SIGRTMIN+3, +4, +5 from ``machinectl`` and
  ``systemd-nspawn``: halt, power-off, reboot). Any other signal sent to it is dropped,
  as the kernel drops it for a process 1 without a handler (a SIGUSR1 would end the
  agent, which has none): the agent is not stopped mid-change by a signal it does not
  act on. The signals a fault raises (SIGSEGV, SIGBUS, ...) and the terminal's stop
  signals are left to the kernel.

It does nothing else: it prints nothing, reads nothing, runs no Python code between
signals (~10 MiB of memory, 5 of it its own: ``docker run --init`` needs less). With
``NOTIFY_SOCKET`` set (a systemd unit or ``systemd-nspawn --notify-ready``, which take
readiness from process 1 only), convergent stays process 1 and there is no init.
Outside process 1, :func:`become_init` is not called (``entry`` checks ``os.getpid()``).
"""

from __future__ import annotations

import os
import signal

__all__ = ["become_init"]

_LEFT_TO_THE_KERNEL = {
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGTRAP,
    signal.SIGSYS,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
}
# What process 1 sends the agent for each signal it passes on.
_PASSED: dict[int, signal.Signals] = {
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGINT: signal.SIGINT,
    signal.SIGHUP: signal.SIGHUP,
    signal.SIGPWR: signal.SIGTERM,
    signal.SIGRTMIN + 3: signal.SIGTERM,
    signal.SIGRTMIN + 4: signal.SIGTERM,
    signal.SIGRTMIN + 5: signal.SIGTERM,
}


def become_init() -> None:
    """Fork: return in the child, which runs the command; in process 1, reap and pass
    signals on until the child ends, then exit with its status (never returns there).
    If the fork fails, or under ``NOTIFY_SOCKET``, return: the command runs as process
    1, without an init."""
    if "NOTIFY_SOCKET" in os.environ:
        return
    watched = set(signal.valid_signals()) - _LEFT_TO_THE_KERNEL
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # ignored, children would not be waited
    before = signal.pthread_sigmask(signal.SIG_BLOCK, watched)  # none lost from here on
    try:
        child = os.fork()
    except OSError:  # no room for a process: the command runs as process 1, as it would
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        return
    if child == 0:
        _own_group()
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        return
    os._exit(_serve(child, watched))


def _own_group() -> None:
    """The child's own process group, made the terminal's foreground one if its stdin
    is the controlling terminal (SIGTTOU is blocked meanwhile: a background group may
    not take it otherwise)."""
    os.setpgid(0, 0)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgid(os.getppid()):
            os.tcsetpgrp(0, os.getpgrp())
    except OSError:  # not its controlling terminal: nothing to take
        pass


def _serve(child: int, watched: set[signal.Signals]) -> int:
    """Wait for signals: reap at each SIGCHLD, pass the agent's on to ``child``; the
    child's exit status once it has ended."""
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo == signal.SIGCHLD:
            code = _reap(child)
            if code is not None:
                return code
            continue
        passed = _PASSED.get(info.si_signo)
        if passed is not None:
            try:  # noqa: SIM105 (contextlib: one more import for process 1 to hold)
                os.kill(child, passed)
            except OSError:  # ended: its SIGCHLD is pending
                pass


def _reap(child: int) -> int | None:
    """Reap every ended child; the exit status of ``child`` if it was one of them."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == child:
            ended = os.waitstatus_to_exitcode(status)
            code = ended if ended >= 0 else 128 - ended
