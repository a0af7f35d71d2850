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
- it forwards to the command the signals sent to it alone (``docker stop``'s SIGTERM,
  ``docker kill --signal HUP``'s SIGHUP: sent by a process). A signal the kernel sent
  to the terminal's whole foreground process group (Ctrl-C's SIGINT) has reached the
  command already and is not sent twice;
- the signals a fault raises (SIGSEGV, SIGBUS, ...) and the terminal's stop signals
  are left to the kernel.

It does nothing else: it prints nothing, reads nothing, runs no Python code between
signals. Outside process 1, :func:`become_init` is not called (``entry`` checks
``os.getpid()``).
"""

from __future__ import annotations

import os
import signal

__all__ = ["become_init"]

_SI_KERNEL = 0x80  # si_code of a signal the kernel sent (a terminal's, to its group)
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


def become_init() -> None:
    """Fork: return in the child, which runs the command; in process 1, reap and forward
    signals until the child ends, then exit with its status (never returns there). If
    the fork fails, return: the command runs as process 1, without an init."""
    watched = set(signal.valid_signals()) - _LEFT_TO_THE_KERNEL
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # ignored, children would not be waited
    before = signal.pthread_sigmask(signal.SIG_BLOCK, watched)  # none lost from here on
    try:
        child = os.fork()
    except OSError:  # no room for a process: the command runs as process 1, as it would
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        return
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        return
    os._exit(_serve(child, watched))


def _serve(child: int, watched: set[signal.Signals]) -> int:
    """Wait for signals: reap at each SIGCHLD, forward the others to ``child``; the
    child's exit status once it has ended."""
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo == signal.SIGCHLD:
            code = _reap(child)
            if code is not None:
                return code
        elif info.si_code != _SI_KERNEL:
            try:  # noqa: SIM105 (contextlib: one more import for process 1 to hold)
                os.kill(child, info.si_signo)
            except ProcessLookupError:  # ended: its SIGCHLD is pending
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
