"""W10, remote: bootstrap and converge a 10-file graph on 3 hosts over SSH.

The hosts are network namespaces (10.200.1.1-3 on a bridge, each with its own sshd:
tests/sshd_support.py's lab); none has convergent installed. Every tool converges the
same 10 files (one directory the hosts share, as namespaces share the file system) on
all three hosts, from this machine, over SSH, with the same key and known_hosts:

- convergent: ``convergent run site.yaml --remote URL x3 --converged-timeout 0``. First
  run: ``--no-caching`` (the single file is copied to every host) and the files absent;
  cached run: the single file on the hosts, the files in place.
- Ansible (``ansible-playbook``, apt): a playbook as its expert writes it (no fact
  gathering, pipelining, ``forks`` = hosts, one ``copy`` task looping over the files);
  ControlPersist as it ships (the cached run reuses the first run's connections).
- pyinfra (the project's venv): a deploy of ``files.put`` operations, ``-y``, ``--parallel``
  = hosts.

Each row is the median wall time of ``--repeats`` runs (first runs: the files removed
before each). Targets (issue 10): convergent's cached run under 1 s, and at least 5x
faster than Ansible's; printed met or **MISSED**. Writes ``bench/results-w10.md``::

    .venv/bin/python bench/remote.py [--repeats 3]

``--phases N`` runs convergent's cached run only, N times, under a wrapper that stamps
each phase on the initiator (Python's start, the command line and the policies, the
asyncssh import, the SSH handshakes, the one round trip that checks the single file and
starts the agent, the agent's run, the end) with the shared monotonic clock, and counts
the CPU time of the initiator (its rusage) and of each host (what its sshd reaped: the
session, the probe, the agent); the medians go to a section of ``results-w10.md``.

Root is needed (namespaces); the lab is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.sshd_support import ClientKeys, SshLab, keygen  # noqa: E402

OUT = Path(__file__).resolve().parent / "results-w10.md"
HOSTS = ("a", "b", "c")
FILES = 10
BOUND = 300.0


def contents() -> dict[str, str]:
    return {f"f{i:02d}": f"file {i} of the remote workload\n" for i in range(FILES)}


def write_convergent(base: Path, lab: SshLab, target: Path) -> list[str]:
    """One policy per host, naming it (``remote:``), its files under TARGET/HOST/."""
    policies = []
    for host in HOSTS:
        policy = base / f"{host}.yaml"
        policy.write_text(
            f"remote: ssh://root@{lab.address[host]}#{host}\nresources:\n"
            + "".join(
                f'  - file: {target / host / name}\n    content: "{text.rstrip()}\\n"\n'
                for name, text in contents().items()
            )
        )
        policies.append(str(policy))
    return policies


def write_ansible(base: Path, lab: SshLab, key: Path, known: Path, target: Path) -> list[str]:
    inventory = base / "hosts.ini"
    inventory.write_text(
        "[all]\n"
        + "".join(f"{h} ansible_host={lab.address[h]}\n" for h in HOSTS)
        + "[all:vars]\nansible_user=root\n"
        f"ansible_ssh_private_key_file={key}\nansible_python_interpreter=/usr/bin/python3\n"
        f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'\n"
    )
    items = "".join(
        f'      - {{name: {name}, content: "{text.rstrip()}\\n"}}\n'
        for name, text in contents().items()
    )
    playbook = base / "site.yml"
    playbook.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: files\n      copy:\n"
        f'        dest: "{target}/{{{{ inventory_hostname }}}}/{{{{ item.name }}}}"\n'
        '        content: "{{ item.content }}"\n'
        "        mode: '0644'\n"
        f"      loop:\n{items}"
    )
    return [_peer("ansible-playbook"), "-i", str(inventory), "-f", str(len(HOSTS)), str(playbook)]


def write_pyinfra(base: Path, lab: SshLab, key: Path, known: Path, target: Path) -> list[str]:
    inventory = base / "inventory.py"
    data = (
        f'{{"ssh_user": "root", "ssh_key": "{key}", "ssh_known_hosts_file": "{known}", '
        '"ssh_strict_host_key_checking": "yes"}'
    )
    inventory.write_text(
        "hosts = [\n"
        + "".join(
            f'    ("{h}", {{**{data}, "ssh_hostname": "{lab.address[h]}"}}),\n' for h in HOSTS
        )
        + "]\n"
    )
    deploy = base / "deploy.py"
    deploy.write_text(
        "from io import StringIO\nfrom pyinfra import host\nfrom pyinfra.operations import files\n"
        + "".join(
            f'files.put(name="{name}", src=StringIO({text!r}), '
            f'dest=f"{target}/{{host.name}}/{name}", mode="644")\n'
            for name, text in contents().items()
        )
    )
    return [_peer("pyinfra"), "-y", "--parallel", str(len(HOSTS)), str(inventory), str(deploy)]


def _peer(name: str) -> str:
    """A peer's command: beside this Python, in ``make bench-peers``' venv, or on PATH."""
    for where in (Path(sys.executable).parent, ROOT / "bench" / ".peers-venv" / "bin"):
        if (where / name).exists():
            return str(where / name)
    return shutil.which(name) or name


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=BOUND)
    took = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return took


def verify(target: Path) -> None:
    for host in HOSTS:
        where = target / host
        found = {p.name: p.read_text() for p in where.iterdir() if not p.name.startswith(".")}
        if found != contents():
            raise RuntimeError(f"{where}: not the expected files: {sorted(found)}")


#: Run as ``python -c PHASES ARGS``: convergent's ``ARGS`` with a stamp (``@phase
#: MONOTONIC CPU WHAT``, on stderr) at each phase; the code under test is not changed.
PHASES = r"""
import os, sys, time
def mark(what):
    os.write(2, f"@phase {time.monotonic():.6f} {time.process_time():.6f} {what}\n".encode())
mark("python")
import runpy
from convergent.remote import bootstrap, fleet, ssh
def wrap(owner, name, before, after):
    real = getattr(owner, name)
    def call(*a, **k):
        mark(before(*a)); out = real(*a, **k); mark(after(*a)); return out
    setattr(owner, name, call)
wrap(ssh, "load_asyncssh", lambda: "asyncssh", lambda: "asyncssh imported")
wrap(bootstrap, "payload", lambda: "payload", lambda: "payload found")
def awrap(owner, name, before, after):
    real = getattr(owner, name)
    async def call(*a, **k):
        mark(before(*a)); out = await real(*a, **k); mark(after(*a)); return out
    setattr(owner, name, call)
awrap(fleet, "connect", lambda t, *o: f"connect {t.name}", lambda t, *o: f"connected {t.name}")
awrap(fleet.Fleet, "run", lambda self, w: "fleet", lambda self, w: "fleet done")
awrap(fleet.Fleet, "_run", lambda self, c, n, *r: f"start {n}", lambda self, c, n, *r: f"ended {n}")
init = fleet.Fleet.__init__
def __init__(self, config, payload, report):
    def seen(host, line, error):
        if line.startswith("bootstrap: "):
            mark(f"probed {host}")
        elif line.startswith("resources: "):
            mark(f"converged {host}")
        report(host, line, error)
    init(self, config, payload, seen)
fleet.Fleet.__init__ = __init__
real_exit = os._exit
def _exit(code):
    mark("exit"); real_exit(code)
os._exit = _exit
sys.argv = ["convergent", *sys.argv[1:]]
runpy.run_module("convergent", run_name="__main__", alter_sys=True)
"""


def reaped_cpu(pid: int) -> float:
    """CPU seconds of the children process ``pid`` has reaped (an sshd: its sessions)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def phased(argv: list[str], env: dict[str, str], cwd: Path, lab: SshLab) -> dict[str, float]:
    """One run of convergent (``argv`` without the interpreter) under :data:`PHASES`: each
    phase's seconds, the initiator's CPU and each host's."""
    import resource

    hosts_before = {h: reaped_cpu(lab.sshd[h].pid) for h in HOSTS}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", PHASES, *argv[3:]], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = proc.communicate(timeout=BOUND)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    initiator = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"convergent failed ({proc.returncode}):\n{out}\n{err}")
    at: dict[str, float] = {}
    for line in err.splitlines():
        if line.startswith("@phase "):
            _, when, _cpu, what = line.split(" ", 3)
            at.setdefault(what, float(when) - start)
    host_cpu = {h: reaped_cpu(lab.sshd[h].pid) - hosts_before[h] for h in HOSTS}

    def first(prefix: str) -> float:
        return min(v for k, v in at.items() if k.startswith(prefix))

    def last(prefix: str) -> float:
        return max(v for k, v in at.items() if k.startswith(prefix))

    def each(a: str, b: str) -> float:
        return statistics.median(at[f"{b} {h}"] - at[f"{a} {h}"] for h in HOSTS)

    return {
        "interpreter start": at["python"],
        "command line, policies": at["fleet"] - at["python"],
        "asyncssh import": at["asyncssh imported"] - at["asyncssh"],
        "SSH handshake (median host)": each("connect", "connected"),
        "probe + agent start, one round trip (median host)": each("start", "probed"),
        "agent's run to its report (median host)": each("probed", "converged"),
        "first connection to last host converged": last("converged") - first("connect"),
        "last report to exit": at["exit"] - last("converged"),
        "total (wall)": wall,
        "initiator CPU": initiator,
        "CPU per host (sshd session, probe, agent; median)": statistics.median(host_cpu.values()),
    }


def series(run: Callable[[], float], before: Callable[[], None], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        before()
        times.append(run())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--phases", type=int, default=0, metavar="N",
        help="only convergent's cached run, N times, phase by phase (see the docstring)",
    )  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/remote.py needs root (network namespaces)")
    base = Path(tempfile.mkdtemp(prefix="convergent-w10-"))
    target = base / "target"
    target.mkdir()
    key_dir = base / "keys"
    key_dir.mkdir()
    public = keygen(key_dir / "id_ed25519", "w10")
    keygen(key_dir / "other", "w10-other")
    keys = ClientKeys(key_dir / "id_ed25519", public, key_dir / "other")
    lab = SshLab(base / "lab", keys, HOSTS)
    rows: list[tuple[str, str, list[float]]] = []
    try:
        lab.make()
        home = base / "home"
        (home / ".ssh").mkdir(parents=True)
        known = lab.known_hosts(home / ".ssh" / "known_hosts")
        env = dict(os.environ, HOME=str(home), PYTHONPATH=str(ROOT / "src"))
        env.pop("SSH_AUTH_SOCK", None)
        env.update(ANSIBLE_PIPELINING="1", ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="1")
        env["ANSIBLE_LOCAL_TEMP"] = str(base / "ansible-local")
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(base / "ansible-cp")

        def empty() -> None:
            for host in HOSTS:
                shutil.rmtree(target / host, ignore_errors=True)
                (target / host).mkdir()

        def kept() -> None:
            verify(target)

        convergent = [sys.executable, "-m", "convergent", "run"]
        convergent += [
            *write_convergent(base, lab, target),
            "--identity",
            str(keys.key),
            "--converged-timeout",
            "0",
        ]
        convergent += ["--state-dir", str(base / "state")]
        build = "from convergent.remote import dist; dist.find()"  # its cache, untimed
        subprocess.run([sys.executable, "-c", build], env=env, check=True, timeout=BOUND)
        if args.phases:
            empty()
            timed(convergent, env, base)  # the hosts get the single file, the files
            runs = [phased(convergent, env, base, lab) for _ in range(args.phases)]
            verify(target)
            phases_report(runs)
            return
        tools = {
            "convergent": (convergent, [*convergent, "--no-caching"]),
            "ansible-playbook": (a := write_ansible(base, lab, keys.key, known, target), a),
            "pyinfra": (p := write_pyinfra(base, lab, keys.key, known, target), p),
        }
        for name, (cached_argv, first_argv) in tools.items():
            if shutil.which(first_argv[0]) is None:
                print(f"{name}: not installed, skipped")
                continue
            first = series(lambda argv=first_argv: timed(argv, env, base), empty, args.repeats)
            verify(target)
            cached = series(lambda argv=cached_argv: timed(argv, env, base), kept, args.repeats)
            verify(target)
            rows.append((name, "first run (copy, create)", first))
            rows.append((name, "cached run (nothing to do)", cached))
            print(f"{name}: first {statistics.median(first):.2f} s, "
                  f"cached {statistics.median(cached):.2f} s", flush=True)  # fmt: skip
    finally:
        lab.close()
        shutil.rmtree(base, ignore_errors=True)
    report(rows, args.repeats)


PHASES_HEAD = "## Where a cached run's time goes"


def phases_report(runs: list[dict[str, float]]) -> None:
    """Replace the phases section of ``results-w10.md`` with the medians of ``runs``."""
    lines = [
        PHASES_HEAD,
        "",
        f"`bench/remote.py --phases {len(runs)}`: convergent's cached run (3 hosts, 10 files "
        f"each, nothing to do), median of {len(runs)}; {platform.node()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| phase | median s | min-max s |",
        "| --- | ---: | ---: |",
    ]
    for key in runs[0]:
        values = [r[key] for r in runs]
        lines.append(
            f"| {key} | {statistics.median(values):.3f} | {min(values):.3f}-{max(values):.3f} |"
        )
    text = OUT.read_text() if OUT.exists() else ""
    head, _, _ = text.partition(PHASES_HEAD)
    OUT.write_text(head.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(runs))


def report(rows: list[tuple[str, str, list[float]]], repeats: int) -> None:
    med = {(t, k.split()[0]): statistics.median(v) for t, k, v in rows}
    lines = [
        "# W10: bootstrap and converge 10 files on 3 SSH hosts",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}",
        "- hosts: 3 network namespaces with their own sshd (tests/sshd_support.py), "
        "no convergent installed; written by `bench/remote.py`",
        f"- median of {repeats} runs each; first runs start with the files absent "
        "(convergent: --no-caching, the single file copied to every host)",
        f"- load average at the end: {os.getloadavg()[0]:.1f} (above ~1 per core, wall "
        "times are other work's too)",
        "",
        "| tool | run | median s | min-max s | convergent / tool |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for tool, kind, times in rows:
        ours = med.get(("convergent", kind.split()[0]))
        ratio = f"{ours / statistics.median(times):.2f}" if ours else "-"
        lines.append(
            f"| {tool} | {kind} | {statistics.median(times):.2f} | "
            f"{min(times):.2f}-{max(times):.2f} | {ratio} |"
        )
    lines += ["", "Targets (issue 10):", ""]
    cached = med.get(("convergent", "cached"))
    ansible = med.get(("ansible-playbook", "cached"))
    if cached is not None:
        met = "met" if cached < 1.0 else "**MISSED**"
        lines.append(f"- cached run under 1 s: {cached:.2f} s, {met}")
    if cached is not None and ansible is not None:
        met = "met" if ansible / cached >= 5 else "**MISSED**"
        lines.append(
            f"- cached run at least 5x faster than Ansible's: {ansible / cached:.1f}x, {met}"
        )
    text = "\n".join(lines) + "\n"
    old = OUT.read_text() if OUT.exists() else ""
    if PHASES_HEAD in old:  # kept: the phases were measured apart
        text += "\n" + PHASES_HEAD + old.partition(PHASES_HEAD)[2]
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
