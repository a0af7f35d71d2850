"""Remote hosts over SSH: ``urls`` (the ``ssh://`` targets), ``ssh`` (connections, host
keys), ``bootstrap`` (the single file and the agent on the host), ``fleet`` (a
``run --remote``: the hosts, their world, their reports)."""

__all__: list[str] = []
