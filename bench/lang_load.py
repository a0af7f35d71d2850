"""Load time of 1,000 resources written with for_each and a template vs written out.

    .venv/bin/python bench/lang_load.py [--runs 15] [--entries 1000]

Three policies make the same 1,000 files (``/srv/fNNNN``, content naming the file, mode
0644): ``written``, every entry written out (the plain shape, so the fast front end takes
it); ``for_each``, one entry with ``for_each: "{{ names }}"`` over a list in ``vars:``
and ``{{ item }}`` in its strings; ``template``, the same with ``template:`` (a Jinja2
file) for the content, which imports Jinja2. Each run is a fresh interpreter, timed from
before importing the loader to the graph (what ``convergent check`` pays), and a later
load in the same process (the median of five more, the steadiest figure). The runs of the
three are interleaved, so the machine's load weighs on each alike; the cyclic garbage
collector is off, as ``convergent`` turns it off while it loads a policy. The target: the
language's policies load within 1.5x of the written-out one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["main", "policies"]

TARGET = 1.5
_CHILD = """
import gc, sys, time
gc.disable()  # as the command line loads a policy (cli/main.py)
start = time.perf_counter()
from convergent.policy import load_policy
graph = load_policy(sys.argv[1])
first = time.perf_counter() - start
assert len(graph) == int(sys.argv[2]), len(graph)
again = []
for _ in range(5):
    t = time.perf_counter()
    load_policy(sys.argv[1])
    again.append(time.perf_counter() - t)
again.sort()
print(first, again[2])
"""


def policies(root: Path, n: int) -> dict[str, Path]:
    """The three policies of ``n`` files under ``root``."""
    names = [f"f{i:04d}" for i in range(n)]
    written = ["resources:"]
    for name in names:
        written += [
            f'  - file: "/srv/{name}"',
            f'    content: "i am {name}\\n"',
            '    mode: "0644"',
        ]
    listed = "vars:\n  names:\n" + "".join(f"    - {name}\n" for name in names)
    for_each = listed + (
        "resources:\n"
        '  - file: "/srv/{{ item }}"\n'
        '    for_each: "{{ names }}"\n'
        '    content: "i am {{ item }}\\n"\n'
        '    mode: "0644"\n'
    )
    template = listed + (
        "resources:\n"
        '  - file: "/srv/{{ item }}"\n'
        '    for_each: "{{ names }}"\n'
        "    template: file.j2\n"
        '    mode: "0644"\n'
    )
    (root / "file.j2").write_text("i am {{ item }}\n")
    out = {}
    for name, text in (
        ("written", "\n".join(written) + "\n"),
        ("for_each", for_each),
        ("template", template),
    ):
        path = root / f"{name}.yaml"
        path.write_text(text)
        out[name] = path
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--entries", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = policies(Path(tmp), args.entries)
        first: dict[str, list[float]] = {name: [] for name in paths}
        again: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.runs):
            for name, path in paths.items():
                done = subprocess.run(
                    [sys.executable, "-c", _CHILD, str(path), str(args.entries)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                a, b = (float(x) for x in done.stdout.split())
                first[name].append(a)
                again[name].append(b)
    result = {
        name: {
            "first_ms": statistics.median(first[name]) * 1000,
            "again_ms": statistics.median(again[name]) * 1000,
        }
        for name in paths
    }
    base = result["written"]
    print(f"{args.entries} resources, median of {args.runs} fresh processes")
    for name, figures in result.items():
        r1 = figures["first_ms"] / base["first_ms"]
        r2 = figures["again_ms"] / base["again_ms"]
        print(
            f"  {name:9} first load {figures['first_ms']:6.1f} ms ({r1:.2f}x)   "
            f"later load {figures['again_ms']:6.1f} ms ({r2:.2f}x)"
        )
    for name in ("for_each", "template"):
        ratio = result[name]["first_ms"] / base["first_ms"]
        verdict = "met" if ratio <= TARGET else "MISSED"
        print(f"{name}: {ratio:.2f}x the written-out policy, target {TARGET}x: {verdict}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
