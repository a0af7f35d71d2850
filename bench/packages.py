"""W8: install sl+cowsay+hello from removed, then check them installed.

    .venv/bin/python bench/packages.py [--repeats N]    # W8 alone (root, apt)
    .venv/bin/python bench/run.py --workloads W8        # the same, inside results.md

Installs, each timed from the same start (the three packages and what apt pulled in for
them removed; their .deb files already in apt's cache, so no case downloads):

- convergent: three ``pkg`` resources, grouped by the engine into one ``apt-get install``;
- three ``apt-get install`` calls, one per package (what a per-package tool does);
- one plain ``apt-get install sl cowsay hello`` (the floor);
- CFEngine: three ``packages:`` promises through its ``apt_get`` module (when
  ``cf-agent`` and that module are there; the harness installs the module from CFEngine's
  own masterfiles into its workdir when missing, and takes it away again at the end).

Checks, all three installed: convergent (the same policy, the whole ``convergent run``:
dpkg's status read in process), the check alone (``Pkg.check_group`` timed in this
process), a no-op ``apt-get install`` of the three, ``dpkg-query -W`` (reference), CFEngine.

Targets (issue 7): the grouped install within 10% of the single plain apt-get; the
installed check at least 20x faster than a no-op ``apt-get install``, reported both for
the whole ``convergent run`` (start-up included) and for the check itself. The machine is left
as found: the packages installed before are installed again, the others removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import policies
from measure import RunFailed, Summary, run_once, summarize
from tools import PROJECT_BIN, REPO, Invocation, clean_env
from workloads import W8_PACKAGES

__all__ = ["Case", "main", "measure_packages", "render"]

DEPENDENCIES = ("libtext-charwidth-perl",)  # what apt installs with cowsay on Debian 12
CF_MODULE = Path("/var/lib/cfengine3/modules/packages/apt_get")
CF_SOURCE = Path("/usr/share/cfengine3/masterfiles/modules/packages/vendored/apt_get.mustache")
APT = ("apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300")


@dataclass
class Case:
    """One row: what ran, its timings (None when it could not run) and why not."""

    what: str
    tool: str
    summary: Summary | None = None
    problem: str = ""


_apt_config: str | None = None  # APT_CONFIG for every tool (--stock-apt-cache)


def _stock_apt_cache(work: Path) -> list[Path]:
    """Point apt (every tool's) at a copy of /etc/apt/apt.conf.d without the settings that
    turn its binary cache off (container images do: ``Dir::Cache::pkgcache ""``), so each
    apt command does not rebuild the cache from the lists. Returns the cache files apt
    will create, to remove at the end."""
    global _apt_config
    parts = work / "apt.conf.d"
    parts.mkdir()
    for entry in sorted(Path("/etc/apt/apt.conf.d").iterdir()):
        if entry.is_file() and "pkgcache" not in entry.read_text(errors="replace"):
            shutil.copyfile(entry, parts / entry.name)
    config = work / "apt.conf"
    config.write_text(f'Dir::Etc::parts "{parts}";\n')
    _apt_config = str(config)
    cache = Path("/var/cache/apt")
    return [p for p in (cache / "pkgcache.bin", cache / "srcpkgcache.bin") if not p.exists()]


def _env() -> dict[str, str]:
    env = clean_env(DEBIAN_FRONTEND="noninteractive")
    if _apt_config is not None:
        env["APT_CONFIG"] = _apt_config
    if not (PROJECT_BIN / "convergent").exists():  # run from a source tree: src/ on the path
        paths = [str(REPO / "src"), *os.environ.get("PYTHONPATH", "").split(":")]
        env["PYTHONPATH"] = ":".join(p for p in paths if p)
    return env


def _convergent(policy: Path) -> list[str]:
    exe = PROJECT_BIN / "convergent"
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "convergent"]
    return [*head, "run", str(policy), "--converged-timeout", "0"]


def _installed(names: tuple[str, ...]) -> dict[str, bool]:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *names],
        capture_output=True,
        text=True,
    )
    found = dict.fromkeys(names, False)
    for line in done.stdout.splitlines():
        name, _, status = line.partition(" ")
        if name in found and status.endswith(" installed"):
            found[name] = True
    return found


def _apt(*argv: str) -> None:
    done = subprocess.run([*APT, *argv], capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise RuntimeError(f"apt-get {' '.join(argv)}: {done.stdout[-800:]}{done.stderr}")


def _remove_all() -> None:
    present = [n for n, ok in _installed((*W8_PACKAGES, *DEPENDENCIES)).items() if ok]
    if present:
        _apt("remove", *present)


class _Runner:
    def __init__(self, work: Path, repeats: int, echo: Callable[[str], None]) -> None:
        self.work = work
        self.repeats = repeats
        self.echo = echo
        self.cases: list[Case] = []

    def time(self, case: Case, inv: Invocation, *, start_removed: bool) -> Case:
        self.cases.append(case)
        samples = []
        for i in range(self.repeats):
            if start_removed:
                _remove_all()
            elif not all(_installed(W8_PACKAGES).values()):
                _apt("install", *W8_PACKAGES)
            try:
                samples.append(run_once(inv, self.work / f"log-{len(self.cases)}-{i}", 1800))
            except RunFailed as exc:
                case.problem = f"failed: {str(exc).splitlines()[0]}"
                break
            lacking = [n for n, ok in _installed(W8_PACKAGES).items() if not ok]
            if lacking:
                case.problem = f"wrong result: {', '.join(lacking)} not installed"
                break
        if samples and not case.problem:
            case.summary = summarize(samples)
        s = case.summary
        shown = f"{s.median:.3f} s median" if s else case.problem
        self.echo(f"  W8 {case.what:28} {case.tool:22} {shown}")
        return case


def _check_in_process(names: tuple[str, ...], runs: int = 50) -> Summary:
    """The check itself, without the process around it: ``Pkg.check_group`` on installed
    packages, in this process (the start-up of a ``convergent run`` is W3's business)."""
    import asyncio
    import time

    from convergent.resources.base import Context
    from convergent.resources.pkg import Pkg

    shared: dict[object, object] = {}

    def share(factory: Callable[[], object]) -> object:
        if factory not in shared:
            shared[factory] = factory()
        return shared[factory]

    ctx = Context("pkg", ready=lambda: None, event=lambda: None, log=print, shared=share)
    members = [(Pkg(n, backend="apt"), ctx) for n in names]

    async def go() -> list[float]:
        walls = []
        for _ in range(runs):
            start = time.perf_counter()
            found = await Pkg.check_group(members)
            walls.append(time.perf_counter() - start)
            if any(c is not None for c in found):
                raise RuntimeError(f"not all installed: {found}")
        return walls

    walls = sorted(asyncio.run(go()))
    return Summary(walls[len(walls) // 2], walls[0], walls[-1], 0.0, runs)


def _cfengine_ready() -> tuple[str | None, bool]:
    """(why CFEngine cannot run W8, or None; whether its module was installed here)."""
    if shutil.which("cf-agent") is None:
        return "cf-agent not found: run `make bench-peers`", False
    if CF_MODULE.exists():
        return None, False
    if not CF_SOURCE.exists():
        return f"its apt_get package module is missing ({CF_SOURCE})", False
    CF_MODULE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CF_SOURCE, CF_MODULE)
    CF_MODULE.chmod(0o755)
    return None, True


def measure_packages(
    repeats: int, echo: Callable[[str], None], *, stock_apt_cache: bool = False
) -> list[Case]:
    """Run W8 (see the module docstring); the machine is put back as it was.
    ``stock_apt_cache``: with apt's binary cache kept, as on a stock Debian host."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return [Case("install", "convergent", problem="not run: needs root and apt-get")]
    names = W8_PACKAGES
    before = _installed((*names, *DEPENDENCIES))
    work = Path(tempfile.mkdtemp(prefix="convergent-w8-", dir="/tmp"))
    made = _stock_apt_cache(work) if stock_apt_cache else []
    cf_missing, cf_installed_module = _cfengine_ready()
    env = _env()
    run = _Runner(work, repeats, echo)
    try:
        policy = work / "policy.yaml"
        policy.write_text(policies.convergent_packages(names))
        cf_policy = work / "policy.cf"
        cf_policy.write_text(policies.cfengine_packages(names))
        cf_policy.chmod(0o600)
        ours = Invocation(_convergent(policy), env, work)
        cf = Invocation(["cf-agent", "-K", "-f", str(cf_policy)], env, work)
        each = " && ".join(f"{' '.join(APT)} install {n}" for n in names)
        echo("  W8 warm-up: one untimed install (fills apt's archive cache) and removal")
        _apt("install", *names)
        if cf_missing is None:
            _remove_all()
            done = subprocess.run(cf.argv, capture_output=True, text=True, env=env)
            if done.returncode != 0 or not all(_installed(names).values()):
                cf_missing = f"its packages promise failed: {done.stdout[-300:]}"
        run.time(Case("install", "convergent (grouped)"), ours, start_removed=True)
        run.time(
            Case("install", "3 x apt-get install"),
            Invocation(["sh", "-c", each], env, work),
            start_removed=True,
        )
        run.time(
            Case("install", "1 x apt-get install"),
            Invocation([*APT, "install", *names], env, work),
            start_removed=True,
        )
        if cf_missing is None:
            run.time(Case("install", "CFEngine"), cf, start_removed=True)
        else:
            run.cases.append(Case("install", "CFEngine", problem=f"not run: {cf_missing}"))
        run.time(Case("check installed", "convergent"), ours, start_removed=False)
        inproc = Case("check installed", "convergent check_group (in process)")
        try:
            inproc.summary = _check_in_process(names)
        except RuntimeError as exc:
            inproc.problem = f"wrong result: {exc}"
        run.cases.append(inproc)
        run.time(
            Case("check installed", "no-op apt-get install"),
            Invocation([*APT, "install", *names], env, work),
            start_removed=False,
        )
        run.time(
            Case("check installed", "dpkg-query -W"),
            Invocation(["dpkg-query", "-W", *names], env, work),
            start_removed=False,
        )
        if cf_missing is None:
            run.time(Case("check installed", "CFEngine"), cf, start_removed=False)
    finally:
        _restore(before)
        global _apt_config
        _apt_config = None
        for path in made:
            path.unlink(missing_ok=True)
        if cf_installed_module:
            CF_MODULE.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    return run.cases


def _restore(before: dict[str, bool]) -> None:
    now = _installed(tuple(before))
    extra = [n for n, ok in now.items() if ok and not before[n]]
    lacking = [n for n, ok in before.items() if ok and not now[n]]
    if extra:
        _apt("remove", *extra)
    if lacking:
        _apt("install", *lacking)


def _find(cases: list[Case], what: str, tool: str) -> Summary | None:
    for case in cases:
        if case.what == what and case.tool == tool:
            return case.summary
    return None


def render(cases: list[Case], *, stock_apt_cache: bool = False) -> list[str]:
    """The W8 section of results.md: the table and the two targets, met or MISSED."""
    cache = "kept (stock Debian)" if stock_apt_cache else "as this host configures it"
    lines = [
        "## W8 packages (sl+cowsay+hello, apt, .deb files cached)",
        "",
        f"apt's binary cache (pkgcache.bin): {cache}.",
        "",
        "| case | tool | median wall s | min-max s | runs | note |",
        "| --- | --- | ---: | --- | ---: | --- |",
    ]
    for c in cases:
        s = c.summary
        if s is None:
            lines.append(f"| {c.what} | {c.tool} | - | - | 0 | {c.problem} |")
        else:
            lines.append(
                f"| {c.what} | {c.tool} | {s.median:.3f} | {s.low:.3f}-{s.high:.3f} | "
                f"{s.runs} | {c.problem} |"
            )
    grouped = _find(cases, "install", "convergent (grouped)")
    single = _find(cases, "install", "1 x apt-get install")
    check = _find(cases, "check installed", "convergent")
    inproc = _find(cases, "check installed", "convergent check_group (in process)")
    noop = _find(cases, "check installed", "no-op apt-get install")
    lines += ["", "| target | goal | measured | met |", "| --- | --- | --- | --- |"]
    if grouped and single:
        ratio = grouped.median / single.median
        met = "yes" if ratio <= 1.10 else "**MISSED**"
        lines.append(
            f"| W8 grouped install / one apt-get install | <= 1.10 | {ratio:.2f} "
            f"({grouped.median:.3f} s / {single.median:.3f} s) | {met} |"
        )
    else:
        lines.append("| W8 grouped install / one apt-get install | <= 1.10 | not measured | - |")
    if check and noop:
        speedup = noop.median / check.median
        met = "yes" if speedup >= 20 else "**MISSED**"
        lines.append(
            f"| W8 no-op apt-get install / convergent check | >= 20x | {speedup:.1f}x "
            f"({noop.median:.3f} s / {check.median:.3f} s) | {met} |"
        )
    else:
        lines.append("| W8 no-op apt-get install / convergent check | >= 20x | not measured | - |")
    if inproc and noop:
        speedup = noop.median / inproc.median
        met = "yes" if speedup >= 20 else "**MISSED**"
        lines.append(
            f"| W8 no-op apt-get install / the check itself (in process) | >= 20x | "
            f"{speedup:,.0f}x ({noop.median:.3f} s / {inproc.median * 1e3:.2f} ms) | {met} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case")
    p.add_argument(
        "--stock-apt-cache",
        action="store_true",
        help="keep apt's binary cache, as a stock Debian host does (containers turn it off)",
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    echo = lambda line: print(line, flush=True)  # noqa: E731
    cases = measure_packages(args.repeats, echo, stock_apt_cache=args.stock_apt_cache)
    print()
    print("\n".join(render(cases, stock_apt_cache=args.stock_apt_cache)))
    return 1 if any(c.problem.startswith("wrong") for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
