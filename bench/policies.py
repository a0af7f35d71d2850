"""Generators: one :class:`~workloads.Workload` in, one tool's policy text out.

Every generator gets the same workload and the absolute target directory and writes
the idiomatic policy a user of that tool would write: one file resource per file (the
content inline, mode 0644), one command resource per command with its ordering
constraints, in the form that tool's expert would write for the workload (the perms
body that silences CFEngine's warnings, background or parallel commands where a command
is in no chain): bench/README.md says, per tool, what the form is and why.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from workloads import CommandSpec, Workload

__all__ = [
    "ansible",
    "cfengine",
    "cfengine_packages",
    "convergent",
    "convergent_packages",
    "floor",
    "puppet",
    "pyinfra",
    "salt",
]


def _q(text: str) -> str:
    """A double-quoted string valid in YAML, Python and Salt (JSON is a YAML subset)."""
    return json.dumps(text)


def _line(cmd: CommandSpec) -> str:
    return shlex.join(cmd.argv)


def convergent(workload: Workload, target: Path) -> str:
    """convergent YAML: ``file`` and ``exec`` resources."""
    out = ["resources:"]
    for spec in workload.files:
        out.append(f"  - file: {_q(str(target / spec.name))}")
        out.append(f"    content: {_q(spec.content)}")
        out.append(f'    mode: "{spec.mode:04o}"')
    for cmd in workload.commands:
        out.append(f"  - exec: {_q(cmd.name)}")
        out.append(f"    cmd: {json.dumps(list(cmd.argv))}")
        out.append(f"    cwd: {_q(str(target))}")
        if cmd.requires:
            out.append(f"    require: {json.dumps([f'exec[{r}]' for r in cmd.requires])}")
    return "\n".join(out) + "\n"


def _cf_string(text: str) -> str:
    for bad in ('"', "\\", "$", "@"):
        if bad in text:
            raise ValueError(f"CFEngine generator: {bad!r} in {text!r} would need quoting")
    return '"' + text.replace("\n", "$(const.n)") + '"'


def _independent(workload: Workload) -> set[str]:
    """The commands in no ordering relation: nothing requires them, they require nothing."""
    required = {r for cmd in workload.commands for r in cmd.requires}
    return {c.name for c in workload.commands if not c.requires and c.name not in required}


def cfengine(workload: Workload, target: Path) -> str:
    """CFEngine 3 policy for ``cf-agent -K -f``: files promises with ``content``.

    ``content`` (CFEngine >= 3.16) sets the whole file, creating it when missing;
    ``perms`` sets the mode, with ``rxdirs => "false"`` as its documentation advises
    (without it cf-agent warns four times per file that the default will change, even
    when nothing does: a quarter of its time on W2). Commands run through the shell in
    the target directory; CFEngine evaluates promises top-down, so listing them in
    dependency order keeps the chain ordered, and a command in no chain (nothing
    requires it, it requires nothing) runs with ``action => background`` and is listed
    first, so that it runs beside the chain (cf-agent waits for it before exiting).
    """
    modes = sorted({spec.mode for spec in workload.files})
    out = [
        "body common control",
        "{",
        '  bundlesequence => { "bench" };',
        "}",
        "",
    ]
    for mode in modes:
        out += [
            f"body perms bench_m{mode:o}",
            "{",
            f'  mode => "{mode:o}";',
            '  rxdirs => "false";',
            "}",
            "",
        ]
    independent = _independent(workload)
    if independent:
        out += ["body action bench_background", "{", '  background => "true";', "}", ""]
    out += [
        "body contain bench_shell",
        "{",
        '  useshell => "useshell";',
        f"  chdir => {_cf_string(str(target))};",
        "}",
        "",
        "bundle agent bench",
        "{",
    ]
    if workload.files:
        out.append("  files:")
        for spec in workload.files:
            out.append(f"    {_cf_string(str(target / spec.name))}")
            out.append('      create => "true",')
            out.append(f"      content => {_cf_string(spec.content)},")
            out.append(f"      perms => bench_m{spec.mode:o};")
    if workload.commands:
        out.append("  commands:")
        first = [c for c in workload.commands if c.name in independent]
        for cmd in first + [c for c in workload.commands if c.name not in independent]:
            line = _line(cmd)
            out.append(f"    {_cf_string(line)}")
            if cmd.name in independent:
                out.append("      action => bench_background,")
            out.append("      contain => bench_shell;")
    out.append("}")
    return "\n".join(out) + "\n"


def _pp_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '"' + escaped.replace("\n", "\\n") + '"'


def puppet(workload: Workload, target: Path) -> str:
    """Puppet manifest for ``puppet apply``: ``file`` and ``exec`` resources."""
    out: list[str] = []
    for spec in workload.files:
        out += [
            f"file {{ {_pp_string(str(target / spec.name))}:",
            "  ensure  => file,",
            f"  content => {_pp_string(spec.content)},",
            f"  mode    => '{spec.mode:04o}',",
            "}",
        ]
    for cmd in workload.commands:
        out += [
            f"exec {{ {_pp_string(cmd.name)}:",
            f"  command  => {_pp_string(_line(cmd))},",
            "  provider => shell,",
            f"  cwd      => {_pp_string(str(target))},",
        ]
        if cmd.requires:
            refs = ", ".join(f"Exec[{_pp_string(r)}]" for r in cmd.requires)
            out.append(f"  require  => [{refs}],")
        out.append("}")
    return "\n".join(out) + "\n"


def salt(workload: Workload, target: Path) -> str:
    """Salt state (SLS, plain YAML renderer): ``file.managed`` and ``cmd.run``, every
    command with ``parallel: True`` (Salt then runs it in its own process; requisites
    still order the chain), as Salt's documentation shows for independent slow states."""
    out = ["#!yaml"]
    for spec in workload.files:
        out += [
            f"{_q(str(target / spec.name))}:",
            "  file.managed:",
            f"    - contents: {_q(spec.content)}",
            f'    - mode: "{spec.mode:04o}"',
        ]
    for cmd in workload.commands:
        out += [
            f"{_q(cmd.name)}:",
            "  cmd.run:",
            f"    - name: {_q(_line(cmd))}",
            f"    - cwd: {_q(str(target))}",
            "    - parallel: True",
        ]
        if cmd.requires:
            out.append("    - require:")
            out += [f"      - cmd: {_q(r)}" for r in cmd.requires]
    return "\n".join(out) + "\n"


def ansible(workload: Workload, target: Path) -> str:
    """Ansible playbook, local connection, no fact gathering: a loop of ``copy`` tasks.

    A command in no chain starts first with ``async``/``poll: 0`` and is waited for
    with ``async_status`` at the end, as Ansible's documentation does for concurrent
    tasks (``strategy: free`` changes nothing with one host)."""
    out = [
        "- hosts: localhost",
        "  connection: local",
        "  gather_facts: false",
        "  tasks:",
    ]
    if workload.files:
        mode = {spec.mode for spec in workload.files}
        if len(mode) != 1:
            raise ValueError("Ansible generator: one mode per workload")
        out += [
            "    - name: files",
            "      ansible.builtin.copy:",
            '        dest: "{{ item.dest }}"',
            '        content: "{{ item.content }}"',
            f'        mode: "{mode.pop():04o}"',
            "      loop:",
        ]
        for spec in workload.files:
            item = {"dest": str(target / spec.name), "content": spec.content}
            out.append(f"        - {json.dumps(item)}")
    independent = _independent(workload)
    first = [c for c in workload.commands if c.name in independent]
    for cmd in first + [c for c in workload.commands if c.name not in independent]:
        out += [
            f"    - name: {_q(cmd.name)}",
            "      ansible.builtin.command:",
            f"        argv: {json.dumps(list(cmd.argv))}",
            f"        chdir: {_q(str(target))}",
        ]
        if cmd.name in independent:
            out += ["      async: 600", "      poll: 0", f"      register: {_job(cmd.name)}"]
    for name in sorted(independent):
        out += [
            f"    - name: {_q('wait for ' + name)}",
            "      ansible.builtin.async_status:",
            f'        jid: "{{{{ {_job(name)}.ansible_job_id }}}}"',
            f"      register: {_job(name)}_done",
            f"      until: {_job(name)}_done.finished",
            "      retries: 600",
            "      delay: 1",
        ]
    return "\n".join(out) + "\n"


def _job(name: str) -> str:
    return "job_" + "".join(c if c.isalnum() else "_" for c in name)


def pyinfra(workload: Workload, target: Path) -> str:
    """pyinfra deploy for ``pyinfra @local``: ``files.put`` and ``server.shell``."""
    out = [
        "from io import StringIO",
        "",
        "from pyinfra.operations import files, server",
        "",
        f"FILES = {[(str(target / s.name), s.content, f'{s.mode:o}') for s in workload.files]!r}",
        f"COMMANDS = {[(c.name, _line(c)) for c in workload.commands]!r}",
        "",
        "for dest, content, mode in FILES:",
        "    files.put(name=dest, src=StringIO(content), dest=dest, mode=mode)",
        "for name, line in COMMANDS:",
        f"    server.shell(name=name, commands=[line], _chdir={str(target)!r})",
    ]
    return "\n".join(out) + "\n"


def floor(workload: Workload, target: Path) -> str:
    """The floor: a bare Python script that compares and writes the files, no framework."""
    if workload.commands:
        raise ValueError("the floor script only does files")
    out = [
        "import os",
        "",
        f"FILES = {[(str(target / s.name), s.content.encode(), s.mode) for s in workload.files]!r}",
        "",
        "for path, content, mode in FILES:",
        "    try:",
        "        with open(path, 'rb') as f:",
        "            same = f.read() == content",
        "            st = os.fstat(f.fileno())",
        "    except FileNotFoundError:",
        "        same, st = False, None",
        "    if not same:",
        "        with open(path, 'wb') as f:",
        "            f.write(content)",
        "    if st is None or st.st_mode & 0o7777 != mode:",
        "        os.chmod(path, mode)",
    ]
    return "\n".join(out) + "\n"


def convergent_packages(names: tuple[str, ...]) -> str:
    """W8 for convergent: one ``pkg`` resource per package (grouped by the engine into one
    transaction). ``backend: apt`` so that the comparison is with apt-get on any host."""
    out = ["resources:"]
    for name in names:
        out += [f"  - pkg: {name}", "    backend: apt"]
    return "\n".join(out) + "\n"


def cfengine_packages(names: tuple[str, ...]) -> str:
    """W8 for CFEngine 3.21: ``packages:`` promises through the ``apt_get`` package module,
    as its documentation shows. ``query_updates_ifelapsed`` is set to a week, what an
    expert writes so that a run does not refresh the package lists each time (the module
    still asks apt for updates on its first run: the harness's warm-up run pays that)."""
    out = [
        "body common control",
        "{",
        '  bundlesequence => { "bench" };',
        "}",
        "",
        "body package_module apt_get",
        "{",
        '  query_installed_ifelapsed => "0";',
        '  query_updates_ifelapsed => "10080";',
        '  interpreter => "/usr/bin/python3";',
        "}",
        "",
        "bundle agent bench",
        "{",
        "  packages:",
    ]
    for name in names:
        out.append(f'    {_cf_string(name)} policy => "present", package_module => apt_get;')
    out.append("}")
    return "\n".join(out) + "\n"
