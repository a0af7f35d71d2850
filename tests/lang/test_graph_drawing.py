"""`convergent graph` draws bundles as boxes, automatic edges dotted, automatic groups."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.lang.support import cli, write

POLICY = """\
bundles:
  inner:
    resources:
      - pkg: "{{ name }}-tools"
  webserver:
    resources:
      - file: "/srv/{{ name }}"
        state: directory
      - file: "/srv/{{ name }}/site.conf"
        content: x
      - inner: "{{ name }}"
resources:
  - webserver: main
  - webserver: api
  - pkg: sl
  - pkg: cowsay
  - noop: after
    notify: webserver[main]
"""


def _drawn(tmp_path: Path) -> str:
    policy = write(tmp_path, {"site.yaml": POLICY})
    done = cli("graph", str(policy))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bundle_uses_are_nested_boxes(tmp_path: Path) -> None:
    text = _drawn(tmp_path)
    main = text.index('label="webserver[main]"')
    inner = text.index('label="inner[main]"')
    api = text.index('label="webserver[api]"')
    assert main < text.index('"file[/srv/main/site.conf]";') < inner < api
    assert main < text.index('"pkg[main-tools]";', inner) < api


def test_automatic_edges_are_dotted_and_written_ones_are_not(tmp_path: Path) -> None:
    text = _drawn(tmp_path)
    assert (
        '"file[/srv/main]" -> "file[/srv/main/site.conf]" [style=dotted, color="gray40", '
        'tooltip="automatic edge"];'
    ) in text
    assert '"noop[after]" -> "pkg[main-tools]" [style=dashed, label="notify"];' in text


def test_automatic_groups_are_drawn(tmp_path: Path) -> None:
    """Packages in different boxes are joined by lines; every package is in the group."""
    text = _drawn(tmp_path)
    joined = [line for line in text.splitlines() if 'label="autogroup"' in line]
    named = " ".join(joined)
    for pkg in ("sl", "cowsay", "main-tools", "api-tools"):
        assert f'"pkg[{pkg}]"' in named
    assert len(joined) == 3


def test_a_group_inside_one_place_is_a_dashed_box(tmp_path: Path) -> None:
    policy = write(tmp_path, {"p.yaml": "resources:\n  - pkg: sl\n  - pkg: cowsay\n"})
    text = cli("graph", str(policy)).stdout
    assert 'label="autogroup 1";' in text and "style=dashed;" in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")
def test_graphviz_reads_the_drawing(tmp_path: Path) -> None:
    text = _drawn(tmp_path)
    done = subprocess.run(["dot", "-Tjson"], input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    drawn: dict[str, Any] = json.loads(done.stdout)
    labels = {obj.get("label") for obj in drawn["objects"]}
    assert {"webserver[main]", "inner[main]", "webserver[api]", "inner[api]"} <= labels
