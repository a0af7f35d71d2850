"""W9, the exchange: agents as separate processes sharing one etcd member on loopback.

- W9a: three agents run examples/exchange/ (each exports 2 files and collects every
  host's into its own directory: 8 files each, 24 in all). Measured: the time from the
  start of the last agent to the moment every agent has published that it is converged
  with all 24 files in place (mgmt's announcement: under 1 s; target: under 0.3 s).
- W9b: 50 agents, each exporting 10 files and collecting all 500 into its own directory
  (25,000 files). Measured: the time to full convergence (every agent converged, every
  file in place) from the first and from the last agent's start, etcd's request rate
  over that time (gRPC requests handled, from its /metrics), and each agent's RSS
  (VmHWM, the peak) once converged. Target: under 5 s.

Both also report the agents' CPU time (user + sys of every agent process by the time all
converged, from /proc): on a machine others share, the steadier figure for a comparison.

The harness watches ``/convergent/`` through its own etcd session and counts the
files on each converged event; agents run continuously and are stopped with SIGTERM
after. Writes ``bench/results-w9.md`` (the format of results.md) and prints it::

    .venv/bin/python bench/exchange.py [--agents 50] [--exports 10] [--repeats 3]
        [--only a|b] [--wire http|grpc] [--profile HOST=FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "exchange"
OUT = Path(__file__).resolve().parent / "results-w9.md"
BOUND = 120.0  # seconds any one measurement may take
# Agents' files and state live on tmpfs when there is one: each file write is fsynced,
# and 25,000 fsyncs on this machine's disk take ~50 s whatever the exchange does.
SHM = "/dev/shm"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_etcd(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    """One etcd member with the fast test timings; its client URL."""
    client, peer = _port(), _port()
    url = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(
        [
            "etcd",
            "--name",
            "w9",
            "--data-dir",
            str(base / "etcd"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"w9=http://127.0.0.1:{peer}",
            "--heartbeat-interval=10",
            "--election-timeout=100",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    for line in proc.stderr:
        if b"ready to serve client requests" in line:
            break
        if time.monotonic() > deadline:
            raise SystemExit("etcd did not start")
    return proc, url


def etcd_requests(url: str) -> int:
    """gRPC requests etcd has handled so far."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("grpc_server_handled_total{")
    )


PROFILE: dict[str, str] = {}  # host -> where its cProfile output (CPU time) goes (--profile)
_PROFILED = (
    "import atexit, cProfile, os, runpy, sys, time; "
    "p = cProfile.Profile(time.perf_counter if os.environ.get('W9_WALL') else time.process_time); "
    "atexit.register(p.dump_stats, {out!r}); sys.argv[0] = 'convergent'; p.enable(); "
    "runpy.run_module('convergent', run_name='__main__', alter_sys=True)"
)


def spawn(url: str, host: str, policy: Path, state: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # Under a profile: the statistics are written at exit (the agent leaves by os._exit
    # after running the atexit functions, so cProfile's own -o would never write them).
    # The command users run (the venv's console script), as W1-W7 run it; -m if absent.
    script = Path(sys.executable).parent / "convergent"
    start = [str(script)] if script.exists() else [sys.executable, "-m", "convergent"]
    if host in PROFILE:
        start = [sys.executable, "-c", _PROFILED.format(out=PROFILE[host])]
    return subprocess.Popen(
        [
            *start,
            "run",
            str(policy),
            "--hostname",
            host,
            "--state-dir",
            str(state),
            "--etcd-endpoints",
            url,
            "--insecure",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def count(dirs: list[Path]) -> int:
    total = 0
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            total += sum(1 for _ in os.scandir(d))
    return total


async def converged_at(url: str, hosts: list[str], dirs: list[Path], files: int) -> float:
    """perf_counter time at which every host's converged key is 1 and ``files`` exist."""
    from convergent.world.etcd import EtcdWorld
    from convergent.world.keys import ROOT, split_converged_key, split_host_key

    world = EtcdWorld([url], hostname="w9-harness")
    await world.start()
    state: dict[str, str] = {}
    done = asyncio.Event()
    at: list[float] = []
    wanted = set(hosts)

    def seen(key: str, value: str | None) -> None:
        host = split_converged_key(key)
        split = split_host_key(key)
        kind = "converged" if host is not None else split[1].partition("/")[0] if split else None
        if kind is not None and not done.is_set():
            WRITES[kind] = WRITES.get(kind, 0) + 1
        if host is None or host not in wanted:
            return
        if value is None:
            state.pop(host, None)
        else:
            state[host] = value
        everyone = len(state) == len(wanted) and all(v == "1" for v in state.values())
        if everyone and not done.is_set() and count(dirs) >= files:
            at.append(time.perf_counter())
            done.set()

    stop = await world.watch(ROOT, seen, prefix=True)
    try:
        async with asyncio.timeout(BOUND):
            await done.wait()
    finally:
        stop()
        await world.aclose()
    return at[0]


WRITES: dict[str, int] = {}  # key kind (converged, exports, alive) -> writes seen up to the end


def cpu_s(pid: int) -> float:
    """CPU seconds (user + sys) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def w9a(base: Path) -> tuple[float, float]:
    """Seconds from the last of three agents' start to all converged with 24 files, and
    the agents' CPU seconds (user + sys) by then."""
    etcd, url = start_etcd(base)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        dirs, policies = [], {}
        for host in "abc":
            text = (EXAMPLES / f"{host}.yaml").read_text()
            policies[host] = base / f"{host}.yaml"
            policies[host].write_text(text.replace("/tmp/exchange", f"{base}/x"))
            dirs.append(base / f"x{host.upper()}")
        watcher = asyncio.new_event_loop()
        try:
            waiting = watcher.create_task(converged_at(url, list("abc"), dirs, 24))
            watcher.run_until_complete(asyncio.sleep(0.1))  # the harness's watch is in place
            for host in "abc":
                procs.append(spawn(url, host, policies[host], base / f"s{host}"))
            last = time.perf_counter()
            end = watcher.run_until_complete(waiting)
        finally:
            watcher.close()
        return end - last, sum(cpu_s(p.pid) for p in procs)
    finally:
        stop_all(procs)
        etcd.kill()
        etcd.wait()


def w9b(base: Path, agents: int, exports: int) -> dict[str, float]:
    etcd, url = start_etcd(base)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        hosts = [f"h{i:02d}" for i in range(agents)]
        dirs = [base / "x" / h for h in hosts]
        (base / "x").mkdir()
        for host in hosts:
            lines = ["resources:", f"  - file: {base}/x/{host}/", "    state: directory"]
            for i in range(exports):
                lines += [
                    f"  - file: {host}-{i}",
                    f"    path: {base}/x/{host}/{host}-{i}",
                    f'    content: "{host} {i}\\n"',
                    "    meta: {export: true}",
                ]
            lines += ["collect:", "  - kind: file", f"    pattern: {base}/x/{host}/", ""]
            (base / f"{host}.yaml").write_text("\n".join(lines))
        watcher = asyncio.new_event_loop()
        WRITES.clear()
        try:
            waiting = watcher.create_task(converged_at(url, hosts, dirs, agents * agents * exports))
            watcher.run_until_complete(asyncio.sleep(0.1))
            before = etcd_requests(url)
            etcd_before = cpu_s(etcd.pid)
            first = time.perf_counter()
            for host in hosts:
                procs.append(spawn(url, host, base / f"{host}.yaml", base / f"s{host}"))
            last = time.perf_counter()
            end = watcher.run_until_complete(waiting)
        finally:
            watcher.close()
        cpu = [cpu_s(p.pid) for p in procs]
        if os.environ.get("W9_CPU"):
            print("agents CPU s:", " ".join(f"{c:.2f}" for c in cpu), file=sys.stderr)
        etcd_cpu = cpu_s(etcd.pid) - etcd_before
        requests = etcd_requests(url) - before
        rss = [rss_kib(p.pid) / 1024 for p in procs]
        return {
            "from_first": end - first,
            "from_last": end - last,
            "rate": requests / (end - first),
            "requests": requests,
            "rss_median": statistics.median(rss),
            "rss_max": max(rss),
            "cpu": sum(cpu),
            "cpu_max": max(cpu),
            "etcd_cpu": etcd_cpu,
        }
    finally:
        stop_all(procs)
        etcd.kill()
        etcd.wait()


def machine() -> list[str]:
    mem = Path("/proc/meminfo").read_text().split()[1]
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu}, {int(mem) / 1024 / 1024:.1f} GiB RAM",
        f"- kernel: {platform.release()}; Python {platform.python_version()}; "
        f"{etcd.splitlines()[0] if etcd else 'etcd'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--exports", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["a", "b"], help="run W9a or W9b alone")
    parser.add_argument("--out", type=Path, default=OUT, help="where the results go")
    parser.add_argument(
        "--wire", choices=["http", "grpc"],
        help="the agents' wire to etcd (CONVERGENT_ETCD_WIRE; default: the gateway's, http)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="append", default=[], metavar="HOST=FILE",
        help="run agent HOST under cProfile, its statistics written to FILE",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("etcd") is None:
        raise SystemExit("etcd is not installed (apt-get install etcd-server)")
    if args.wire:
        os.environ["CONVERGENT_ETCD_WIRE"] = args.wire  # the agents' and the harness's
    for item in args.profile:
        host, _, path = item.partition("=")
        PROFILE[host] = str(Path(path).resolve())
    a_runs: list[tuple[float, float]] = []
    b_runs: list[dict[str, float]] = []
    where = SHM if os.path.isdir(SHM) else None
    for _ in range(args.repeats if args.only != "b" else 0):
        with tempfile.TemporaryDirectory(prefix="w9a-", dir=where) as tmp:
            a_runs.append(w9a(Path(tmp)))
            print(f"W9a {a_runs[-1][0]:.3f} s, agents' CPU {a_runs[-1][1]:.2f} s", flush=True)
    if args.only != "a":
        with tempfile.TemporaryDirectory(prefix="w9b-", dir=where) as tmp:
            b_runs.append(w9b(Path(tmp), args.agents, args.exports))
        print(
            f"W9b {b_runs[0]['from_first']:.3f} s, agents' CPU {b_runs[0]['cpu']:.1f} s, "
            f"etcd's CPU {b_runs[0]['etcd_cpu']:.1f} s",
            flush=True,
        )
    files = args.agents * args.agents * args.exports
    lines = [
        "# convergent: W9 exchange results",
        "",
        *machine(),
        f"- mode: W9a {args.repeats} runs (median), W9b 1 run; agents are separate "
        "`convergent run` processes on one etcd member on 127.0.0.1 (plain http, "
        "heartbeat 10 ms, election 100 ms; the agents' wire: "
        f"{os.environ.get('CONVERGENT_ETCD_WIRE') or 'default'}); the harness watches "
        "the converged keys",
        "- converged: every agent's /convergent/converged/HOST is 1 and every "
        "expected file exists; agents' CPU: the sum of their user + sys time by then",
        f"- files and state directories on {'tmpfs (/dev/shm)' if where else 'the disk'}: "
        "the exchange is measured, not the disk (each file write is fsynced: ~2 ms each on "
        "this machine's disk, 50 s for W9b's 25,000 files)",
        "",
        "## Results",
        "",
        "| workload | tool | median wall s | min-max s | agents' CPU s | peak RSS MiB | runs "
        "| notes |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    targets = []
    if a_runs:
        walls = [w for w, _ in a_runs]
        a = statistics.median(walls)
        lines.append(
            f"| W9a exchange 3 agents, 24 files | convergent | {a:.3f} | "
            f"{min(walls):.3f}-{max(walls):.3f} | "
            f"{statistics.median(c for _, c in a_runs):.2f} | - | {len(a_runs)} | from the "
            "last agent's start to all converged |"
        )
        targets.append(
            f"| W9a last start -> all converged | < 0.3 s | {a:.3f} s | "
            f"{'yes' if a < 0.3 else '**MISSED**'} |"
        )
    if b_runs:
        b = b_runs[0]
        lines.append(
            f"| W9b {args.agents} agents x {args.exports} exports, {files:,} files | convergent "
            f"| {b['from_first']:.3f} | - | {b['cpu']:.1f} | {b['rss_max']:.0f} | 1 | from the "
            f"first start; {b['from_last']:.3f} s from the last; etcd {b['rate']:.0f} "
            f"requests/s ({b['requests']:,.0f}); RSS per agent median {b['rss_median']:.0f} "
            f"MiB; CPU of the busiest agent {b['cpu_max']:.2f} s; etcd's CPU meanwhile "
            f"{b['etcd_cpu']:.1f} s; writes seen by a watcher until then: "
            f"{', '.join(f'{k} {v:,}' for k, v in sorted(WRITES.items()))} |"
        )
        targets.append(
            f"| W9b full convergence, {args.agents} agents | < 5 s | {b['from_first']:.3f} s | "
            f"{'yes' if b['from_first'] < 5 else '**MISSED**'} |"
        )
    lines += [
        "",
        "## Targets (issue 16)",
        "",
        "| target | goal | measured | met |",
        "| --- | --- | --- | --- |",
        *targets,
        "",
    ]
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
