"""Do the state database's writes block the event loop measurably? In process, one loop.

    .venv/bin/python bench/statedb_loop.py [N] [--repeats 5]

N ``file`` resources (``--kind flip``: resources that change a value in memory, so
the database is the only I/O) are created, each with ``notify: noop[done]``, so every one of them
writes its refresh intent to the state database before its apply (one committed, fsynced
SQLite transaction each, on the event loop's thread) and ``noop[done]`` removes them
after its refresh. The same graph runs without a state database for comparison, runs
interleaved, each into a fresh directory. Printed per variant (median of the repeats):

- wall time of ``Engine.run`` and the ratio with/without the database;
- the time spent inside the database's write calls, in total and per call (p50, max):
  the event loop runs nothing else meanwhile;
- the loop's lag: a ticker asks to wake every 1 ms and records how late it was (p99 and
  max); a lag as long as a write means the writes block everything else (watches,
  other resources' checks) for that long.

Works under a temporary directory in /tmp.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from convergent.engine import Engine
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.file import File
from convergent.resources.noop import Noop
from convergent.state import StateDB

TICK = 0.001


class FlipParams(Params):
    """Parameters of ``benchflip``.

    value: the value it sets (in memory)
    """

    value: int = 0


class Flip(Resource[FlipParams], kind="benchflip"):
    """Changes a value in memory: no I/O of its own, so the database's writes are the
    only I/O of a run of flips."""

    done: ClassVar[set[str]] = set()

    async def check(self, ctx: Context) -> Change | None:
        return None if self.id in Flip.done else Change("set")

    async def apply(self, ctx: Context, change: Change) -> None:
        Flip.done.add(self.id)


def _graph(root: Path, n: int, kind: str) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    g.add(Noop("done"))
    Flip.done.clear()
    for i in range(n):
        if kind == "file":
            g.add(File(str(root / f"f{i}"), content=f"{i}\n"), notify=["noop[done]"])
        else:
            g.add(Flip(f"f{i}", value=i), notify=["noop[done]"])
    return g


class _Timed:
    """Wraps a StateDB's write calls and records how long each took."""

    def __init__(self, state: StateDB) -> None:
        self.calls: list[float] = []
        for name in ("add_refreshes", "remove_refreshes"):
            original = getattr(state, name)

            def timed(*args: Any, _original: Any = original) -> Any:
                start = time.perf_counter()
                try:
                    return _original(*args)
                finally:
                    self.calls.append(time.perf_counter() - start)

            setattr(state, name, timed)


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + TICK
        await asyncio.sleep(TICK)
        lags.append(max(0.0, loop.time() - expected))


async def _one(root: Path, n: int, kind: str, state: StateDB | None) -> tuple[float, list[float]]:
    lags: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(lags, stop))
    await asyncio.sleep(0)
    engine = Engine(_graph(root, n, kind), state=state, converged_timeout=0)
    start = time.perf_counter()
    result = await engine.run()
    wall = time.perf_counter() - start
    stop.set()
    await ticker
    assert result.exit_code == 0 and result.changed == n, result
    return wall, lags


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--kind", choices=("file", "flip"), default="file", help="flip: changes in memory only"
    )
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="convergent-bench-statedb-"))
    rows: dict[str, list[tuple[float, float, float, float, float, int]]] = {
        "no state database": [],
        "state database": [],
    }
    try:
        for _ in range(args.repeats):
            for variant in rows:
                root = base / "target"
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir()
                shutil.rmtree(base / "state", ignore_errors=True)
                (base / "state").mkdir(mode=0o700)
                state = (
                    StateDB(base / "state" / "state.db") if variant == "state database" else None
                )
                timed = _Timed(state) if state is not None else None
                try:
                    wall, lags = asyncio.run(_one(root, args.n, args.kind, state))
                finally:
                    if state is not None:
                        state.close()
                calls = timed.calls if timed is not None else []
                rows[variant].append(
                    (
                        wall,
                        sum(calls),
                        _pct(calls, 0.5),
                        max(calls, default=0.0),
                        _pct(lags, 0.99),
                        len(calls),
                    )
                )
                _LAG_MAX.setdefault(variant, []).append(max(lags, default=0.0))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    what = "files" if args.kind == "file" else "in-memory flips"
    print(f"{args.n} {what}, each notifying noop[done]; median of {args.repeats} runs")
    print(
        f"{'variant':<20} {'wall s':>8} {'writes':>7} {'in writes s':>12} "
        f"{'write p50 ms':>13} {'write max ms':>13} {'lag p99 ms':>11} {'lag max ms':>11}"
    )
    medians: dict[str, float] = {}
    for variant, runs in rows.items():
        wall = statistics.median(r[0] for r in runs)
        medians[variant] = wall
        print(
            f"{variant:<20} {wall:>8.3f} {runs[0][5]:>7} "
            f"{statistics.median(r[1] for r in runs):>12.3f} "
            f"{statistics.median(r[2] for r in runs) * 1e3:>13.2f} "
            f"{statistics.median(r[3] for r in runs) * 1e3:>13.2f} "
            f"{statistics.median(r[4] for r in runs) * 1e3:>11.2f} "
            f"{statistics.median(_LAG_MAX[variant]) * 1e3:>11.2f}"
        )
    ratio = medians["state database"] / medians["no state database"]
    print(f"ratio wall with/without the state database: {ratio:.2f}")


_LAG_MAX: dict[str, list[float]] = {}

if __name__ == "__main__":
    main()
