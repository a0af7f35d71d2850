"""Progress of a long run on a terminal: ``[312/1000] converging... slowest running:
exec[build] 2.1 s, file[/srv/big] 0.4 s``.

Shown only when stdout is a terminal, the log format is text and ``--quiet`` was not
given; and only once a run has gone on for ``DELAY`` seconds without converging, so a
short run neither draws it nor imports rich (~40 ms). The line stays under the report
lines (rich's ``Live``: the lines printed meanwhile scroll above it) and disappears when
the graph converges for the first time; a watching agent draws nothing afterwards.

Counted: resources whose first pass (kept, repaired, failed, blocked) has ended, out of
the resources in the running graph. Running: the resources checking or applying now
(``Engine.follow_states``, followed only while the line is drawn), longest first.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convergent.engine.events import Event
    from convergent.engine.report import VertexState
    from convergent.engine.runner import Engine
    from convergent.render import TextRenderer

__all__ = ["DELAY", "REFRESH", "Progress", "wanted"]

DELAY = 0.5  # seconds a run goes on before the line is drawn
REFRESH = 0.25  # seconds between redraws
_SHOWN = 3  # running resources named


def wanted(renderer: TextRenderer, quiet: bool) -> bool:
    """Whether a run printing through ``renderer`` should draw progress."""
    if quiet or type(renderer).__name__ != "TextRenderer":
        return False
    isatty = getattr(renderer.out, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """The progress line of one run; an event listener (engine/events.py)."""

    def __init__(self, renderer: TextRenderer) -> None:
        self.renderer = renderer
        self.done: set[str] = set()  # resources whose first pass ended
        self.running: dict[str, float] = {}  # resource -> when it started checking

    def saw(self, event: Event) -> None:
        self.done.add(event.resource)

    def _state(self, record: VertexState) -> None:
        if record.state in ("checking", "applying"):
            self.running.setdefault(record.resource, time.monotonic())
        else:
            self.running.pop(record.resource, None)

    def line(self, total: int) -> str:
        """The text of the line now."""
        from convergent.render import escape

        done = min(len(self.done), total)
        text = f"[{done}/{total}] converging..."
        if self.running:
            now = time.monotonic()
            slowest = sorted(self.running.items(), key=lambda item: item[1])[:_SHOWN]
            names = ", ".join(f"{escape(rid)} {now - since:.1f} s" for rid, since in slowest)
            text += f" slowest running: {names}"
        return text

    async def run(self, engine: Engine) -> None:
        """Draw the line from ``DELAY`` s after the start until the first convergence."""
        await asyncio.sleep(DELAY)
        if engine.converged:
            return
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        renderer = self.renderer
        out, err = renderer.out, renderer.err
        for vid, state in engine.vertex_states().items():
            if state == "checking":
                self.running[vid] = time.monotonic()
        unfollow = engine.follow_states(self._state)
        console = Console(file=out, force_terminal=True, highlight=False)
        terminal_err = bool(getattr(err, "isatty", None) and err.isatty())
        live = Live(
            Text(self.line(len(engine.graph))),
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=True,
            redirect_stderr=terminal_err,
        )
        live.start()
        renderer.out = sys.stdout  # rich's proxy: a line printed now scrolls above
        if terminal_err:
            renderer.err = sys.stderr
        try:
            while not engine.converged:
                live.update(Text(self.line(len(engine.graph))), refresh=True)
                await asyncio.sleep(REFRESH)
        finally:
            unfollow()
            renderer.out, renderer.err = out, err
            live.stop()

    def __repr__(self) -> str:
        return f"<Progress {len(self.done)} done, {len(self.running)} running>"
