"""Facts of this host: each gathered only when asked; hard classes; ``convergent facts``."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from convergent.host.facts import FACT_NAMES, Facts, hard_classes
from convergent.policy import load_policy
from convergent.policy.vars import Inputs
from tests.lang.support import FACTS, cli, write


def test_facts_are_gathered_only_when_a_policy_asks(tmp_path: Path) -> None:
    plain = write(tmp_path, {"plain.yaml": "vars: {a: 1}\nresources:\n  - file: /x\n"})
    facts = Facts()
    load_policy(plain, inputs=Inputs(facts=facts))
    assert facts.gathered() == ()
    used = write(
        tmp_path,
        {"used.yaml": 'resources:\n  - file: /x\n    content: "{{ facts.hostname }}"\n'},
    )
    load_policy(used, inputs=Inputs(facts=facts))
    assert facts.gathered() == ("hostname",)


def test_facts_say_what_the_host_says() -> None:
    facts = Facts()
    assert facts["hostname"] == socket.gethostname().split(".")[0]
    assert facts["arch"] == os.uname().machine
    assert facts["kernel"]["release"] == os.uname().release
    assert facts["cpus"] == len(os.sched_getaffinity(0))
    assert facts["memory"] > 0
    assert "127.0.0.1" in facts["interfaces"]["lo"]
    release = Path("/etc/os-release").read_text()
    assert f"ID={facts['os']['id']}" in release.replace('"', "")
    assert set(facts) == set(FACT_NAMES)


def test_hard_classes_follow_the_facts() -> None:
    classes = hard_classes(FACTS)
    assert {"linux", "debian", "debian_12", "x86_64", "web_1", "virtual", "kvm"} <= classes
    assert "container" not in classes
    boxed = {**FACTS, "virtual": {"container": "docker", "hypervisor": ""}}
    assert "container" in hard_classes(boxed)
    ubuntu = {
        **FACTS,
        "os": {**FACTS["os"], "id": "ubuntu", "family": "debian", "version_id": "22.04"},
    }
    assert {"ubuntu", "debian", "ubuntu_22", "ubuntu_22_04"} <= hard_classes(ubuntu)


def test_facts_command_prints_facts_and_classes() -> None:
    done = cli("facts", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["facts"]["hostname"] == socket.gethostname().split(".")[0]
    assert "linux" in found["classes"]
    text = cli("facts")
    assert text.returncode == 0
    assert f"hostname = {found['facts']['hostname']}" in text.stdout
    assert "classes = " in text.stdout
