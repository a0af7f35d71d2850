"""A hostile user races destroy: she swaps, again and again, the directory holding a
file destroy removes for her symlink to a directory of root's with a file of the same
name. Root's file is never removed, whatever the interleaving."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convergent.errors import ResourceError
from convergent.resources.base import Context
from convergent.resources.fileabsent import RemovedPath
from tests.host.hostile import NOBODY, Hostile, exchange, lab, needs_root, run_as_nobody

ROUNDS = 300


def _context(resource_id: str) -> Context:
    services: dict[Callable[[], Any], Any] = {}

    def shared(factory: Callable[[], Any]) -> Any:
        if factory not in services:
            services[factory] = factory()
        return services[factory]

    return Context(
        resource_id, ready=lambda: None, event=lambda: None, log=lambda _: None, shared=shared
    )


@needs_root
def test_a_parent_swapped_for_a_symlink_never_gets_roots_file_removed(tmp_path: Path) -> None:
    lab(tmp_path)
    site = tmp_path / "site"
    app = site / "app"
    decoy = site / "decoy"
    target = tmp_path / "target"
    for path in (site, app):
        path.mkdir()
        os.chown(path, NOBODY, NOBODY)
    target.mkdir()
    (target / "conf").write_text("root's own")
    run_as_nobody(lambda: os.symlink(target, decoy))
    real = os.open(app, os.O_RDONLY | os.O_DIRECTORY)  # her directory, wherever it goes
    form = RemovedPath(f"{app}/conf", f"{app}/conf", tree=False)
    ctx = _context(form.id)
    outcomes = {"removed": 0, "refused": 0, "gone": 0}

    def swap(stopped: Callable[[], bool]) -> int:
        swaps = 0
        while not stopped():
            swaps += exchange(str(app), str(decoy))
        return swaps

    async def destroy_again_and_again() -> None:
        for _ in range(ROUNDS):
            with contextlib.suppress(FileExistsError):
                os.close(os.open("conf", os.O_CREAT | os.O_EXCL | os.O_WRONLY, dir_fd=real))
            try:
                change = await form.check(ctx)
                if change is None:
                    outcomes["gone"] += 1
                    continue
                await form.apply(ctx, change)
                outcomes["removed"] += 1
            except (ResourceError, OSError):
                outcomes["refused"] += 1
            assert (target / "conf").read_text() == "root's own"

    try:
        with Hostile(swap) as racer:
            asyncio.run(destroy_again_and_again())
    finally:
        os.close(real)
    assert racer.result > 0, "the racer never swapped"
    assert (target / "conf").read_text() == "root's own"
    assert outcomes["removed"] + outcomes["refused"] + outcomes["gone"] == ROUNDS
