"""``convergent service install --policy FILE``: a systemd unit that keeps the host converged.

The unit (:func:`unit_text`) runs ``convergent run FILE`` as a ``Type=notify`` service:
systemd considers it started once the policy first converged (``READY=1``), restarts it
when its watchdog pings stop, reloads the policy on ``systemctl reload`` (SIGHUP) and
shows its state in ``systemctl status`` (``STATUS=``); see :mod:`convergent.cli.notify`.
Its output goes to the journal with a priority per line.

The agent runs as root and its job is to change the system anywhere a policy says, so
most of systemd's sandboxing would stop it from working; the unit keeps the options that
cost it nothing and says, in its comments, which ones it leaves out and why.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__all__ = ["DEFAULT_STATE_DIR", "executable", "service_command", "unit_text"]

DEFAULT_STATE_DIR = "/var/lib/convergent"
_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+")

_UNIT = """\
# {name}.service: written by `convergent service install`; `man convergent` has the details.
# After editing: systemctl daemon-reload. Reload the policy: systemctl reload {name}.
[Unit]
Description=convergent: keep this host converged to {policy_comment}
Documentation=man:convergent(1)
Wants=network-online.target
After=network-online.target

[Service]
# The agent sends READY=1 once the policy first converged, STATUS= lines with its state,
# WATCHDOG=1 while its event loop turns, and RELOADING=1/READY=1 around a reload.
Type=notify
# Only the agent itself may report to systemd, not the commands a policy runs.
NotifyAccess=main
ExecStart={exec_start}
# SIGHUP makes the agent read the policy again (as it does when the file is saved).
ExecReload=/bin/kill -HUP $MAINPID
# A first convergence may install packages: give it time before systemd gives up.
TimeoutStartSec=30min
WatchdogSec=30s
Restart=on-failure
RestartSec=5s
# SIGTERM to the agent only: it stops its workers and ends the commands it started
# (their process groups) itself; whatever is left gets SIGKILL at the end.
KillMode=mixed
{state_directory}
# Hardening that a root agent whose job is to change the system can live with:
# new files are not group/world writable unless a policy says so, no execution-domain
# (personality) changes, no realtime scheduling.
UMask=0022
LockPersonality=yes
RestrictRealtime=yes
# Left out on purpose, because each would stop the agent from doing what policies ask:
# ProtectSystem=, ProtectHome=, ReadOnlyPaths=   (policies write /etc, /usr, /home...)
# PrivateTmp=                                    (policies manage files in the real /tmp)
# NoNewPrivileges=, RestrictSUIDSGID=            (commands may use setuid programs; the
#                                                 file kind may set setuid/setgid bits)
# CapabilityBoundingSet=, PrivateDevices=, ProtectKernelTunables=, ProtectKernelModules=,
# ProtectControlGroups=, ProtectClock=, ProtectHostname=, ProtectProc=,
# SystemCallFilter=, MemoryDenyWriteExecute=, RestrictNamespaces=
#                                                 (sysctls, modules, services, clocks,
#                                                 hostnames and processes are all things
#                                                 a policy may manage, with any program)

[Install]
WantedBy=multi-user.target
"""


def executable() -> list[str]:
    """How this convergent is started: its script, or this Python with ``-m convergent``."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "convergent" and os.path.isfile(script):
        return [os.path.abspath(script)]
    return [sys.executable, "-m", "convergent"]


def _quote(word: str) -> str:
    """``word`` as one argument of a systemd command line (specifiers and variables kept
    literal)."""
    if "\n" in word or "\0" in word:
        raise ValueError(f"{word!r}: a unit's command line cannot hold a newline or NUL")
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not re.search(r"[\s\"'\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(
    policy: str,
    *,
    state_dir: str | None = None,
    name: str = "convergent",
    command: list[str] | None = None,
) -> str:
    """The unit that runs ``convergent run POLICY`` (``policy`` absolute)."""
    argv = [*(command or executable()), "run", policy]
    if state_dir is not None and os.path.abspath(state_dir) != DEFAULT_STATE_DIR:
        argv += ["--state-dir", state_dir]
        state_directory = f"# State directory: {state_dir} (given with --state-dir)."
    else:
        state_directory = (
            "# The state directory (secrets, pending refreshes), private to root.\n"
            "StateDirectory=convergent\nStateDirectoryMode=0700"
        )
    policy_comment = policy.replace("%", "%%")
    return _UNIT.format(
        name=name,
        policy_comment=policy_comment,
        exec_start=" ".join(_quote(word) for word in argv),
        state_directory=state_directory,
    )


def service_command(args: argparse.Namespace) -> int:
    """Write (or print) the unit; 2 when the policy or a name is not usable."""
    from convergent.render import say

    policy = os.path.abspath(args.policy)
    if not os.path.isfile(policy):
        say(
            f"convergent service: {policy}: no such policy file; write it first "
            "(and check it with: convergent check FILE)"
        )
        return 2
    if not _NAME.fullmatch(args.name):
        say(f"convergent service: {args.name!r} is not a unit name (letters, digits, :_.-)")
        return 2
    state_dir = os.path.abspath(args.state_dir) if args.state_dir else None
    try:
        text = unit_text(policy, state_dir=state_dir, name=args.name)
    except ValueError as exc:
        say(f"convergent service: {exc}")
        return 2
    if args.print:
        sys.stdout.write(text)
        return 0
    from convergent.cli.files import write_text

    path = os.path.join(args.unit_dir, f"{args.name}.service")
    try:
        write_text(path, text, mode=0o644)
    except OSError as exc:
        say(f"convergent service: cannot write {path}: {exc.strerror}")
        return 2
    print(f"wrote {path}")
    print(
        f"start it now and at boot: systemctl daemon-reload && systemctl enable --now {args.name}"
    )
    return 0
