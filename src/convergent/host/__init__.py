"""The host layer: what every kind needs from the host it runs on, done once and safely.

``fs``: walking paths a local user can write (chase with CHASE_SAFE rules), opening
without following or blocking, atomic writes through temp files created private;
``process``: running commands that die with the agent, killing their groups, bounded
capture; ``children``: records of the commands running for an agent, and the reaper of
what a killed agent left (``process.reap_orphans``); ``posix``: user and group lookups;
``dbus``: the run's one connection to the system bus (``ctx.shared(SystemBus)``), bounded
calls, signals.
Kinds import these; this layer imports only ``convergent.errors``.
"""

__all__: list[str] = []
