"""Generators: one :class:`~workloads.Workload` in, one tool's policy text out.

Every generator gets the same workload and the absolute target directory and writes
the idiomatic policy a user of that tool would write: one file resource per file (the
content inline, mode 0644), one command resource per command with its ordering
constraints. Nothing is tuned for speed beyond what the tool's documentation offers
by default.
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


def cfengine(workload: Workload, target: Path) -> str:
    """CFEngine 3 policy for ``cf-agent -K -f``: files promises with ``content``.

    ``content`` (CFEngine >= 3.16) sets the whole file, creating it when missing;
    ``perms`` sets the mode. Commands run through the shell in the target directory;
    CFEngine evaluates promises top-down, so listing them in dependency order keeps
    the chain ordered.
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
        out += [f"body perms bench_m{mode:o}", "{", f'  mode => "{mode:o}";', "}", ""]
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
        for cmd in workload.commands:
            line = _line(cmd)
            out.append(f"    {_cf_string(line)}")
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
    """Salt state (SLS, plain YAML renderer): ``file.managed`` and ``cmd.run``."""
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
        ]
        if cmd.requires:
            out.append("    - require:")
            out += [f"      - cmd: {_q(r)}" for r in cmd.requires]
    return "\n".join(out) + "\n"


def ansible(workload: Workload, target: Path) -> str:
    """Ansible playbook, local connection, no fact gathering: a loop of ``copy`` tasks."""
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
    for cmd in workload.commands:
        out += [
            f"    - name: {_q(cmd.name)}",
            "      ansible.builtin.command:",
            f"        argv: {json.dumps(list(cmd.argv))}",
            f"        chdir: {_q(str(target))}",
        ]
    return "\n".join(out) + "\n"


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
