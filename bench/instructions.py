"""Instruction counts of whole ``convergent run`` processes (valgrind's callgrind): W2,
W3 and W4 for one or more checkouts, each run twice so that no bytecode is compiled.

    .venv/bin/python bench/instructions.py SRC [SRC ...] [--workloads W2,W3,W4]

``SRC`` is a checkout's ``src`` directory (``/path/to/checkout/src``, or a tree made by
``git archive COMMIT src``). Instruction counts do not depend on the load of the
machine (they repeat to ~0.3%), unlike wall time; ``bench/pairs.py`` gives the wall
times. Two things keep the runs comparable:

- ``PYTHONHASHSEED=0`` and no ``PYTHON*`` variable of the caller (a
  ``PYTHONDONTWRITEBYTECODE=1`` would make every run compile its modules);
- valgrind 3.19 has no ``openat2``: it fails with ENOSYS, and a checkout whose
  ``host/fs.py`` finds directories again with it would walk every path from ``/``
  (~90,000 instructions per file, none of them spent on a real machine). For such a
  checkout the run replaces the syscall by ``openat`` through the same ctypes call (the
  same user-space work; ~0.6 M instructions for the replacement itself).

Each workload has its own directory under ``--dir`` (default: a temporary one) and
each checkout its own state directory there; the files are laid out as ``workloads``
lays them out for ``run.py`` and ``pairs.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import workloads as wl
from tools import by_name

__all__ = ["count", "main"]

_EMULATE = """
import os
import convergent.host.fs as F
if hasattr(F, "_Openat2"):
    _FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
    def _call(self, path):
        call = self._syscall
        types = call.argtypes  # openat's flags where openat2 takes its struct: a long
        if types[3] is not types[0]:
            call.argtypes = (types[0], types[1], types[2], types[0], types[4])
        fd = call(257, -100, path, _FLAGS, 0)
        return fd if fd >= 0 else -1
    F._Openat2.__call__ = _call
"""


def _launcher(src: Path) -> str:
    """``python -c`` code running the CLI of ``src`` as its console script does."""
    emulate = _EMULATE if (src / "convergent" / "host" / "fs.py").exists() else ""
    return (
        f"import sys\nsys.path.insert(0, {str(src)!r})\n{emulate}\n"
        "import convergent.cli.main as m\nsys.argv[0] = 'convergent'\n"
        "sys.exit(m.entry() if hasattr(m, 'entry') else m.main())\n"
    )


def count(src: Path, key: str, workdir: Path) -> int:
    """Instructions of the second of two runs of workload ``key`` with checkout ``src``."""
    workload = wl.create(key, 10 if key == "W3" else 1000)
    target = workdir / key / "target"
    policy = workdir / key / "policy.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(by_name("convergent").generate(workload, target))
    state = workdir / key / f"state-{abs(hash(str(src))):x}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONHASHSEED="0", LC_ALL="C.UTF-8")
    argv = [sys.executable, "-c", _launcher(src), "run", str(policy)]
    argv += ["--converged-timeout", "0", "--state-dir", str(state)]
    found = 0
    for measured in (False, True):
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        wl.prepare(workload, target)
        cmd = argv
        if measured:
            cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{src} {key}: exit {done.returncode}: {done.stderr[-2000:]}")
        problems = wl.verify(workload, target)
        if problems:
            raise RuntimeError(f"{src} {key}: wrong result: {problems[:3]}")
        if measured:
            match = re.search(r"Collected : (\d+)", done.stderr)
            if match is None:
                raise RuntimeError(f"{src} {key}: no callgrind total in {done.stderr[-500:]}")
            found = int(match.group(1))
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("src", nargs="+", type=Path, help="a checkout's src directory")
    p.add_argument("--workloads", default="W2,W3,W4")
    p.add_argument("--dir", type=Path, help="where the workloads are laid out")
    args = p.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="convergent-instructions-"))
    keys = args.workloads.split(",")
    print("| src | " + " | ".join(f"{k} M instructions" for k in keys) + " |")
    print("| --- |" + " ---: |" * len(keys))
    try:
        for src in args.src:
            counts = [count(src.resolve(), key, workdir) for key in keys]
            print(f"| {src} | " + " | ".join(f"{n / 1e6:.1f}" for n in counts) + " |", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
