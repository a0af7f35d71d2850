"""``file`` writes: ``replace``, ``backup``, ``validate`` and symbolic ``mode``, on real
files; each the change, a clean second run, and noop changing nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from convergent.errors import ParamError, ResourceError
from convergent.resources.file import File
from tests.resources.test_file import apply, check, converge
from tests.resources.test_file_links import noop_changes_nothing

# -- replace: false ---------------------------------------------------------------------


def test_replace_false_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "seed"
    resource = File(str(path), content="first\n", replace=False)
    assert noop_changes_nothing(tmp_path, resource) == "created"
    converge(resource)
    assert path.read_text() == "first\n"


def test_replace_false_never_overwrites_but_still_sets_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "seed"
    path.write_text("edited by hand\n")
    path.chmod(0o600)
    assert check(File(str(path), content="first\n", replace=False)) is None
    resource = File(str(path), content="first\n", replace=False, mode="0640")
    assert noop_changes_nothing(tmp_path, resource) == "mode 0600 -> 0640"
    converge(resource)
    assert path.read_text() == "edited by hand\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# -- backup ---------------------------------------------------------------------------


def test_backup_keeps_the_previous_content_as_numbered_files(tmp_path: Path) -> None:
    path = tmp_path / "app.conf"
    path.write_text("one\n")
    path.chmod(0o640)
    resource = File(str(path), content="two\n", backup=True)
    assert noop_changes_nothing(tmp_path, resource) == "content changed"
    change = check(resource)
    assert change is not None
    apply(resource, change)
    assert check(resource) is None
    assert path.read_text() == "two\n"
    assert (tmp_path / "app.conf.~1~").read_text() == "one\n"
    assert stat.S_IMODE((tmp_path / "app.conf.~1~").stat().st_mode) == 0o640
    converge(File(str(path), content="three\n", backup=True))
    assert (tmp_path / "app.conf.~2~").read_text() == "two\n"
    assert (tmp_path / "app.conf.~1~").read_text() == "one\n"


def test_backup_skips_a_name_someone_else_took(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old\n")
    os.symlink("/etc/shadow", tmp_path / "f.~1~")  # planted: never written through
    os.mkfifo(tmp_path / "f.~3~.x")
    converge(File(str(path), content="new\n", backup=True))
    assert (tmp_path / "f.~2~").read_text() == "old\n"
    assert os.readlink(tmp_path / "f.~1~") == "/etc/shadow"


def test_no_backup_when_only_the_mode_changes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("same\n")
    converge(File(str(path), content="same\n", mode="0600", backup=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# -- validate -------------------------------------------------------------------------


def test_validate_runs_on_the_new_content_before_it_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf"
    path.write_text("good = 0\n")
    resource = File(str(path), content="good = 1\n", validate="grep -q ^good %s")
    assert noop_changes_nothing(tmp_path, resource) == "content changed"
    converge(resource)
    assert path.read_text() == "good = 1\n"


def test_failed_validation_leaves_the_file_as_it_was_and_shows_the_output(tmp_path: Path) -> None:
    path = tmp_path / "sudoers"
    path.write_text("old\n")
    path.chmod(0o440)
    before = path.stat()
    resource = File(
        str(path), content="broken\n", validate="sh -c 'echo \"syntax error in $1\"; exit 3' - %s"
    )
    change = check(resource)
    assert change is not None
    with pytest.raises(ResourceError) as info:
        apply(resource, change)
    text = str(info.value)
    assert "validate: sh -c" in text and "exited with 3; the file was left as it was" in text
    assert "syntax error in %s" in text
    after = path.stat()
    assert path.read_text() == "old\n"
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sudoers"]  # no temp left


def test_validate_sees_the_complete_new_content(tmp_path: Path) -> None:
    path = tmp_path / "conf"
    seen = tmp_path / "seen"
    converge(File(str(path), content="abc\n", validate=f"cp %s {seen}"))
    assert seen.read_text() == "abc\n"


def test_a_missing_validate_command_is_a_clear_error(tmp_path: Path) -> None:
    resource = File(str(tmp_path / "f"), content="x", validate="no-such-validator-here %s")
    change = check(resource)
    assert change is not None
    with pytest.raises(ResourceError, match="validate: cannot run no-such-validator-here"):
        apply(resource, change)
    assert not (tmp_path / "f").exists()


# -- symbolic modes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "before", "after"),
    [("u=rw,g=r,o=", 0o666, 0o640), ("a+x", 0o644, 0o755), ("go-w", 0o666, 0o644)],
)
def test_symbolic_modes_change_what_they_name(
    tmp_path: Path, mode: str, before: int, after: int
) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(before)
    resource = File(str(path), mode=mode)
    assert noop_changes_nothing(tmp_path, resource) == f"mode {before:04o} -> {after:04o}"
    converge(resource)
    assert stat.S_IMODE(path.stat().st_mode) == after


def test_a_symbolic_mode_on_a_new_file_starts_from_the_default(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "f"
    converge(File(str(path), content="x", mode="a+x"))
    assert stat.S_IMODE(path.stat().st_mode) == (0o666 & ~umask) | 0o111


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"mode": "u=rwz"}, "mode", 'symbolic one like "u=rw,g=r,o="'),
        ({"mode": "rw-r--r--"}, "mode", '"0644"'),
        ({"validate": "visudo -cf"}, "validate", "must name the file to check as %s"),
        ({"validate": "sh -c 'x %s"}, "validate", "cannot split"),
        ({"state": "directory", "replace": False}, "replace", "no meaning"),
        ({"state": "directory", "purge": True}, "purge", "needs source"),
        ({"recurse": True}, "recurse", "no meaning with state: exists"),
    ],
)
def test_bad_write_parameters_are_rejected_with_a_hint(
    fields: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ParamError, match=words) as info:
        File("/tmp/convergent-test-never-written", **fields)
    assert info.value.field == field


# -- at load, with file:line:col ------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "where", "words"),
    [
        ('    mode: "u=rwz"\n', "site.yaml:3:11", 'symbolic one like "u=rw,g=r,o="'),
        ("    state: hard\n    target: data/f\n", "site.yaml:4:13", "needs an absolute target"),
        ('    validate: "visudo -c"\n', "site.yaml:3:15", "as %s"),
    ],
)
def test_bad_values_are_rejected_at_load_with_their_place_and_a_hint(
    entry: str, where: str, words: str
) -> None:
    from convergent.errors import PolicyError
    from convergent.policy import load_policy_text

    text = "resources:\n  - file: /srv/app/conf\n" + entry
    if "validate" in entry:
        text += '    content: "x"\n'
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "site.yaml")
    (problem,) = info.value.problems
    assert str(problem).startswith(f"{where}: file[/srv/app/conf]: ")
    assert words in problem.message
