"""Who may read the web view: loopback by default; any other address only with a token,
which every API request must then carry (a header or the page's cookie)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from convergent.web.options import check_options, is_loopback, parse_address
from tests.e2e.agent import convergent
from tests.web.support import BOUND, WebAgent, sse_events

TOKEN = "tok-3b9f2c81d0e64a57=="  # "=" as base64 makes them: the cookie carries it quoted


def _policy(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "managed"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'resources:\n  - file: {target}\n    content: "x\\n"\n')
    return policy, target


def _token_file(tmp_path: Path, text: str = TOKEN, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


def test_an_address_off_loopback_without_a_token_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    policy, target = _policy(tmp_path)
    done = convergent(
        "run", str(policy), "--state-dir", str(tmp_path / "st"), "--http", "0.0.0.0:0"
    )
    assert done.returncode == 2
    assert "--http 0.0.0.0:0: an address other than loopback" in done.stderr
    assert "--http-token FILE" in done.stderr
    assert "nothing was changed" in done.stderr
    assert not target.exists()


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    policy, target = _policy(tmp_path)
    token = _token_file(tmp_path, mode=0o644)
    done = convergent(
        "run", str(policy), "--state-dir", str(tmp_path / "st"),
        "--http", "127.0.0.1:0", "--http-token", str(token),
    )  # fmt: skip
    assert done.returncode == 2
    assert f"chmod 600 {token}" in done.stderr
    assert not target.exists()


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16 or more printable characters"):
        check_options("10.0.0.1:80", str(_token_file(tmp_path, "short")))


def test_with_a_token_every_api_request_must_carry_it(tmp_path: Path) -> None:
    policy, target = _policy(tmp_path)
    token = _token_file(tmp_path)
    args = ["run", str(policy), "--state-dir", str(tmp_path / "st")]
    with WebAgent(*args, "--http", "127.0.0.1:0", "--http-token", str(token)) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"))
        for path in ("/api/vertices", "/api/graph.svg", "/api/events", "/api/vertices/x"):
            assert agent.get(path).status_code == 401, path
            wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
            assert agent.get(path, headers=wrong).status_code == 401, path
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        listed = agent.get("/api/vertices", headers=bearer)
        assert listed.status_code == 200
        assert [v["id"] for v in listed.json()["vertices"]] == [f"file[{target}]"]
        cookie = {"Cookie": f"convergent_token={quote(TOKEN)}"}
        assert agent.get("/api/vertices", headers=cookie).status_code == 200
        with httpx.stream(
            "GET", agent.url + "api/events", headers=cookie, timeout=BOUND
        ) as response:
            assert next(sse_events(response))[0] == "snapshot"
        page = agent.get("/")  # the page holds no data: it asks for the token itself
        assert page.status_code == 200 and 'id="login"' in page.text
        # With a token the Host header is not what guards it: any name the host has works.
        port = agent.url.rsplit(":", 1)[1].strip("/")
        other = agent.get("/api/vertices", headers={**bearer, "Host": f"myhost:{port}"})
        assert other.status_code == 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":0", ("127.0.0.1", 0)),
        ("[::1]:9", ("::1", 9)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_addresses_are_read_as_written(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["8080", "127.0.0.1:http", "127.0.0.1:70000", "a b:1"])
def test_a_bad_address_says_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match=r"ADDR:PORT|port|address"):
        parse_address(text)


def test_loopback_is_127_8_and_1_and_localhost() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.9.9.9") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.org")


def test_a_token_file_that_is_a_symlink_or_a_fifo_is_refused_without_blocking(
    tmp_path: Path,
) -> None:
    """Another user could point the agent at her file, or stall it on a FIFO."""
    real = _token_file(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ValueError, match="cannot read the token file"):
        check_options("127.0.0.1:0", str(link))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ValueError, match="is not a regular file"):
        check_options("127.0.0.1:0", str(fifo))
    with pytest.raises(ValueError, match="is not a regular file"):
        check_options("127.0.0.1:0", str(tmp_path))
    assert check_options("10.1.2.3:80", str(real)).token == TOKEN
