"""``examples/chain.yaml`` does what the README tour's step 3 shows: after the port is
edited, ``--noop`` names the whole chain (5 would change, 1 may change) and the real run
then makes exactly those changes."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.agent import EXAMPLES, convergent


def test_chain_example_is_predicted_whole_as_the_readme_shows(tmp_path: Path) -> None:
    root = tmp_path / "chain"
    text = (EXAMPLES / "chain.yaml").read_text().replace("/tmp/convergent-chain", str(root))
    policy = tmp_path / "chain.yaml"
    policy.write_text(text)
    args = ["run", str(policy), "--converged-timeout", "0", "--state-dir", str(tmp_path / "s")]
    first = convergent(*args)
    assert first.returncode == 0, first.stderr
    policy.write_text(text.replace('"8080"', '"8081"'))

    noop = convergent(*args, "--noop")
    assert noop.returncode == 0, noop.stderr
    lines = noop.stdout.splitlines()
    for resource in ("kv[port]", f"file[{root}/port]", f"file[{root}/port.copy]"):
        assert f"{resource}: would change: " in "\n".join(lines), lines
    assert any(line.startswith("exec[build]: would run: ") for line in lines), lines
    assert "  would refresh exec[restart]" in lines
    assert any(line.startswith("exec[restart]: would run on refresh: ") for line in lines)
    assert (
        f"exec[migrate]: may run (its guard runs a command; upstream file[{root}/port], "
        "kv[port] would change)"
    ) in lines
    assert lines[-1] == "noop: 5 would change, 1 may change; nothing was changed"
    assert (root / "port").read_text() == "8080"

    real = convergent(*args)
    assert real.returncode == 0, real.stderr
    assert real.stdout.splitlines()[-1].startswith(
        "resources: 7, repaired: 6 (6 resources), failed: 0"
    )
    assert (root / "app.conf").read_text() == "listen 8081\n"
