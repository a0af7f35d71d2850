"""`convergent schema`: the JSON Schema editors validate policies with, and `convergent doc`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import convergent
from convergent.cli.schema import _ENTRY_VALUES, TOP_KEYS
from convergent.policy.entries import ENTRY_KEYS
from convergent.policy.nodes import mask_flow_refs, unmask
from convergent.resources.base import builtin_kinds

ROOT = Path(__file__).resolve().parent.parent.parent
SRC = Path(convergent.__file__).resolve().parent.parent
SITE = ROOT / "tests" / "plugins" / "site"
BOUND = 60.0


def _convergent(*args: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    paths = [str(SRC), *([str(extra_path)] if extra_path else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, "-m", "convergent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


def _schema(extra_path: Path | None = None) -> dict[str, Any]:
    done = _convergent("schema", extra_path=extra_path)
    assert done.returncode == 0, done.stderr
    schema: dict[str, Any] = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return unmask(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _policy(text: str) -> Any:
    """A policy as convergent reads it (``require: [file[/a]]`` included) as plain data."""
    masked = mask_flow_refs(text)
    return _plain(yaml.safe_load(masked if masked is not None else text))


def _errors(schema: dict[str, Any], policy: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [error.message for error in validator.iter_errors(policy)]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return _schema()


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_policy_validates_against_the_schema(
    schema: dict[str, Any], path: Path
) -> None:
    assert _errors(schema, _policy(path.read_text())) == []


def test_a_typo_in_a_parameter_is_rejected_by_the_schema(schema: dict[str, Any]) -> None:
    policy = _policy("resources:\n  - file: /tmp/x\n    contnet: hi\n")
    assert any("'contnet' was unexpected" in e for e in _errors(schema, policy))


def test_an_unknown_kind_a_wrong_type_and_a_bad_meta_are_rejected(
    schema: dict[str, Any],
) -> None:
    assert _errors(schema, _policy("resources:\n  - fiel: /tmp/x\n"))
    assert _errors(schema, _policy("resources:\n  - file: /tmp/x\n    mode: 644\n"))
    assert _errors(schema, _policy("resources:\n  - noop: a\n    meta: {retyr: 1}\n"))
    assert _errors(schema, _policy("resources:\n  - exec: a\n"))  # cmd is required
    assert _errors(schema, _policy("resource:\n  - noop: a\n"))  # a typo'd top-level key
    good = "resources:\n  - noop: a\n    meta: {retry: 2}\n    require: [noop[b]]\n  - noop: b\n"
    assert _errors(schema, _policy(good)) == []


def test_the_schema_carries_every_kind_meta_entry_key_and_their_descriptions(
    schema: dict[str, Any],
) -> None:
    defs = schema["$defs"]
    for kind in builtin_kinds():
        props = defs[f"kind.{kind}"]["properties"]
        for key in ENTRY_KEYS:
            assert key.name in props
            assert _ENTRY_VALUES.get(key.name), f"entry key {key.name} has no type in the schema"
    cmd = defs["kind.exec"]["properties"]["cmd"]
    assert "argv list" in cmd["description"]
    assert defs["kind.exec"]["properties"]["timeout"]["default"] == 300
    assert "retry" in defs["Meta"]["properties"]
    assert "description" in defs["Meta"]["properties"]["retry"]
    assert list(schema["else"]["properties"]) == list(TOP_KEYS)


def test_the_schema_knows_the_top_level_keys_the_native_reader_accepts() -> None:
    from convergent.policy import native

    assert tuple(native._TOP_KEYS) == TOP_KEYS


def test_an_mgmt_yamlgraph_is_left_to_its_own_reader(schema: dict[str, Any]) -> None:
    assert _errors(schema, {"graph": "g", "resources": {"noop": []}}) == []


def test_plugin_kinds_found_by_entry_point_are_in_the_schema() -> None:
    schema = _schema(SITE)
    assert "kind.note" in schema["$defs"]
    note = "resources:\n  - note: n\n    path: /tmp/n\n    {}: hi\n"
    assert _errors(schema, _policy(note.format("text"))) == []
    assert _errors(schema, _policy(note.format("txet")))


def test_schema_output_is_written_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "convergent.schema.json"
    done = _convergent("schema", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["$schema"].endswith("2020-12/schema")
    assert out.stat().st_mode & 0o777 == 0o644


def test_doc_prints_a_kinds_reference_from_the_same_source_as_the_readme() -> None:
    done = _convergent("doc", "exec")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("EXEC\n")
    assert "  cmd  (list[str] or str; required)" in done.stdout
    assert "ifnewer.target" in done.stdout
    readme = (ROOT / "README.md").read_text()
    assert "absolute working directory for the command and its guards" in readme
    assert "absolute working directory for the command and its guards" in done.stdout


def test_doc_lists_kinds_and_meta_and_rejects_an_unknown_kind_with_a_hint() -> None:
    listing = _convergent("doc")
    assert listing.returncode == 0
    for kind in builtin_kinds():
        assert f"  {kind} " in listing.stdout
    meta = _convergent("doc", "meta")
    assert meta.returncode == 0 and "  retry  (int; default 0)" in meta.stdout
    bad = _convergent("doc", "fiel")
    assert bad.returncode == 2
    assert "no kind 'fiel' (did you mean 'file'?)" in bad.stderr
    assert bad.stdout == ""
