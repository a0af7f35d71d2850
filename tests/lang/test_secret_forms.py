"""What a template makes of a secret, in any form, is hidden as the secret is: filters
(``upper``, ``urlencode``, ``reverse``), variables and mappings that hold it, template
files, lone expressions that make a list, and the messages of templates that fail."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from convergent.policy.secretforms import forms, shifted
from tests.lang.support import cli, problems, write

PW, TOK = "hunter2abc", "Zq9xTok55"
FORMS = (
    PW,
    PW.upper(),
    PW[::-1],
    PW.upper()[::-1],
    TOK.lower(),
    "hunter2",
    "HUNTER2",
    "cba2ret",
    "zq9xtok",
)


def _policy(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    policy = write(
        tmp_path,
        {
            "site.yaml": f"""\
            secrets: secrets.yaml
            vars:
              conn: "postgres://app:{{{{ pw }}}}@db/x"
              cfg: {{pw: "{{{{ pw }}}}"}}
              lst: ["{{{{ pw }}}}"]
              enc: "{{{{ pw | urlencode }}}}"
            resources:
              - file: {out}/t.conf
                template: t.j2
                parents: true
              - exec: both
                cmd: "echo {{{{ pw }}}} >/dev/null; echo {{{{ pw | upper }}}}"
                shell: true
              - exec: conn
                cmd: "echo {{{{ conn | urlencode }}}}"
                shell: true
              - exec: nested
                cmd: "echo {{{{ cfg.pw | upper }}}} {{{{ lst[0] | reverse }}}} {{{{ enc|upper }}}}"
                shell: true
              - exec: lone
                cmd: "{{{{ ['sh', '-c', 'echo ' ~ (pw | upper | reverse)] }}}}"
              - exec: two
                cmd: "echo {{{{ pw | upper }}}} and then the status of {{{{ tok | lower }}}}"
                shell: true
            """,
            "t.j2": "pw={{ pw | upper }}\nrev={{ pw | reverse }}\nplain=kept\n",
            "secrets.yaml": f"pw: {PW}\ntok: {TOK}\n",
        },
    )
    os.chmod(tmp_path / "secrets.yaml", 0o600)
    return policy


def test_every_form_a_template_makes_of_a_secret_is_hidden(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    state = ["--state-dir", str(tmp_path / "state"), "--converged-timeout", "0", "--diff"]
    done = cli("run", str(policy), *state)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert (tmp_path / "out" / "t.conf").read_text().startswith(f"pw={PW.upper()}\n")
    for form in FORMS:
        assert form not in text, form
    assert "exec[two]: stdout: <secret> and then the status of <secret>" in text
    assert "content changed (secret)" in text  # the template file's diff
    report = cli("report", "--state-dir", str(tmp_path / "state"))
    for form in FORMS:
        assert form not in report.stdout + report.stderr, form


def test_a_failed_templates_message_never_quotes_a_secrets_form(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - file: /out
                content: "{{ {}[pw | upper] }}"
              - file: /other
                template: t.j2
            """,
            "t.j2": "{{ {}[pw | reverse] }}\n",
        },
    )
    found = problems(policy, secret_sets={"pw": PW})
    assert len(found) == 2, found
    for form in (PW.upper(), PW[::-1]):
        assert all(form not in str(p) for p in found), found


def test_the_forms_are_the_parts_that_differ_each_on_its_own() -> None:
    """Two secrets in one string are two forms: the text between them is no secret (a
    resource holding a secret hides every piece of one, so it would be hidden too); a
    form made of parts close together is kept whole and in its parts; characters the
    change lines up by chance (a secret holding ``ana`` and ``nan``) do not cut one."""
    value = "auth=ALICE%40X then check the status of the service then tok%21"
    other = value.replace("ALICE%40X", quote(shifted("ALICE@X"))).replace(
        "tok%21", quote(shifted("tok!"))
    )
    found = forms(value, other)
    assert "ALICE%40X" in found and "tok%21" in found
    assert not [form for form in found if "check" in form or "then" in form], found
    pw, pin = "Banana123", "161616"
    value = f"{pw.upper()}, {pin[::-1]} and {pw.lower()}"
    other = f"{shifted(pw).upper()}, {shifted(pin)[::-1]} and {shifted(pw).lower()}"
    found = forms(value, other)
    for part in (pw.upper(), pin[::-1], pw.lower()):
        assert part in found, found
    assert forms(["a", {"k": "secretvalue"}], ["a", {"k": shifted("secretvalue")}]) == [
        "secretvalue"
    ]
    assert forms(["a", "b"], None) == []  # too short to be kept, whatever the shape
    for keep in (False, True):
        changed = shifted("aaaaaaaXYZ-\u00e4", keep)
        assert len(changed) == 12
        assert all(a != b for a, b in zip("aaaaaaaXYZ-\u00e4", changed, strict=True))


def test_a_piece_of_a_secret_in_the_failure_of_a_resource_holding_it_is_hidden(
    tmp_path: Path,
) -> None:
    """A resource that holds a secret has every piece of it hidden in what it says, its
    failure included (its stderr line and the error that quotes the same line)."""
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - exec: cut
                cmd: "echo {{ pw }} | cut -c1-7 >&2; exit 1"
                shell: true
            """,
        },
    )
    common = ["--state-dir", str(tmp_path / "state"), "--converged-timeout", "0"]
    done = cli("run", str(policy), *common, "--set-secret", f"pw={PW}")
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "exited with code 1: <secret>" in text, text
    assert "hunter2" not in text


def test_a_variable_made_of_a_secret_stands_for_it_whatever_its_type(tmp_path: Path) -> None:
    """A variable that holds a secret as a list of its characters, a number or a piece
    shows the secret in whatever is made of it later; two forms side by side are hidden
    each on its own too (a command that prints one of them)."""
    out = tmp_path / "out.txt"
    policy = write(
        tmp_path,
        {
            "site.yaml": f"""\
            vars:
              chars: "{{{{ pw | list }}}}"
              n: "{{{{ pin | int }}}}"
            resources:
              - file: {out}
                content: "A={{{{ chars|join|upper }}}} B={{{{ n + 1 }}}}\\n"
              - exec: pair
                cmd: "echo {{{{ pw|upper }}}}, {{{{ pw|reverse }}}} | cut -d, -f1"
                shell: true
            """,
        },
    )
    common = ["--state-dir", str(tmp_path / "state"), "--converged-timeout", "0", "--diff"]
    secrets = ["--set-secret", f"pw={PW}", "--set-secret", "pin=735119"]
    out.write_text("old\n")
    done = cli("run", str(policy), *common, *secrets)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert out.read_text() == f"A={PW.upper()} B=735120\n"
    assert "content changed (secret)" in text
    for form in (PW.upper(), "735120", PW[::-1]):
        assert form not in text, form
    assert "exec[pair]: stdout: <secret>" in text


def test_a_name_that_holds_a_secret_is_refused_at_load(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {"site.yaml": 'resources:\n  - file: "/tmp/{{ pw }}"\n    content: x\n'},
    )
    found = problems(policy, secret_sets={"pw": PW})
    assert [p.line for p in found] == [2], found
    assert "this name holds a secret" in found[0].message
    assert all(PW not in str(p) for p in found)


def test_a_secret_with_a_trailing_newline_or_quotes_is_hidden_as_printed(
    tmp_path: Path,
) -> None:
    """``pw: |`` gives a value ending in a newline, which a command prints as a line
    without it; a value with a backslash and quotes is quoted by ``repr`` in an error."""
    policy = write(
        tmp_path,
        {
            "site.yaml": f"""\
            secrets: secrets.yaml
            resources:
              - file: {tmp_path}/k
                mode: "0600"
                content: "{{{{ pw }}}}"
              - exec: show
                cmd: [cat, {tmp_path}/k]
                require: [file[{tmp_path}/k]]
            """,
            "secrets.yaml": "pw: |\n  s3cr3t!\n",
        },
    )
    os.chmod(tmp_path / "secrets.yaml", 0o600)
    done = cli("run", str(policy), "--state-dir", str(tmp_path / "s"), "--converged-timeout", "0")
    assert done.returncode == 0, done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr
    bad = write(tmp_path / "b", {"site.yaml": 'resources:\n  - file: /x\n    mode: "{{ pw }}"\n'})
    found = problems(bad, secret_sets={"pw": "Ab\\c\"d'e(fgh"})
    assert found and all("fgh" not in str(p) for p in found), found


def test_a_bundle_use_named_with_a_secret_is_refused_at_load(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            bundles:
              b:
                resources:
                  - noop: fixed
            resources:
              - b: "use-{{ pw }}"
            """,
        },
    )
    found = problems(policy, secret_sets={"pw": PW})
    assert any("holds a secret" in p.message for p in found), found
    assert all(PW not in str(p) for p in found)


def test_a_secret_given_to_an_mgmt_policy_is_hidden_too(tmp_path: Path) -> None:
    """mgmt's format has no templates, but a value given with --set-secret that a
    command prints is hidden as in the other formats."""
    key = tmp_path / "key"
    key.write_text(PW + "\n")
    policy = tmp_path / "m.yaml"
    policy.write_text(
        f"graph: g\nresources:\n  exec:\n    - name: show\n      cmd: cat {key}\n"
        "      shell: /bin/sh\n"
    )
    common = ["--state-dir", str(tmp_path / "state"), "--converged-timeout", "0"]
    done = cli("run", str(policy), *common, "--set-secret", f"pw={PW}")
    text = done.stdout + done.stderr
    assert "stdout: <secret>" in text, text
    assert PW not in text


def test_a_secret_that_is_not_utf8_is_refused_with_its_name_only(tmp_path: Path) -> None:
    policy = write(tmp_path, {"site.yaml": "resources:\n  - noop: a\n"})
    done = cli("check", str(policy), "--set-secret", "pw=ab\udcff\udcfecd")
    assert done.returncode == 2
    assert "--set-secret pw: the value is not valid UTF-8" in done.stderr


def test_what_holds_no_secret_is_shown_whole_in_a_policy_with_secrets(tmp_path: Path) -> None:
    """Variables rendered one after another (``b`` from ``a``), in a policy that has a
    secret elsewhere: the second rendering sees each variable as rendered, so a file
    made of them alone shows its diff."""
    out = tmp_path / "out"
    policy = write(
        tmp_path,
        {
            "site.yaml": f"""\
            vars:
              a: "{{{{ 'al' ~ 'pha' }}}}"
              b: "{{{{ a }}}}-beta"
            resources:
              - file: {out}
                content: "{{{{ b }}}}\\n"
            """,
        },
    )
    out.write_text("old\n")
    common = ["--state-dir", str(tmp_path / "state"), "--converged-timeout", "0", "--diff"]
    done = cli("run", str(policy), *common, "--set-secret", f"pw={PW}")
    assert done.returncode == 0, done.stderr
    assert "+alpha-beta" in done.stdout and "(secret)" not in done.stdout, done.stdout
