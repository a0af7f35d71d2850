"""vars:, --set, --vars-file, secrets, and templates in strings and files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lang.support import cli, load, problems, write


def content(graph: object, vid: str) -> object:
    return graph[vid].params.content  # type: ignore[index]


def test_vars_render_into_strings_names_and_template_files(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars:
              greeting: hello
              users: [alice, bob]
              db: {host: db1, port: 5432}
            resources:
              - file: /etc/motd
                content: "{{ greeting }} from {{ facts.hostname }}\\n"
              - file: "/etc/{{ db.host }}.conf"
                content: "{{ users | join(',') }}:{{ db.port + 1 }}"
              - file: /etc/profile.d/site.sh
                template: templates/site.j2
            """,
            "templates/site.j2": "{% for u in users %}{{ u }}={{ db.host }}\n{% endfor %}",
        },
    )
    graph = load(policy)
    assert content(graph, "file[/etc/motd]") == "hello from web-1\n"
    assert content(graph, "file[/etc/db1.conf]") == "alice,bob:5433"
    assert content(graph, "file[/etc/profile.d/site.sh]") == "alice=db1\nbob=db1\n"


def test_vars_may_use_facts_and_earlier_vars(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars:
              domain: example.org
              site: "{{ facts.hostname }}.{{ domain }}"
              urls: ["https://{{ site }}/", "http://{{ site }}/"]
            resources:
              - file: /out
                content: "{{ urls | join(' ') }}"
            """
        },
    )
    graph = load(policy)
    assert content(graph, "file[/out]") == "https://web-1.example.org/ http://web-1.example.org/"
    overridden = load(policy, sets={"site": "other"})
    assert content(overridden, "file[/out]") == "https://other/ http://other/"


def test_a_secret_is_never_published_to_other_hosts(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - value: token
                content: "{{ pw }}"
              - file: /shared
                content: "{{ pw }}"
                meta: {export: true}
              - file: /mine
                content: "{{ pw }}"
            """
        },
    )
    found = problems(policy, secret_sets={"pw": "hunter22pw"})
    assert [p.line for p in found] == [2, 4]
    assert all("published to other hosts in clear" in p.message for p in found)


def test_a_secret_never_appears_in_an_error(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - file: /out
                content: "{{ pw | int + 1 }}"
              - file: /other
                mode: "{{ pw }}"
            """
        },
    )
    found = problems(policy, secret_sets={"pw": "hunter22pw"})
    assert found and all("hunter22pw" not in str(p) for p in found)


def test_a_secret_in_another_form_never_appears_in_an_error(tmp_path: Path) -> None:
    """A value a filter made from a secret (``upper``) is quoted by the error about it
    only as ``<secret>``."""
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - exec: x
                cmd: ["true"]
                creates: "rel{{ pw | upper }}"
            """
        },
    )
    found = problems(policy, secret_sets={"pw": "kiwi77secret"})
    assert found and all("KIWI77SECRET" not in str(p) for p in found), found
    assert any("<secret>" in p.message for p in found), found


def test_a_lone_expression_keeps_its_type(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars: {n: 3, on: true}
            resources:
              - widget: a
                path: /a
                count: "{{ n }}"
              - widget: b
                path: /b
                count: "{{ n * 2 }}"
            """
        },
    )
    import tests.policy.support  # noqa: F401  (registers the widget kind)

    graph = load(policy)
    assert graph["widget[a]"].params.count == 3
    assert graph["widget[b]"].params.count == 6


def test_precedence_policy_then_vars_files_then_set_then_secrets(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars: {a: policy, b: policy, c: policy, d: policy, e: policy}
            secrets: secrets.yaml
            resources:
              - file: /out
                content: "{{ a }} {{ b }} {{ c }} {{ d }} {{ e }}"
            """,
            "one.yaml": "b: one\nc: one\nd: one\ne: one\n",
            "two.yaml": "c: two\nd: two\ne: two\n",
            "secrets.yaml": "d: secretfile\ne: secretfile\n",
        },
    )
    os.chmod(tmp_path / "secrets.yaml", 0o600)
    graph = load(
        policy,
        vars_files=(str(tmp_path / "one.yaml"), str(tmp_path / "two.yaml")),
        sets={"c": "set", "d": "set", "e": "set"},
        secret_sets={"e": "setsecret"},
    )
    assert content(graph, "file[/out]") == "policy one set secretfile setsecret"


def test_an_undefined_name_is_an_error_at_the_string(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars: {a: 1}
            resources:
              - file: /out
                content: "x {{ nope }}"
            """
        },
    )
    [problem] = problems(policy)
    assert (problem.file, problem.line, problem.column) == (str(policy), 4, 14)
    assert "'nope' is undefined" in problem.message and "--set nope=" in problem.message


def test_an_undefined_name_in_a_template_file_is_reported_at_its_line(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - file: /out
                template: t.j2
            """,
            "t.j2": "line one\n{% if true %}\n  {{ missing.part }}\n{% endif %}\n",
        },
    )
    [problem] = problems(policy)
    assert (problem.file, problem.line) == (str(tmp_path / "t.j2"), 3)
    assert "'missing' is undefined" in problem.message


def test_an_undefined_name_in_a_plain_template_file_is_reported_at_its_line(
    tmp_path: Path,
) -> None:
    """A template of plain names only is rendered without Jinja2, with the same errors."""
    policy = write(
        tmp_path,
        {
            "site.yaml": "vars: {a: 1}\nresources:\n  - file: /out\n    template: t.j2\n",
            "t.j2": "a={{ a }}\nmissing\nb={{ b }}\n",
        },
    )
    [problem] = problems(policy)
    assert (problem.file, problem.line) == (str(tmp_path / "t.j2"), 3)
    assert "'b' is undefined" in problem.message


def test_literal_braces_are_written_with_raw(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - file: /a
                content: "{{ .Name }}"
              - file: /b
                content: "{% raw %}{{ .Name }}{% endraw %}"
            """
        },
    )
    [problem] = problems(policy)
    assert problem.line == 3 and "{% raw %}" in problem.message
    lines = policy.read_text().splitlines()
    policy.write_text("\n".join([lines[0], *lines[3:]]) + "\n")  # without file[/a]
    assert load(policy)["file[/b]"].params.content == "{{ .Name }}"


def test_the_sandbox_refuses_reaching_into_python(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars: {s: x}
            resources:
              - file: /out
                content: "{{ s.__class__.__mro__ }}"
            """
        },
    )
    [problem] = problems(policy)
    assert problem.line == 4
    assert "__class__" in problem.message or "not allowed" in problem.message


def test_a_template_cannot_ask_for_gigabytes(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - file: /a
                content: "{{ 'x' * 10000000000 }}"
              - file: /b
                content: "{{ 2 ** 10000000 }}"
              - file: /c
                content: "{{ 'ab' * 3 }}{{ 2 ** 10 }}"
            """
        },
    )
    found = problems(policy)
    assert [p.line for p in found] == [3, 5]
    assert all("not allowed" in p.message for p in found)


def test_a_secrets_file_others_can_read_is_refused(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            secrets: secrets.yaml
            resources:
              - file: /out
                content: "{{ pw }}"
            """,
            "secrets.yaml": "pw: hunter22\n",
        },
    )
    os.chmod(tmp_path / "secrets.yaml", 0o640)
    found = problems(policy)
    assert found[0].line == 1
    assert "chmod 600" in found[0].message
    assert all("hunter22" not in p.message for p in found)


def test_a_secrets_file_behind_a_symlink_is_refused(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            secrets: link.yaml
            resources:
              - file: /out
                content: "{{ pw }}"
            """,
            "real.yaml": "pw: hunter22\n",
        },
    )
    os.chmod(tmp_path / "real.yaml", 0o600)
    (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    assert "cannot open" in problems(policy)[0].message


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_secrets_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": "secrets: s.yaml\nresources: []\n",
            "s.yaml": "pw: hunter22\n",
        },
    )
    os.chmod(tmp_path / "s.yaml", 0o600)
    os.chown(tmp_path / "s.yaml", 65534, 65534)
    assert "chown it" in problems(policy)[0].message


def test_secret_values_reach_the_file_but_never_the_report(tmp_path: Path) -> None:
    """A --set-secret and a secrets: value are written into the file; the run's output
    (with --diff, and under --noop) never shows them."""
    out = tmp_path / "out.conf"
    policy = write(
        tmp_path,
        {
            "site.yaml": f"""\
            secrets: secrets.yaml
            resources:
              - file: {out}
                content: "pw={{{{ pw }}}} token={{{{ token }}}}\\n"
            """,
            "secrets.yaml": "pw: hunter22pw\n",
        },
    )
    os.chmod(tmp_path / "secrets.yaml", 0o600)
    common = ["--state-dir", str(tmp_path / "state"), "--converged-timeout", "0"]
    noop = cli("run", str(policy), *common, "--noop", "--set-secret", "token=t0ps3cr3t")
    assert noop.returncode == 0, noop.stderr
    done = cli("run", str(policy), *common, "--diff", "--set-secret", "token=t0ps3cr3t")
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "pw=hunter22pw token=t0ps3cr3t\n"
    out.write_text("pw=hunter22pw token=old\n")  # drift: the repair's diff would show it
    again = cli("run", str(policy), *common, "--diff", "--set-secret", "token=t0ps3cr3t")
    assert again.returncode == 0, again.stderr
    for run in (noop, done, again):
        text = run.stdout + run.stderr
        for secret in ("hunter22", "t0ps3cr3t", "s3cr3t"):
            assert secret not in text
    assert "content changed (secret)" in again.stdout + again.stderr


def test_a_secret_shown_through_a_filter_is_hidden_as_the_secret_itself(tmp_path: Path) -> None:
    """``urlencode`` or ``upper`` print a secret in another form (none of it verbatim):
    what a template made from a secret is a secret's content (``content changed
    (secret)``)."""
    out = tmp_path / "db.env"
    policy = write(
        tmp_path,
        {
            "site.yaml": f"""\
            resources:
              - file: {out}
                content: "url=pg://app:{{{{ pw | urlencode }}}}@db u={{{{ pw | upper }}}}\\n"
            """,
        },
    )
    common = ["--state-dir", str(tmp_path / "state"), "--converged-timeout", "0", "--diff"]
    done = cli("run", str(policy), *common, "--set-secret", "pw=s3cr3t/p@ss")
    assert done.returncode == 0, done.stderr
    assert "app:s3cr3t/p%40ss@db" in out.read_text()
    out.write_text("old\n")
    again = cli("run", str(policy), *common, "--set-secret", "pw=s3cr3t/p@ss")
    text = again.stdout + again.stderr
    assert again.returncode == 0, text
    for form in ("s3cr3t", "S3CR3T", "p%40ss"):
        assert form not in text, text
    assert "content changed (secret)" in text


def test_a_secret_in_another_form_is_hidden_in_a_commands_summary_and_output(
    tmp_path: Path,
) -> None:
    """A command made with a secret through a filter shows that form neither in its
    summary nor when it prints it."""
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - exec: show
                cmd: "echo pg://app:{{ pw | urlencode }}@db"
                shell: true
            """,
        },
    )
    done = cli(
        "run",
        str(policy),
        "--state-dir",
        str(tmp_path / "state"),
        "--converged-timeout",
        "0",
        "--set-secret",
        "pw=s3cr3t/p@ss",
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "exec[show]: stdout: pg://app:<secret>@db" in text
    for form in ("s3cr3t", "p%40ss", "%2Fp"):
        assert form not in text, text


def test_a_multi_line_secret_is_hidden_line_by_line_in_a_commands_output(
    tmp_path: Path,
) -> None:
    """A key file from ``secrets:``: a command that prints it is logged a line at a
    time, so each line is hidden on its own (not only the whole value)."""
    out = tmp_path / "key.pem"
    policy = write(
        tmp_path,
        {
            "site.yaml": f"""\
            secrets: secrets.yaml
            resources:
              - file: {out}
                mode: "0600"
                content: "{{{{ tls }}}}"
              - exec: show
                cmd: [cat, {out}]
                require: [file[{out}]]
            """,
            "secrets.yaml": "tls: |\n  -----BEGIN KEY-----\n  MIIEvQIBADANBg\n  Zm9vYmFyYmF6\n",
        },
    )
    os.chmod(tmp_path / "secrets.yaml", 0o600)
    done = cli(
        "run", str(policy), "--state-dir", str(tmp_path / "state"), "--converged-timeout", "0"
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert "exec[show]: stdout: <secret>" in text
    for line in ("BEGIN KEY", "MIIEvQIBADANBg", "Zm9vYmFyYmF6"):
        assert line not in text, text


def test_the_piece_of_a_secret_that_a_cut_in_a_commands_output_leaves_is_hidden(
    tmp_path: Path,
) -> None:
    """Output is cut where the log stops (the first 64 KiB) and where an error's tail
    stops (4,096 characters): a secret cut there shows neither its beginning before the
    cut nor its end after it."""
    key = tmp_path / "key"
    policy = write(
        tmp_path,
        {
            "site.yaml": f"""\
            secrets: secrets.yaml
            resources:
              - file: {key}
                mode: "0600"
                content: "{{{{ token }}}}"
              - exec: long
                cmd: "printf '%065530d' 0; cat {key}; echo"
                shell: true
                require: [file[{key}]]
              - exec: tail
                cmd: "cat {key} >&2; printf '%04085d' 0 >&2; exit 3"
                shell: true
                require: [file[{key}]]
            """,
            "secrets.yaml": "token: Mango5Kiwi7Plum\n",
        },
    )
    os.chmod(tmp_path / "secrets.yaml", 0o600)
    done = cli(
        "run", str(policy), "--state-dir", str(tmp_path / "state"), "--converged-timeout", "0"
    )
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "exec[long]: stdout: 000" in text and "000[...]\n" in text  # the log's cut
    assert "exited with code 3: [...]000" in text  # the start of the error's long line
    for piece in ("Mango", "ngo5", "Kiwi", "7Plum", "iwi7", "Plu", "lum"):
        assert piece not in text, piece


def test_set_and_vars_file_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    policy = write(
        tmp_path,
        {
            "site.yaml": f"""\
            vars: {{port: 80, name_: web}}
            resources:
              - file: {out}
                content: "{{{{ name_ }}}}:{{{{ port + 1 }}}}"
            """,
            "v.yaml": "name_: api\n",
        },
    )
    done = cli(
        "run",
        str(policy),
        "--state-dir",
        str(tmp_path / "state"),
        "--converged-timeout",
        "0",
        "--vars-file",
        str(tmp_path / "v.yaml"),
        "--set",
        "port=8080",
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "api:8081"
    bad = cli("check", str(policy), "--set", "no equals")
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr


def test_a_plain_policy_does_not_import_jinja2(tmp_path: Path) -> None:
    """Simple names are filled in without Jinja2; a plain policy never imports it."""
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars: {a: x}
            resources:
              - file: "/tmp/{{ a }}"
                content: "{{ a }} {{ facts.os.family }}"
              - file: /b
                template: plain.j2
            """,
            "plain.j2": "{{ a }} on {{ facts.hostname }}\n",
        },
    )
    import subprocess
    import sys

    code = (
        "import sys; from convergent.policy import load_policy; "
        f"load_policy({str(policy)!r}); print('jinja2' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_a_plain_yaml_policy_imports_nothing_of_the_language(tmp_path: Path) -> None:
    """Start-up of a plain policy stays where it was: the language's modules, Jinja2
    and the facts are imported only for a policy that uses them."""
    policy = write(
        tmp_path,
        {"p.yaml": "resources:\n  - noop: a\n  - noop: b\n    require: [noop[a]]\n"},
    )
    import subprocess
    import sys

    code = (
        "import sys; from convergent.policy import load_policy; "
        f"load_policy({str(policy)!r}); "
        "print(sorted(m for m in sys.modules if m.startswith(('jinja2', "
        "'convergent.policy.lang', 'convergent.policy.template', 'convergent.host.facts'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_a_billion_laughs_in_a_vars_file_is_refused_as_it_is_read(tmp_path: Path) -> None:
    """520 bytes that stand for 10**9 values: a clear error naming the file, not the
    rendering's MemoryError when a template uses the variable."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nbig: *a8\n")
    policy = write(
        tmp_path,
        {"site.yaml": f'resources:\n  - file: {tmp_path / "out"}\n    content: "{{{{ big }}}}"\n'},
    )
    done = cli("check", str(policy), "--vars-file", str(bomb))
    assert done.returncode == 2, done.stderr
    assert f"--vars-file {bomb}: not YAML text: aliases ('*name') make it stand for" in done.stderr
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("{{ range(100000) | list * 160 }}", "a product longer than 262,144"),
        ("{{ [[0] * 262144] * 4 }}", "a value of more than 262,144 items in all"),
        ("{{ (['x' * 16777216] * 64) | join }}", "a join longer than 16,777,216"),
        ("{{ 'x' * 10000000 + 'y' * 10000000 }}", "a sum longer than 16,777,216"),
        (
            "{% for i in range(100000) %}{{ 'a' * 16000000 }}{% endfor %}",
            "an output longer than 67,108,864 characters",
        ),
        (
            "{% set ns = namespace(a='') %}{% for i in range(200) %}"
            "{% set ns.a = ns.a ~ ('x' * 16000000) %}{% endfor %}{{ ns.a | length }}",
            "a concatenation longer than 16,777,216",
        ),
        (
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}"
            "{{ 'x' * 16000000 }}{% endif %}{% endmacro %}{{ f(30) | length }}",
            "an output longer than 67,108,864 characters",
        ),
    ],
    ids=["list product", "nested lists", "join", "sum", "loop output", "tilde", "macro"],
)
def test_a_template_cannot_ask_for_a_huge_list_or_output(
    tmp_path: Path, template: str, why: str
) -> None:
    """A list's product is bounded by its items (~40 bytes each), a lone expression's
    value by its items in all, a join, a sum and a ``~`` by their length, what a template
    or a macro renders by its length: 16 million items, four references to one long
    list, 64 long texts joined, a namespace grown in a loop, a macro doubling itself, or
    100,000 products each under the bound asked for 600 MB to 1.6 TB."""
    policy = write(
        tmp_path,
        {"site.yaml": f'resources:\n  - file: {tmp_path / "out"}\n    content: "{template}"\n'},
    )
    (problem,) = problems(policy)
    assert (problem.file, problem.line) == (str(policy), 3)
    assert problem.message == f"not allowed in a template: {why}"


def test_a_template_may_still_make_a_large_value(tmp_path: Path) -> None:
    out = tmp_path / "out"
    policy = write(
        tmp_path,
        {"site.yaml": f"resources:\n  - file: {out}\n    content: \"{{{{ 'ab' * 4000000 }}}}\"\n"},
    )
    assert load(policy)[f"file[{out}]"].params.content == "ab" * 4_000_000


def test_a_billion_laughs_in_a_set_value_is_an_error_not_a_string(tmp_path: Path) -> None:
    """``--set`` keeps a value YAML cannot read as the text written, but one over the
    bounds is refused, as in a vars file."""
    lines = ["[&a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    value = ", ".join(lines) + "]"
    policy = write(tmp_path, {"site.yaml": "resources:\n  - noop: a\n"})
    done = cli("check", str(policy), "--set", f"big={value}")
    assert done.returncode == 2, done.stderr
    assert "--set big: aliases ('*name') make it stand for" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("entries", "limit", "at"),
    [
        ('  - file: /srv/f{i}\n    content: "{{{{ \'x\' * 40 }}}}"\n', "MAX_LOAD_TEXT", 7),
        ('  - noop: "n{i}-{{{{ item }}}}"\n    for_each: "{{{{ range(10) | list }}}}"\n',
         "MAX_LOAD_ITEMS", 5),
    ],
    ids=["characters", "items"],
)  # fmt: skip
def test_the_templates_of_one_load_render_a_bounded_amount_in_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: str, limit: str, at: int
) -> None:
    """Each template is bounded, and so is their sum: 40 entries of 16 Mi characters each
    were 640 MB. Past the budget (here 100 characters, or 15 items), one problem at the
    template that passed it, and nothing more is rendered."""
    from convergent.policy import lang

    monkeypatch.setattr(lang, limit, {"MAX_LOAD_TEXT": 100, "MAX_LOAD_ITEMS": 15}[limit])
    text = "resources:\n" + "".join(entries.format(i=i) for i in range(5))
    policy = write(tmp_path, {"site.yaml": text})
    (problem,) = problems(policy)
    assert problem.line == at
    assert problem.message.startswith("the templates of this policy render more than")
