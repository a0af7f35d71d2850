"""``dist.find()``: what ``run --remote`` asks for on every run (the single file and its
SHA-256) is answered from ``CACHE/build/latest.json`` while nothing it was built from
changed, without collecting the distributions again nor hashing the file; a changed
file it was built from makes it collect and record again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convergent.remote import dist, dist_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = dist_files.collect

    def collect() -> dist_files.Parts:
        calls.append(1)
        return real()

    monkeypatch.setattr(dist_files, "collect", collect)
    return calls


def test_find_answers_as_build_and_digest_and_notices_a_changed_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sha = dist.find()
    assert path == dist.build() and sha == dist.digest(path)
    latest = path.parent / dist.LATEST
    assert latest.stat().st_mode & 0o077 == 0  # private, as the cache
    calls = _counting(monkeypatch)
    assert dist.find() == (path, sha)
    assert calls == []  # answered from latest.json
    # a file it was built from (here: one more, recorded as such) changes: collect again
    source = tmp_path / "module.py"
    source.write_text("x = 1\n")
    memo = json.loads(latest.read_text())
    memo["deps"].append(str(source))
    memo["stamp"] = dist._stamp(memo["deps"])
    latest.write_text(json.dumps(memo))
    assert dist.find() == (path, sha)
    assert calls == []
    source.write_text("x = 22\n")
    assert dist.find() == (path, sha)
    assert calls == [1]
    assert str(source) not in json.loads(latest.read_text())["deps"]


def test_a_record_naming_another_file_a_changed_one_or_garbage_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, sha = dist.find()
    latest = path.parent / dist.LATEST
    memo = json.loads(latest.read_text())
    calls = _counting(monkeypatch)
    for bad in ({"file": "../elsewhere.pyz"}, {"stat": [1, 2, 3]}, {"deps": "x"}, "[]"):
        latest.write_text(bad if isinstance(bad, str) else json.dumps({**memo, **bad}))
        assert dist.find() == (path, sha)
    assert calls == [1, 1, 1, 1]
