"""Policy load time: 1,000 entries through the fast front end and through the YAML path.

    .venv/bin/python bench/policy_load.py [--runs 21] [--entries 1000] [--before SRC]

Each run is a fresh interpreter that imports the loader and loads one generated policy
(W1's shape: ``file`` entries with content and mode, and a chain of ``exec`` entries
with ``require``, as bench/policies.py writes them), timed inside the child from before
the import to the graph (what ``convergent check`` pays), from after the import ("load
alone", which still counts the imports the load makes) and, as the steadiest figure, a
later load in the same process (the median of ten more). ``fast``: ``load_policy_text``
(the front end takes the policy); ``yaml``: the full path (``loader._load_yaml``), what
every policy would cost without the fast front end. Prints the medians and ratios.
``--before SRC``: also time the package in SRC (say an older checkout's ``src``), the
runs of both interleaved so that the machine's load weighs on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["main", "policy"]

_CHILD = """
import sys, time
start = time.perf_counter()
from convergent.policy import loader
text = open(sys.argv[2]).read()
loaded = time.perf_counter()
if sys.argv[1] == "fast":
    graph = loader.load_policy_text(text, "p.yaml")
else:
    graph = loader._load_yaml(text, "p.yaml")
assert len(graph) > 0
end = time.perf_counter()
load = loader.load_policy_text if sys.argv[1] == "fast" else loader._load_yaml
again = []
for _ in range(10):
    begin = time.perf_counter()
    load(text, "p.yaml")
    again.append(time.perf_counter() - begin)
print(end - start, end - loaded, sorted(again)[5])
"""


def policy(entries: int) -> str:
    """A W1-shaped policy: ``entries`` files, then a chain of ten commands."""
    out = ["resources:"]
    for i in range(entries - 10):
        out += [
            f'  - file: "/srv/bench/f{i:05d}"',
            f'    content: "i am f{i:05d}\\n"',
            '    mode: "0644"',
        ]
    for i in range(10):
        out += [f'  - exec: "c{i}"', f"    cmd: {json.dumps(['/bin/true', str(i)])}"]
        out.append('    cwd: "/srv/bench"')
        if i:
            out.append(f'    require: ["exec[c{i - 1}]"]')
    return "\n".join(out) + "\n"


def _run(src: Path, mode: str, path: Path) -> tuple[float, float, float]:
    """(import + load, load alone, a later load) in milliseconds, in a fresh interpreter."""
    # PYTHONDONTWRITEBYTECODE would make every child compile the package again
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(src)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    first, second, warm = done.stdout.split()
    return float(first) * 1000, float(second) * 1000, float(warm) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--before", type=Path, help="another source tree to compare with")
    args = parser.parse_args()
    trees = {"now": Path(__file__).resolve().parent.parent / "src"}
    if args.before:
        trees["before"] = args.before.resolve()
    times: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_text(policy(args.entries))
        for _ in range(args.runs):
            for name, src in trees.items():
                for mode in ("fast", "yaml"):
                    times.setdefault((name, mode), []).append(_run(src, mode, path))
    print(f"{args.entries} entries, medians of {args.runs} fresh processes (ms):")
    print("  tree    path   import+load  load alone  later load")
    for (name, mode), found in times.items():
        whole, load, warm = (statistics.median(t[i] for t in found) for i in range(3))
        print(f"  {name:7} {mode:6} {whole:11.1f} {load:11.1f} {warm:11.1f}")
    for name in trees:
        fast = statistics.median(t[1] for t in times[name, "fast"])
        full = statistics.median(t[1] for t in times[name, "yaml"])
        print(f"  {name}: YAML path / fast front end, load alone: {full / fast:.2f}x")
    if args.before:
        for mode in ("fast", "yaml"):
            now = statistics.median(t[1] for t in times["now", mode])
            then = statistics.median(t[1] for t in times["before", mode])
            print(f"  {mode}: now / before, load alone: {now / then:.2f}x")
            now = statistics.median(t[2] for t in times["now", mode])
            then = statistics.median(t[2] for t in times["before", mode])
            print(f"  {mode}: now / before, later load: {now / then:.2f}x")


if __name__ == "__main__":
    main()
