"""TLS keeps working in the agent's process: the run path does not load ``ssl``
(cli/lazytls.py), and the first use of TLS, whichever way it comes, loads it for asyncio."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Runs in a process started like the CLI (`entry`: asyncio imported without ssl, then the
# real `run` command; nothing imported before it), then an asyncio TLS round trip with a
# server on 127.0.0.1 in the same process. FIRST says how TLS is first reached: `import`,
# an `import ssl` as httpx or asyncssh do; `asyncio`, asyncio's own reach for the module
# (the default context of `ssl=True`) before anything imports it.
CHILD = textwrap.dedent(
    """
    import sys
    from convergent.cli.lazytls import import_asyncio
    from convergent.cli.main import main

    policy, state, cert, key, first = sys.argv[1:6]
    import_asyncio()
    code = main(["run", policy, "--converged-timeout", "0", "--state-dir", state])
    assert code == 0, code
    assert "ssl" not in sys.modules, "the run loaded ssl"
    import asyncio
    if first == "asyncio":
        default = asyncio.sslproto._create_transport_context(False, "localhost")
    import ssl
    if first == "asyncio":
        assert isinstance(default, ssl.SSLContext)
    assert asyncio.sslproto.ssl is ssl and asyncio.base_events.ssl is ssl

    async def round_trip():
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)

        async def echo(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        client_ctx = ssl.create_default_context(cafile=cert)
        async with asyncio.timeout(20):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )
            writer.write(b"hello over tls\\n")
            line = await reader.readline()
            version = writer.get_extra_info("ssl_object").version()
            writer.close()
        server.close()
        await server.wait_closed()
        return line, version

    line, version = asyncio.run(round_trip())
    print("echo:", line.decode().strip(), version)
    """
)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("first", ["import", "asyncio"])
def test_asyncio_tls_connection_works_after_a_run_in_the_same_process(
    tmp_path: Path, first: str
) -> None:
    cert, key = _self_signed(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'resources:\n  - file: {tmp_path / "managed"}\n    content: "x\\n"\n')
    files = [str(policy), str(tmp_path / "state"), str(cert), str(key)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *files, first],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "echo: hello over tls TLSv1." in done.stdout
    assert (tmp_path / "managed").read_text() == "x\n"
