"""Start-up of the single file (convergent.pyz) against the installed package.

    .venv/bin/python bench/single_file.py [--rounds 15] [--out bench/results-pyz.md]

Builds convergent.pyz from this checkout, then times, in interleaved rounds (medians):

- ``--version`` and a 10-file run (W3's policy: ten files created in an empty
  directory, ``--converged-timeout 0``) with the installed package (this venv's
  ``convergent``) and with the file run by the same interpreter (``python -I``), so the
  difference is the file's alone; the file again under the system's ``/usr/bin/python3``
  when that is a Python the file runs on;
- the first run on a host: ``--version`` with an empty cache directory (the compiled
  modules extracted), each round in a new cache.

Prints a Markdown table with the ratios file / installed, and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"


def _policy(root: Path) -> str:
    lines = ["resources:"]
    for i in range(10):
        lines += [
            f"  - file: {root}/f{i:04d}",
            f'    content: "i am f{i:04d}\\n"',
            '    mode: "0644"',
        ]
    return "\n".join(lines) + "\n"


def _time(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=120, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv}: exit {done.returncode}: {done.stderr.decode()[-2000:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-pyz.md")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from convergent.remote.dist import build
    from convergent.remote.dist_boot import abi_tag

    work = Path(tempfile.mkdtemp(prefix="convergent-pyz-bench-"))
    try:
        pyz = build(work / "convergent.pyz")
        empty = work / "empty"
        empty.mkdir()
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LC_ALL": "C.UTF-8"}
        cached = dict(env, CONVERGENT_CACHE_DIR=str(work / "cache"))
        installed = dict(env, PYTHONPATH=str(REPO / "src"))
        command = str(Path(sys.executable).parent / "convergent")
        here = sys.executable
        probe = subprocess.run(
            [
                SYSTEM_PYTHON,
                "-I",
                "-c",
                "import importlib.machinery as m;print(m.EXTENSION_SUFFIXES[0][1:-3])",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        system = os.path.exists(SYSTEM_PYTHON) and probe.stdout.strip() == abi_tag()
        # Warm the cache and the page cache once.
        _time([here, "-I", str(pyz), "--version"], cached, empty)
        rows: dict[str, list[float]] = {}

        def run(label: str, argv: list[str], env: dict[str, str], fresh: Path | None) -> None:
            if fresh is not None:
                shutil.rmtree(fresh, ignore_errors=True)
                fresh.mkdir()
            rows.setdefault(label, []).append(_time(argv, env, empty))

        for r in range(args.rounds):
            out = work / "out"
            policy = work / "ten.yaml"
            policy.write_text(_policy(out))
            state = ["--state-dir", str(work / "state"), "--converged-timeout", "0"]
            ten = ["run", str(policy), *state]
            run("--version, installed", [command, "--version"], installed, None)
            run("--version, file (same python)", [here, "-I", str(pyz), "--version"], cached, None)
            run("10 files, installed", [command, *ten], installed, out)
            run("10 files, file (same python)", [here, "-I", str(pyz), *ten], cached, out)
            if system:
                run(
                    "--version, file (/usr/bin/python3)",
                    [SYSTEM_PYTHON, "-I", str(pyz), "--version"],
                    cached,
                    None,
                )
                run(
                    "10 files, file (/usr/bin/python3)",
                    [SYSTEM_PYTHON, "-I", str(pyz), *ten],
                    cached,
                    out,
                )
            first = dict(env, CONVERGENT_CACHE_DIR=str(work / f"cache-first-{r}"))
            run(
                "--version, file, first run (extracts)",
                [here, "-I", str(pyz), "--version"],
                first,
                None,
            )
            shutil.rmtree(work / f"cache-first-{r}", ignore_errors=True)
        size = pyz.stat().st_size
        base = {
            "--version": rows["--version, installed"],
            "10 files": rows["10 files, installed"],
        }
        lines = [
            f"convergent.pyz: {size / 1e6:.1f} MB; {args.rounds} interleaved rounds, medians; "
            f"{os.cpu_count()} cores; interpreter {sys.version.split()[0]} ({here})",
            "",
            "| what | median | min-max | ratio to installed (medians) | (minimums) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for label, times in rows.items():
            med = statistics.median(times)
            ref = base["--version" if label.startswith("--version") else "10 files"]
            ratio, low_ratio = med / statistics.median(ref), min(times) / min(ref)
            low, high = min(times) * 1000, max(times) * 1000
            lines.append(
                f"| {label} | {med * 1000:.0f} ms | {low:.0f}-{high:.0f} ms | {ratio:.2f} "
                f"| {low_ratio:.2f} |"
            )
        text = "\n".join(lines) + "\n"
        print(text)
        args.out.write_text(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
