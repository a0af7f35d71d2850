"""Running convergent on hosts where it is not installed.

- ``dist.py``: :func:`~convergent.remote.dist.build` makes the single file
  (``convergent.pyz``: convergent and its dependencies, the compiled ones per CPython
  ABI) that runs with nothing but ``python3`` (>= 3.11); ``digest`` is its SHA-256;
  ``python -m convergent.remote.dist -o FILE`` (``make dist``) writes one.
- ``dist_files.py``: what goes into the file (the modules a run imports, compiled to
  bytecode; the shared libraries stripped of debugging data).
- ``dist_boot.py``: what runs first inside the file: the Python and ABI checks, the
  private cache directory, the one-time extraction of the compiled modules.
- ``urls.py``: the ``ssh://`` targets of ``run --remote`` (``via:``; no passwords).
- ``ssh.py``: SSH connections (asyncssh, imported on first use), host keys checked.
- ``bootstrap.py``: the probe, the single file copied by digest, the agent's command.
- ``fleet.py``: a ``run --remote``: every host in parallel, the world tunnelled to
  each, reports streamed by host, one exit code.
- ``relay.py``: hosts behind a first-level host (``via:``, ``--remote-depth 2``): the
  first-level host bootstraps them with the initiator's forwarded ssh agent.

See docs/single-file.md for the single file, docs/remote.md for ``run --remote``.
"""

__all__: list[str] = []
