"""A large plain policy loads into shared pieces where the values are the same: one
default meta, one mode, one string per short repeated value, and no second copy of a
path that is already normal (docs/performance.md, "Memory and linearity")."""

from __future__ import annotations

from convergent.policy import load_policy_text
from convergent.resources.file import File
from convergent.resources.filechange import absolute


def test_files_with_the_same_mode_and_no_meta_share_their_meta_mode_and_values() -> None:
    text = "resources:\n" + "".join(
        f'  - file: "/srv/f{i:04d}"\n    content: "i am f{i:04d}\\n"\n    mode: "0644"\n'
        for i in range(200)
    )
    graph = load_policy_text(text, "p.yaml")
    files = [r for r in graph.vertices.values() if isinstance(r, File)]
    assert len(files) == 200
    assert len({id(f.meta) for f in files}) == 1
    assert len({id(f._mode) for f in files}) == 1
    assert len({id(f.params.mode) for f in files}) == 1
    assert all(f.path is f.name for f in files)  # the name as given: normal already


def test_a_path_that_is_not_normal_is_still_normalised() -> None:
    assert absolute("path", "//srv//a/./b/") == "/srv/a/b"
    assert absolute("path", "//srv") == "/srv"
    assert absolute("path", "/srv/a") == "/srv/a"
