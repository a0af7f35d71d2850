"""Facts gathering: every fact of this host, as ``convergent facts`` gathers them.

    .venv/bin/python bench/facts.py [ROUNDS]

Prints the best and median time of gathering every fact with a fresh ``Facts`` in this
process (the modules already imported, as in a run that loaded its policy), the time of
the first gathering in a fresh interpreter (what it imports included, not the
interpreter's start or the convergent package, which every command pays), and, as the peer measured
in the same run, ``facter`` or ``ansible -m setup`` when installed. The target is 20 ms.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time

from convergent.host.facts import FACT_NAMES, Facts, hard_classes

TARGET_MS = 20.0


def gather_once() -> float:
    start = time.perf_counter()
    facts = Facts()
    for name in FACT_NAMES:
        facts[name]
    hard_classes(facts)
    return (time.perf_counter() - start) * 1000


def first_in_fresh_process() -> float:
    code = (
        "import time\n"
        "from convergent.host.facts import FACT_NAMES, Facts, hard_classes\n"
        "t = time.perf_counter()\n"
        "f = Facts(); [f[n] for n in FACT_NAMES]; hard_classes(f)\n"
        "print((time.perf_counter() - t) * 1000)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def peer() -> tuple[str, float] | None:
    for name, argv in (
        ("facter", ["facter", "--json"]),
        ("ansible -m setup", ["ansible", "localhost", "-m", "setup", "-c", "local"]),
    ):
        if shutil.which(argv[0]):
            start = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=False)
            return name, (time.perf_counter() - start) * 1000
    return None


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    times = [gather_once() for _ in range(rounds)]
    fresh = statistics.median(first_in_fresh_process() for _ in range(5))
    best, median = min(times), statistics.median(times)
    print(f"facts, in process: best {best:.2f} ms, median {median:.2f} ms ({rounds} rounds)")
    print(
        f"facts, first gathering in a fresh process (the modules it imports, socket and "
        f"fcntl, and the name lookup of fqdn included): {fresh:.2f} ms"
    )
    verdict = "met" if max(median, fresh) < TARGET_MS else "MISSED"
    print(f"target {TARGET_MS:.0f} ms: {verdict}")
    found = peer()
    if found is not None:
        name, ms = found
        print(f"peer {name}: {ms:.0f} ms, {ms / fresh:.0f}x ours")
    else:
        print("peer: neither facter nor ansible is installed")


if __name__ == "__main__":
    main()
