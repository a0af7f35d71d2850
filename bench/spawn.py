"""A command's cost to the agent: ``host.process.run(["/bin/true"])`` one after another,
in an agent of 30 MiB and of 250 MiB (objects made to weigh what a large graph weighs).

    .venv/bin/python bench/spawn.py [--runs 40] [--base CHECKOUT] [--along-path]

``--along-path`` runs ``true`` found along the PATH systemd gives a service
(``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``: ``/usr/bin/true`` is
the fourth place looked at) instead of ``/bin/true``.

Per command, medians with min-max over the runs, ms:

- ``run``: the whole ``process.run`` (start, the command's life, its exit seen, reaped);
- ``loop stopped``: the longest the event loop went without running a callback during
  the run (a ticker task records the gaps): the fork of the agent stopped it, the
  spawner does not.

``--base DIR`` runs another checkout's ``src`` by the same interpreter, interleaved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

__all__ = ["main"]

_CHILD = r"""
import asyncio, json, os, sys, time
from convergent.host import process
try:
    from convergent.host import spawner
except ImportError:  # a checkout without the spawner
    spawner = None
weight = [{"i": i, "s": str(i)} for i in range(int(sys.argv[1]))]
runs = int(sys.argv[2])
command = [sys.argv[3]]

async def main():
    if spawner is not None:
        await spawner.started()
    await process.run(command)
    out = []
    for _ in range(runs):
        gaps = [0.0]
        stop = False

        async def tick():
            last = time.perf_counter()
            while not stop:
                await asyncio.sleep(0)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0)  # the ticker runs from here on
        t0 = time.perf_counter()
        await process.run(command)
        took = time.perf_counter() - t0
        stop = True
        await ticker
        out.append((took * 1e3, max(gaps) * 1e3))
    rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]
    print(json.dumps({"rss_mib": int(rss) / 1024, "runs": out}))

asyncio.run(main())
"""

_WEIGHTS = {"30 MiB": 60_000, "250 MiB": 900_000}


_SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _measure(src: Path, weight: int, runs: int, along_path: bool) -> dict[str, object]:
    command, path = ("true", _SYSTEMD_PATH) if along_path else ("/bin/true", "/usr/bin:/bin")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(weight), str(runs), command],
        env={"PYTHONPATH": str(src), "PATH": path},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _row(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--base", type=Path, help="another checkout to compare with")
    parser.add_argument(
        "--along-path", action="store_true", help="run `true` found along systemd's PATH"
    )
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent.parent
    trees = {"convergent": here / "src"}
    if args.base is not None:
        trees["base"] = args.base.resolve() / "src"
    for label, weight in _WEIGHTS.items():
        for name, src in trees.items():
            result = _measure(src, weight, args.runs, args.along_path)
            runs = result["runs"]
            assert isinstance(runs, list)
            print(f"{name} ({src.parent}), agent of {label} (RSS {result['rss_mib']:.0f} MiB):")
            print(f"  run            {_row([r[0] for r in runs])}")
            print(f"  loop stopped   {_row([r[1] for r in runs])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
