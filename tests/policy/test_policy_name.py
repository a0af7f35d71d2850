"""Messages name a policy file as ``str(pathlib.Path(path))`` would, without pathlib."""

from __future__ import annotations

import itertools
from pathlib import Path

from convergent.policy.loader import _shown

PIECES = ["", "/", "//", "///", ".", "..", "a", "p.yaml", "./", "a/", "/.", ".a"]


def test_policy_name_is_what_pathlib_shows() -> None:
    for count in range(1, 4):
        for pieces in itertools.product(PIECES, repeat=count):
            text = "".join(pieces)
            assert _shown(text) == str(Path(text)), text
            assert _shown(Path(text)) == str(Path(text)), text
