"""The tools under test: where each lives, how its policy is laid out, how it is run.

A :class:`Tool` writes its policy for one workload into a work directory and returns
the :class:`Invocation` to time. convergent runs from the project venv; CFEngine and
Puppet from Debian's packages; Salt, Ansible and pyinfra from ``bench/.peers-venv``
(``make bench-peers``), so they never touch the project's venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import policies
from workloads import Workload

__all__ = [
    "PEERS_BIN",
    "PROJECT_BIN",
    "REPO",
    "TOOLS",
    "Invocation",
    "Tool",
    "by_name",
    "clean_env",
    "fresh_startup_cache",
]

REPO = Path(__file__).resolve().parent.parent
PROJECT_BIN = REPO / ".venv" / "bin"
PEERS_BIN = REPO / "bench" / ".peers-venv" / "bin"

Generator = Callable[[Workload, Path], str]


_WHERE = "import convergent, os; print(os.path.dirname(convergent.__file__))"


def fresh_startup_cache(bin_dir: Path = PROJECT_BIN) -> list[Path]:
    """Remove the start-up cache files of the convergent that ``bin_dir``'s Python
    imports (``__pycache__/startup.*.bin``, written by the ``convergent`` command): the
    bench's warm-up writes one with the modules of its own runs, as a host running one
    policy has, not one grown by every command run there before (a larger index to read
    at each start). The files removed."""
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", _WHERE],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    if where.returncode != 0:
        return []
    found = sorted(Path(where.stdout.strip(), "__pycache__").glob("startup.*.bin"))
    for path in found:
        path.unlink(missing_ok=True)
    return found


@dataclass(frozen=True, slots=True)
class Invocation:
    """A command line to time, with its environment and the exit codes that mean success."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ok: frozenset[int] = frozenset({0})


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a tool: no ``PYTHON*`` variables, the peers' venv on PATH.

    ``PYTHON*`` goes because a sandbox may set ``PYTHONDONTWRITEBYTECODE=1``, which
    makes every Python tool recompile its modules on every run, a cost no user pays.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{PEERS_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["LC_ALL"] = "C.UTF-8"
    env.update(extra)
    return env


@dataclass(frozen=True)
class Tool:
    """One tool: a name, how to find it, how to lay out and run a policy.

    ``slow`` tools run once per workload and at a reduced size (see ``run.py``).
    ``continuous`` tools have an agent mode that reacts to drift (W5); the others'
    figure for W5 is their ``schedule``.
    """

    name: str
    executable: str
    generate: Generator
    layout: Callable[[Tool, Workload, Path, Path], Invocation]
    slow: bool = False
    reference: bool = False
    schedule: str = ""
    version_args: tuple[str, ...] = ("--version",)

    def path(self) -> Path | None:
        """The executable, or None when the tool is not installed."""
        for base in (PROJECT_BIN, PEERS_BIN):
            candidate = base / self.executable
            if candidate.exists():
                return candidate
        found = shutil.which(self.executable)
        return Path(found) if found else None

    def missing(self) -> str | None:
        """Why the tool cannot run here, or None."""
        if self.path() is None:
            return f"{self.executable} not found: run `make bench-peers`"
        return None

    def setup(self, workload: Workload, target: Path, workdir: Path) -> Invocation:
        """Write the policy for ``workload`` into ``workdir``; return what to run."""
        workdir.mkdir(parents=True, exist_ok=True)
        return self.layout(self, workload, target, workdir)


def _exe(tool: Tool) -> str:
    path = tool.path()
    if path is None:
        raise RuntimeError(f"{tool.name}: {tool.missing()}")
    return str(path)


def _convergent(tool: Tool, workload: Workload, target: Path, workdir: Path) -> Invocation:
    policy = workdir / "policy.yaml"
    policy.write_text(tool.generate(workload, target))
    state = str(workdir / "state")  # its own, as each tool has; not the machine's
    argv = [_exe(tool), "run", str(policy), "--converged-timeout", "0", "--state-dir", state]
    return Invocation(argv, clean_env(), workdir)


def _cfengine(tool: Tool, workload: Workload, target: Path, workdir: Path) -> Invocation:
    policy = workdir / "policy.cf"
    policy.write_text(tool.generate(workload, target))
    policy.chmod(0o600)
    return Invocation([_exe(tool), "-K", "-f", str(policy)], clean_env(), workdir)


def _puppet(tool: Tool, workload: Workload, target: Path, workdir: Path) -> Invocation:
    manifest = workdir / "site.pp"
    manifest.write_text(tool.generate(workload, target))
    argv = [_exe(tool), "apply", "--color=false", "--detailed-exitcodes", str(manifest)]
    return Invocation(argv, clean_env(), workdir, frozenset({0, 2}))


def _salt(tool: Tool, workload: Workload, target: Path, workdir: Path) -> Invocation:
    states = workdir / "states"
    states.mkdir(exist_ok=True)
    (states / "bench.sls").write_text(tool.generate(workload, target))
    conf = workdir / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "minion").write_text(
        "\n".join(
            [
                "file_client: local",
                "master_type: disable",
                f"root_dir: {workdir / 'root'}",
                f"log_file: {workdir / 'minion.log'}",
                "log_level_logfile: warning",
                "file_roots:",
                f"  base: [{states}]",
                "enable_fqdns_grains: false",
                "",
            ]
        )
    )
    argv = [
        _exe(tool),
        "--local",
        f"--config-dir={conf}",
        "--retcode-passthrough",
        "state.apply",
        "bench",
    ]
    return Invocation(argv, clean_env(), workdir)


def _ansible(tool: Tool, workload: Workload, target: Path, workdir: Path) -> Invocation:
    playbook = workdir / "playbook.yml"
    playbook.write_text(tool.generate(workload, target))
    home = workdir / "ansible"
    env = clean_env(
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_PYTHON_INTERPRETER=str(_peer_python()),
        ANSIBLE_RETRY_FILES_ENABLED="false",
    )
    argv = [_exe(tool), "-i", "localhost,", "-c", "local", str(playbook)]
    return Invocation(argv, env, workdir)


def _peer_python() -> Path:
    """The peers' venv python (pip-installed Ansible), else the system's (apt's Ansible)."""
    python = PEERS_BIN / "python"
    return python if python.exists() else Path("/usr/bin/python3")


def _pyinfra(tool: Tool, workload: Workload, target: Path, workdir: Path) -> Invocation:
    deploy = workdir / "deploy.py"
    deploy.write_text(tool.generate(workload, target))
    return Invocation([_exe(tool), "-y", "@local", str(deploy)], clean_env(), workdir)


def _floor(tool: Tool, workload: Workload, target: Path, workdir: Path) -> Invocation:
    script = workdir / "floor.py"
    script.write_text(tool.generate(workload, target))
    return Invocation([_exe(tool), "-S", str(script)], clean_env(), workdir)


TOOLS: tuple[Tool, ...] = (
    Tool("convergent", "convergent", policies.convergent, _convergent, schedule="continuous"),
    Tool(
        "CFEngine",
        "cf-agent",
        policies.cfengine,
        _cfengine,
        schedule="every 5 min (cf-execd schedule)",
        version_args=("-V",),
    ),
    Tool("Puppet", "puppet", policies.puppet, _puppet, schedule="every 30 min (runinterval)"),
    Tool(
        "Salt",
        "salt-call",
        policies.salt,
        _salt,
        schedule="none by default (scheduler or master-driven)",
    ),
    Tool("Ansible", "ansible-playbook", policies.ansible, _ansible, slow=True, schedule="none"),
    Tool("pyinfra", "pyinfra", policies.pyinfra, _pyinfra, slow=True, schedule="none"),
    Tool(
        "python floor",
        "python3",
        policies.floor,
        _floor,
        reference=True,
        schedule="none",
    ),
)


def by_name(name: str) -> Tool:
    """The tool called ``name`` (case-insensitive)."""
    for tool in TOOLS:
        if tool.name.lower() == name.lower():
            return tool
    raise KeyError(f"no tool {name!r}: choose from {', '.join(t.name for t in TOOLS)}")
