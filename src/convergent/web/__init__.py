"""The live web view of a running agent (``convergent run --http ADDR:PORT``).

Nothing here is imported by a run without ``--http``: ``options.py`` (the option values,
standard library only) is read by the command line; the rest (starlette, uvicorn) is
imported when the server starts.

- ``options.py``: ``--http ADDR:PORT`` and ``--http-token FILE`` (:class:`HttpOptions`).
- ``board.py``: the live model: each vertex's state, last events and error, fed by the
  engine's vertex-state stream and its reports; the subscribers of the event stream.
- ``params.py``: a vertex's parameters as the page shows them (secrets hidden).
- ``svg.py``: the graph as the engine runs it, drawn by graphviz (``dot -Tsvg``).
- ``app.py``: the starlette application (read-only routes, the token check).
- ``serve.py``: the uvicorn server on the agent's loop (:func:`start`).
- ``static/``: the page, its script and style (no CDN: it works offline).
- ``metrics.py``: ``--metrics ADDR:PORT``, Prometheus metrics (prometheus-client imported
  only then).
"""

__all__: list[str] = []
