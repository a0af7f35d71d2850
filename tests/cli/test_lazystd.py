"""What the run path holds back (cli/lazystd.py) keeps working in the agent's process:
a plain run loads none of ``ssl``, ``concurrent.futures``, ``logging``, ``subprocess``,
``inspect``, ``platform`` and ``typing_extensions``, and the first use of each, whichever
way it comes (an ``import`` or asyncio's own reach for it), loads the real module and
gives it to asyncio, as a plain ``import asyncio`` would have left it."""

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
    from convergent.cli.lazystd import import_runtime
    from convergent.cli.main import main

    policy, state, cert, key, first = sys.argv[1:6]
    import_runtime()
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


# A process started like the CLI runs a plain policy, then checks that nothing held was
# loaded, then runs CHECK (a snippet that uses one held module, one way) and asserts that
# every asyncio global the stand-in was in now holds the real module.
AFTER_RUN = textwrap.dedent(
    """
    import sys
    from convergent.cli.lazystd import HELD, import_runtime
    from convergent.cli.main import main

    policy, state, check, modules = sys.argv[1:5]
    import_runtime()
    code = main(["run", policy, "--converged-timeout", "0", "--state-dir", state])
    assert code == 0, code
    import threading
    for thread in threading.enumerate():  # the run's last helper closes its inotify
        if thread is not threading.current_thread():  # descriptor 2 ms after the run:
            thread.join(10)  # a module is held only while no other thread runs
    held = [*HELD, "ssl", "typing_extensions"]
    loaded = [name for name in held if name in sys.modules]
    assert not loaded, f"the run loaded {loaded}"
    exec(check)
    import asyncio
    for name in modules.split(","):
        real = sys.modules[name]
        for module in list(sys.modules.values()):
            for key, value in vars(module).items():
                assert type(value).__name__ != "_Held" or value.__name__ != name, (
                    f"{module.__name__}.{key} still holds the stand-in of {name}"
                )
    print("ok")
    """
)

CHECKS = {
    "subprocess through asyncio": (
        "subprocess",
        """
import asyncio
async def child():
    proc = await asyncio.create_subprocess_exec(
        "echo", "hi", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return out, proc.returncode
assert asyncio.run(child()) == (b"hi\\n", 0)
import subprocess
assert asyncio.base_events.subprocess is subprocess
assert asyncio.unix_events.subprocess is subprocess
""",
    ),
    "subprocess imported first": (
        "subprocess",
        """
import subprocess, asyncio
assert asyncio.events.subprocess is subprocess
assert subprocess.run(["true"]).returncode == 0
async def child():
    proc = await asyncio.create_subprocess_exec("true")
    return await proc.wait()
assert asyncio.run(child()) == 0
""",
    ),
    "executor through asyncio": (
        "concurrent.futures",
        """
import asyncio
async def in_thread():
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, sum, [1, 2, 3])
assert asyncio.run(in_thread()) == 6
import concurrent.futures
assert asyncio.base_events.concurrent.futures is concurrent.futures
assert asyncio.tasks.FIRST_COMPLETED == concurrent.futures.FIRST_COMPLETED
""",
    ),
    "concurrent.futures imported first": (
        "concurrent.futures",
        """
import asyncio, concurrent.futures, threading
async def threadsafe():
    loop = asyncio.get_running_loop()
    async def answer():
        return 42
    done = concurrent.futures.Future()
    def other():
        done.set_result(asyncio.run_coroutine_threadsafe(answer(), loop).result(10))
    threading.Thread(target=other).start()
    return await asyncio.wrap_future(done)
assert asyncio.run(threadsafe()) == 42
""",
    ),
    "logging through asyncio": (
        "logging",
        """
import asyncio
async def fail_in_callback():
    loop = asyncio.get_running_loop()
    loop.call_soon(lambda: 1 / 0)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
import io, logging
logging.basicConfig(stream=(out := io.StringIO()), level=logging.DEBUG)
asyncio.run(fail_in_callback())
text = out.getvalue()
assert "Using selector" in text and "ZeroDivisionError" in text, text
assert asyncio.log.logger is logging.getLogger("asyncio")
assert asyncio.base_events.logger is logging.getLogger("asyncio")
""",
    ),
    "logging before it is loaded": (
        "logging",
        """
import asyncio, contextlib, io
async def fail_in_callback():
    asyncio.get_running_loop().call_soon(lambda: 1 / 0)
    await asyncio.sleep(0)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    asyncio.run(fail_in_callback())
assert "ZeroDivisionError" in err.getvalue(), err.getvalue()  # logging's last resort
assert "Using selector" not in err.getvalue()
import logging
""",
    ),
    "inspect through asyncio": (
        "inspect",
        """
import asyncio
async def coroutine_function():
    await asyncio.sleep(0)
assert asyncio.iscoroutinefunction(coroutine_function)
async def pending():
    task = asyncio.create_task(coroutine_function())
    task.add_done_callback(print)
    text = repr(task)
    await task
    return text
assert "cb=[print()]" in asyncio.run(pending())
import inspect
assert asyncio.coroutines.inspect is inspect and asyncio.format_helpers.inspect is inspect
""",
    ),
    "platform and uuid": (
        "platform",
        """
import uuid, platform
assert uuid.uuid1().version == 1 and uuid.uuid4().version == 4
assert platform.system() == "Linux" and uuid.platform is platform and uuid._LINUX
""",
    ),
    "traceback and linecache": (
        "traceback",
        """
import asyncio, traceback
try:
    1 / 0
except ZeroDivisionError:
    text = traceback.format_exc()
assert text.startswith("Traceback") and "ZeroDivisionError: division by zero" in text, text
import linecache
assert linecache.getline(asyncio.__file__, 1).strip()
async def debug_mode():
    asyncio.get_running_loop().set_debug(True)
    task = asyncio.get_running_loop().create_task(asyncio.sleep(0))  # line 12
    await task
    return task._source_traceback[-1]
created = asyncio.run(debug_mode())  # asyncio's C half took extract_stack while it was held
assert (created.filename, created.lineno) == ("<string>", 12), created
assert asyncio.base_tasks.linecache is linecache and asyncio.base_tasks.traceback is traceback
""",
    ),
    "msgspec schema and inspect": (
        "msgspec._json_schema",
        """
import msgspec
class Point(msgspec.Struct):
    x: int
    y: int = 0
schema = msgspec.json.schema(Point)
assert schema["$defs"]["Point"]["required"] == ["x"], schema
assert isinstance(msgspec.inspect.type_info(Point), msgspec.inspect.StructType)
import msgspec._json_schema
""",
    ),
    "a package's held submodule, from-imported": (
        "concurrent.futures",
        """
import asyncio, sys
from concurrent import futures
assert futures is sys.modules["concurrent.futures"] and futures.__file__
assert asyncio.futures.concurrent.futures is futures
from msgspec import inspect as msgspec_inspect
assert msgspec_inspect is sys.modules["msgspec.inspect"] and msgspec_inspect.__file__
import msgspec
msgspec.json.schema(int)
assert msgspec._json_schema.mi is msgspec_inspect
""",
    ),
    "a private copy is not given to asyncio": (
        "subprocess",
        """
import asyncio, importlib.util, sys
spec = importlib.util.find_spec("subprocess")
copy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(copy)
assert asyncio.base_events.subprocess is not copy
import subprocess
assert subprocess is not copy and asyncio.base_events.subprocess is subprocess
assert type(subprocess.__spec__.loader).__name__ == "SourceFileLoader", subprocess.__spec__
assert type(subprocess.__loader__).__name__ == "SourceFileLoader"
""",
    ),
    "a thread waits for a module another thread is importing": (
        "inspect",
        """
import asyncio, sys, threading, time
stand_in = asyncio.coroutines.inspect
errors, go = [], threading.Event()
def first_use():
    go.set()
    deadline = time.monotonic() + 10
    while "inspect" not in sys.modules and time.monotonic() < deadline:
        pass  # the main thread has begun importing it
    try:
        stand_in.iscoroutinefunction(print)
    except Exception as exc:
        errors.append(repr(exc))
thread = threading.Thread(target=first_use)
thread.start()
assert go.wait(10)
import inspect
thread.join(10)
assert not errors, errors
del stand_in
""",
    ),
    "a held module's first use leaves importlib alone": (
        "traceback",
        """
import asyncio, sys
assert "importlib" not in sys.modules, "a run loads importlib: this check no longer sees it"
lines = asyncio.base_tasks.traceback.format_exception_only(ValueError("x"))  # the stand-in
assert lines == ["ValueError: x\\n"], lines
assert "traceback" in sys.modules and "importlib" not in sys.modules
import traceback
""",
    ),
    "asyncio's TLS protocol": (
        "asyncio.sslproto",
        """
import asyncio, sys
proto = asyncio.sslproto  # the package's attribute, as a plain import leaves it
assert proto is sys.modules["asyncio.sslproto"] and proto.__file__
assert asyncio.base_events.sslproto is proto and asyncio.selector_events.sslproto is proto
assert proto.SSLProtocol.__name__ == "SSLProtocol"
import logging
assert proto.logger is logging.getLogger("asyncio")  # taken from the stand-in, then given
""",
    ),
    "asyncio's logger stand-in kept by a later module": (
        "logging",
        """
import asyncio.log
kept = asyncio.log.logger  # the stand-in, taken before logging is loaded
import io, logging
assert asyncio.log.logger is logging.getLogger("asyncio")
out = io.StringIO()
logging.basicConfig(stream=out, level=logging.DEBUG, format="%(filename)s:%(lineno)d %(message)s")
kept.debug("said here")  # line 8: the record names this line, not the stand-in's
assert out.getvalue() == "<string>:8 said here\\n", out.getvalue()
""",
    ),
    "locale, held while subprocess is loaded": (
        "subprocess,locale",
        """
import subprocess, sys
assert subprocess.run(["true"]).returncode == 0
assert "locale" not in sys.modules, "a binary command loaded locale"
assert subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout == "hi\\n"
import locale
assert subprocess.locale is locale and locale.getencoding()
""",
    ),
    "locale, not held while another thread runs": (
        "subprocess",
        """
import sys, threading
go = threading.Event()
other = threading.Thread(target=go.wait, args=(30,))
other.start()
import subprocess  # another thread could import locale meanwhile and keep a stand-in
go.set()
other.join(30)
real = sys.modules["locale"]
assert type(real).__name__ != "_Held" and subprocess.locale is real and real.__file__
""",
    ),
    "asyncio's happy eyeballs and socket transports": (
        "asyncio.staggered,asyncio.trsock",
        """
import asyncio, socket, sys
async def echo_once():
    async def echo(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert type(server.sockets[0]).__name__ == "TransportSocket"
    async with asyncio.timeout(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, happy_eyeballs_delay=0.1)
        writer.write(b"hello\\n")
        line = await reader.readline()
        assert writer.get_extra_info("socket").family == socket.AF_INET
        writer.close()
    server.close()
    await server.wait_closed()
    return line
assert asyncio.run(echo_once()) == b"hello\\n"
assert asyncio.base_events.staggered is sys.modules["asyncio.staggered"]
assert asyncio.selector_events.trsock is sys.modules["asyncio.trsock"] is asyncio.trsock
""",
    ),
    "typing_extensions and msgspec": (
        "typing_extensions",
        """
import msgspec
from typing import NotRequired, TypedDict
class Part(TypedDict):
    name: str
    size: NotRequired[int]
assert msgspec.json.decode(b'{"name": "a"}', type=Part) == {"name": "a"}
try:
    msgspec.json.decode(b'{"size": 1}', type=Part)
except msgspec.ValidationError as exc:
    assert "name" in str(exc)
else:
    raise AssertionError("a missing required key was accepted")
import typing_extensions
assert typing_extensions.NotRequired is NotRequired
""",
    ),
}


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_a_held_module_works_when_first_used_after_a_run(tmp_path: Path, check: str) -> None:
    module, code = CHECKS[check]
    policy = tmp_path / "policy.yaml"
    policy.write_text(f'resources:\n  - file: {tmp_path / "managed"}\n    content: "x\\n"\n')
    done = subprocess.run(
        [sys.executable, "-c", AFTER_RUN, str(policy), str(tmp_path / "state"), code, module],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ok"
    assert (tmp_path / "managed").read_text() == "x\n"


def test_what_a_stand_in_answers_is_what_the_real_module_has() -> None:
    """Each value read at import time from a stand-in equals the real module's (a new
    Python that changes one of them fails here, not in a run)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import importlib
                from convergent.cli.lazystd import HELD, Forward
                for name, values in HELD.items():
                    real = importlib.import_module(name)
                    for key, value in values.items():
                        want = getattr(real, key)
                        if isinstance(value, Forward):
                            assert (value.module, value.name) == (name, key)
                            assert callable(want), (name, key)
                            continue
                        if callable(value):
                            got, want = value(), want()  # one line: the same stack
                        else:
                            got = value
                        if key == "extract_stack":
                            got, want = [tuple(f) for f in got], [tuple(f) for f in want]
                        assert got == want, (name, key, got, want)
                print(sorted(HELD))
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "subprocess" in done.stdout and "logging" in done.stdout


# The names of `datetime` and what each is, as `repr`s, and its spec (a plain import's).
DATETIME = textwrap.dedent(
    """
    import sys
    if sys.argv[1] == "runtime":
        from convergent.cli.lazystd import import_runtime
        import_runtime()
    import datetime
    import _datetime
    for key, value in sorted(vars(datetime).items()):
        if key in ("__builtins__", "__loader__"):
            value = type(value).__name__
        elif not key.startswith("_"):
            same = getattr(_datetime, key, None) is value
            value = f"{type(value).__name__} {getattr(value, '__name__', '')} (_datetime's: {same})"
        print(key, value if key != "__spec__" else (value.name, value.origin, value.cached))
    loader = datetime.__loader__
    print("loader", type(loader).__name__, datetime.__spec__.loader is loader)
    """
)


def test_datetime_is_the_module_a_plain_import_makes() -> None:
    """``datetime`` after the run path's imports (made from ``_datetime`` without running
    3.11's pure-Python version) has the names, values, docstring, spec and loader of a
    plain ``import datetime``; msgspec encodes its values as before."""
    found = {}
    for way in ("plain", "runtime"):
        done = subprocess.run(
            [sys.executable, "-c", DATETIME, way], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        found[way] = done.stdout
    assert found["runtime"] == found["plain"]
    assert "datetime type datetime (_datetime's: True)" in found["plain"]
    assert "loader SourceFileLoader True" in found["plain"]


# A process started like the CLI runs POLICY (twice: the second run of a long policy is
# made from the policy cache) and lists where compile() was called from, but the import
# system (a module compiled from its source, as when no .pyc is written).
NO_COMPILE = textwrap.dedent(
    """
    import builtins, sys
    real, calls = builtins.compile, []
    def compile(*args, **kwargs):
        where = sys._getframe(1).f_code
        if "importlib" not in where.co_filename:
            calls.append(f"{where.co_filename}:{where.co_name}")
        return real(*args, **kwargs)
    builtins.compile = compile
    from convergent.cli.lazystd import import_runtime
    from convergent.cli.main import main

    policy, state = sys.argv[1:3]
    import_runtime()
    for _ in range(2):
        code = main(["run", policy, "--converged-timeout", "0", "--state-dir", state])
        assert code == 0, code
    print("compile() called from:", calls)
    """
)


@pytest.mark.parametrize("policy", ["ten files", "exec", "kept graph"])
def test_a_run_compiles_no_annotation(tmp_path: Path, policy: str) -> None:
    """No ``compile()`` in a run of a plain policy (file, exec, or the graph kept in the
    policy cache): the first one in a process costs ~1 ms, making the ``ast`` node types.
    typing compiles an annotation that is a string (a NamedTuple's field, a Struct's
    field that msgspec resolves); the types named where the classes are made
    (``convergent/hints.py``) and msgspec's import-time probe answered by a stand-in
    (cli/lazystd.py) keep them out."""
    target = tmp_path / "files"
    target.mkdir()
    if policy == "exec":
        text = (
            "resources:\n  - exec: one\n    cmd: [/bin/true]\n"
            "  - exec: two\n    cmd: [/bin/true]\n    require: [exec[one]]\n"
        )
    else:
        count = 10 if policy == "ten files" else 400
        text = "resources:\n" + "".join(
            f'  - file: "{target}/f{i}"\n    content: "line {i}\\n"\n' for i in range(count)
        )
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-c", NO_COMPILE, str(path), str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "compile() called from: []", done.stdout
    if policy == "kept graph":
        assert (tmp_path / "state" / "policy.cache").is_file()
    elif policy == "ten files":
        assert (target / "f9").read_text() == "line 9\n"


# A thread reads typing's forward references in a loop while import_runtime runs.
THREAD_AND_TYPING = textwrap.dedent(
    """
    import threading, typing
    class C:
        x: "int"
    seen, started, stop = [], threading.Event(), threading.Event()
    def reader():
        while not stop.is_set():
            try:
                hints = typing.get_type_hints(C)
            except Exception as exc:
                seen.append(repr(exc))
                return
            if hints["x"] is not int:
                seen.append(repr(hints))
                return
            started.set()
    thread = threading.Thread(target=reader)
    thread.start()
    assert started.wait(30)
    from convergent.cli.lazystd import import_runtime
    import_runtime()
    stop.set()
    thread.join(30)
    print("the other thread saw:", seen)
    """
)


def test_a_thread_using_typing_meanwhile_sees_the_real_forward_refs() -> None:
    """``typing.ForwardRef`` is a stand-in during msgspec's import only when no other
    thread runs: a thread evaluating annotations meanwhile gets the real ones."""
    done = subprocess.run(
        [sys.executable, "-c", THREAD_AND_TYPING], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the other thread saw: []"


def test_a_datetime_module_before_the_standard_one_runs_as_it_is(tmp_path: Path) -> None:
    """Only the standard library's ``datetime.py`` is made from ``_datetime``: one in the
    script's directory (or on ``PYTHONPATH``) that comes first runs as a plain import
    would run it."""
    (tmp_path / "datetime.py").write_text("from _datetime import *\nLOCAL_MARK = 1\n")
    script = tmp_path / "probe.py"
    script.write_text(
        "from convergent.cli.lazystd import import_runtime\n"
        "import_runtime()\n"
        "import datetime\n"
        "print(datetime.__file__, datetime.LOCAL_MARK)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{tmp_path / 'datetime.py'} 1"


# A datetime module from another importer (no file: origin None) in a Python whose os
# module has no __file__ either.
OTHER_DATETIME = textwrap.dedent(
    """
    import os, sys
    from importlib.machinery import ModuleSpec
    del os.__file__

    class Loader:
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            import _datetime
            module.__dict__.update(vars(_datetime))
            module.ran_own_code = True

    class Finder:
        def find_spec(self, name, path=None, target=None):
            return ModuleSpec(name, Loader()) if name == "datetime" else None

    sys.meta_path.insert(0, Finder())
    from convergent.cli.lazystd import import_runtime
    import_runtime()
    import datetime
    print("its own code ran:", getattr(datetime, "ran_own_code", False))
    """
)


def test_a_datetime_module_of_another_importer_runs_its_own_code() -> None:
    """Where the standard library's directory is unknown (``os`` without a file), no
    ``datetime`` is taken for the standard one: an importer's module runs its code."""
    done = subprocess.run(
        [sys.executable, "-c", OTHER_DATETIME], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "its own code ran: True"
