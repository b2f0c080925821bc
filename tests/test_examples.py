"""Every example of README.md and docs/ runs, against a real client.

Each fenced block in those pages is preceded by a marker, an HTML comment
that Markdown renderers hide, saying how it is tested:

``<!-- example: program CHECK -->``
    A whole program. It runs in a subprocess (its own session, like a
    program started from a terminal) with its port ``8765`` replaced by a
    free one, ``"0.0.0.0"`` by ``"127.0.0.1"``, its Unix socket path and
    certificate files by temporary ones; the test waits until it listens,
    runs the client check ``CHECK`` against it, then sends SIGINT (what
    Ctrl-C sends) and asserts that it exits with status 0 and no traceback.
    Add ``both-backends`` for a program that runs on either loop through
    ``anyio.run(..., backend=...)``: it then runs once per backend.
``<!-- example: fragment CHECK -->``
    Code that defines a handler, a hook or options but does not serve. It is
    executed as a module, then ``CHECK`` serves what it defines with
    :func:`wsserver.serve` in this process, on Trio and on asyncio, and
    talks to it with a client.
``<!-- example: skip REASON -->``
    Not Python that can run here: shell commands, an nginx configuration,
    log output, fragments of other libraries (migration guides show the
    code being migrated from). The reason says which.

The API reference blocks of docs/api.md (a block whose first line names a
module, ``# wsserver.server``) are checked against the code by
tests/test_docs.py and need no marker. docs/cli.md and docs/workers.md
belong to the command line and the workers, whose own tests run what they
show (tests/test_cli.py, tests/workers/).

The client is the ``websockets`` library's synchronous client (run in a
worker thread when the server runs in this process), or raw HTTP.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect, unix_connect

import wsserver

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    path
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    if "_build" not in path.parts and path.name not in {"cli.md", "workers.md"}
)

_FENCE_RE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^\n]*)\n", re.MULTILINE)
_MARKER_RE = re.compile(r"<!--\s*example:\s*(?P<kind>\w+)\s*(?P<args>[^>]*?)\s*-->\s*\n\s*$")
_REFERENCE_RE = re.compile(r"# wsserver(\.\w+)*\n")

TIMEOUT = 10  # seconds for any one step; a step that takes longer is a failure


@dataclass
class Block:
    """One fenced block of a page, and the marker in front of it."""

    page: str
    line: int
    info: str
    code: str
    kind: str | None
    args: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> Iterator[Block]:
    """Yield each fenced block of ``path`` (MyST directives such as ``{toctree}`` excluded)."""
    text = path.read_text(encoding="utf-8")
    position = 0
    while (opening := _FENCE_RE.search(text, position)) is not None:
        indent, fence = opening["indent"], opening["fence"]
        closing = re.compile(rf"^{indent}{fence}\s*$", re.MULTILINE).search(text, opening.end())
        assert closing is not None, f"{path.name}: unclosed fence at {opening.start()}"
        position = closing.end()
        info = opening["info"].strip()
        if info.startswith("{"):
            continue  # a MyST directive, not an example
        code = "\n".join(
            line.removeprefix(indent) for line in text[opening.end() : closing.start()].split("\n")
        )
        marker = _MARKER_RE.search(text, 0, opening.start())
        kind, args = (marker["kind"], marker["args"].split()) if marker else (None, [])
        name = str(path.relative_to(ROOT))
        yield Block(name, text.count("\n", 0, opening.start()) + 1, info, code, kind, args)


ALL_BLOCKS = [block for path in PAGES for block in blocks(path)]


def test_every_block_says_how_it_is_tested() -> None:
    unmarked = [
        block.id
        for block in ALL_BLOCKS
        if block.kind is None
        and not (block.page == "docs/api.md" and _REFERENCE_RE.match(block.code))
    ]
    assert not unmarked, f"blocks without an <!-- example: ... --> marker: {unmarked}"
    kinds = {block.kind for block in ALL_BLOCKS} - {None}
    assert kinds <= {"program", "fragment", "skip"}, kinds
    for block in ALL_BLOCKS:
        if block.kind == "skip":
            assert block.args, f"{block.id}: say why it is skipped"
        elif block.kind in ("program", "fragment"):
            assert block.info == "python", f"{block.id}: only Python runs"
            checks = PROGRAM_CHECKS if block.kind == "program" else FRAGMENT_CHECKS
            assert block.args and block.args[0] in checks, f"{block.id}: unknown check"


def test_skipped_blocks_are_the_listed_kinds() -> None:
    """What does not run is listed here, so that a new one is a visible decision."""
    skipped = {(block.page, block.info or "text") for block in ALL_BLOCKS if block.kind == "skip"}
    languages = {info for _, info in skipped}
    # Python is skipped only where it is another library's code (migration
    # guides) or configuration for the standard library (resource limits).
    assert languages <= {"sh", "nginx", "text", "python", "ini"}, languages
    python_pages = {page for page, info in skipped if info == "python"}
    assert python_pages <= {
        "docs/migrating-from-websockets.md",
        "docs/migrating-from-trio-websocket.md",
        "docs/deployment.md",
    }, python_pages


# Client checks -----------------------------------------------------------------------


@dataclass
class Target:
    """Where an example serves."""

    port: int
    unix_path: str
    cafile: str | None = None

    @property
    def url(self) -> str:
        return f"ws{'s' if self.cafile else ''}://127.0.0.1:{self.port}/"

    def connect(self, path: str = "/", **kwargs: Any) -> ClientConnection:
        """Open a WebSocket connection to ``path``."""
        if self.cafile is not None:
            kwargs["ssl"] = ssl.create_default_context(cafile=self.cafile)
            kwargs["server_hostname"] = "localhost"
        base = self.url.rstrip("/")
        return connect(base + path, open_timeout=TIMEOUT, proxy=None, **kwargs)

    def http_get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """Send a plain HTTP GET; return the status and the body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def check_echo(target: Target) -> None:
    with target.connect() as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01"


def check_unix_echo(target: Target) -> None:
    with unix_connect(target.unix_path, "ws://localhost/", open_timeout=TIMEOUT) as ws:
        ws.send("over a Unix socket")
        assert ws.recv(timeout=TIMEOUT) == "over a Unix socket"


def check_health(target: Target) -> None:
    assert target.http_get("/healthz") == (200, b"OK\n")
    status, body = target.http_get("/")
    assert status == 200 and body.startswith(b"<!DOCTYPE html>")
    check_echo(target)


def check_auth(target: Target) -> None:
    with pytest.raises(InvalidStatus) as refused:
        target.connect().close()
    assert refused.value.response.status_code == 401
    credentials = {"Authorization": "Basic YWxpY2U6d29uZGVybGFuZA=="}  # alice:wonderland
    with target.connect(additional_headers=credentials) as ws:
        assert ws.recv(timeout=TIMEOUT) == "hello alice"


def check_token(target: Target) -> None:
    status, _ = target.http_get("/", {"Upgrade": "websocket"})
    assert status == 403
    headers = {"X-Token": "s3cret"}
    with target.connect(additional_headers=headers, subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.recv(timeout=TIMEOUT) == "speaking chat.v1"


def check_rooms(target: Target) -> None:
    with target.connect("/rooms/lobby") as alice, target.connect("/rooms/lobby") as bob:
        assert alice.recv(timeout=TIMEOUT) == "welcome to lobby"
        assert bob.recv(timeout=TIMEOUT) == "welcome to lobby"
        alice.send("hi")
        assert bob.recv(timeout=TIMEOUT) == "hi"
    with pytest.raises(InvalidStatus) as unknown:
        target.connect("/nowhere").close()
    assert unknown.value.response.status_code == 404


def check_health_only(target: Target) -> None:
    assert target.http_get("/healthz") == (200, b"OK\n")
    check_echo(target)


def check_token_echo(target: Target) -> None:
    assert target.http_get("/", {"Upgrade": "websocket"}) == (403, b"no token\n")
    with target.connect(additional_headers={"X-Token": "s3cret"}, subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"


PROGRAM_CHECKS: dict[str, Callable[[Target], None]] = {
    "health-only": check_health_only,
    "token-echo": check_token_echo,
    "echo": check_echo,
    "unix-echo": check_unix_echo,
    "health": check_health,
    "auth": check_auth,
    "token": check_token,
    "rooms": check_rooms,
}


# Programs ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def adapt(code: str, target: Target, certfile: str, keyfile: str) -> str:
    """Point a documented program at this test's port, socket and certificates."""
    code = code.replace("8765", str(target.port)).replace('"0.0.0.0"', '"127.0.0.1"')
    code = code.replace(", 443,", f", {target.port},")
    code = re.sub(r'"/(?:tmp|run/app)/[\w./-]+\.sock"', repr(target.unix_path), code)
    return certificates_in(code, certfile, keyfile)


def certificates_in(code: str, certfile: str, keyfile: str) -> str:
    """Replace the certificate and key files an example names with this test's."""
    code = re.sub(r'"[^"\n]*(?:cert|fullchain)\.pem"', repr(certfile), code)
    return re.sub(r'"[^"\n]*(?:key|privkey)\.pem"', repr(keyfile), code)


def wait_until_listening(process: subprocess.Popen[str], target: Target) -> None:
    """Poll the program's address until it accepts a connection."""
    family, address = (
        (socket.AF_UNIX, target.unix_path) if target.unix_path and not target.port else None
    ) or (socket.AF_INET, ("127.0.0.1", target.port))
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"the program exited with {process.returncode}: {stderr}")
        with socket.socket(family) as probe, contextlib.suppress(OSError):
            probe.connect(address)
            return
        time.sleep(0.05)
    pytest.fail("the program did not listen within 10 s")


def program_params() -> list[Any]:
    params = []
    for block in ALL_BLOCKS:
        if block.kind != "program":
            continue
        backends = ["trio", "asyncio"] if "both-backends" in block.args else [None]
        for backend in backends:
            suffix = f"-{backend}" if backend else ""
            params.append(pytest.param(block, backend, id=f"{block.id}{suffix}"))
    return params


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A certificate for localhost and 127.0.0.1, its key, and the CA that signed it."""
    trustme = pytest.importorskip("trustme")
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return str(folder / "cert.pem"), str(folder / "key.pem"), str(folder / "ca.pem")


@pytest.mark.parametrize(("block", "backend"), program_params())
def test_program_serves_and_stops_on_ctrl_c(
    block: Block, backend: str | None, tmp_path: Path, certificates: tuple[str, str, str]
) -> None:
    certfile, keyfile, cafile = certificates
    uses_unix = "unix_serve" in block.code
    target = Target(
        port=0 if uses_unix else free_port(),
        unix_path=str(tmp_path / "ws.sock"),
        cafile=cafile if "ssl=" in block.code else None,
    )
    code = adapt(block.code, target, certfile, keyfile)
    if backend is not None:
        code, count = re.subn(r'backend="\w+"', f'backend="{backend}"', code)
        assert count, f"{block.id}: no backend= to choose the loop with"
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a program
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_until_listening(process, target)
        PROGRAM_CHECKS[block.args[0]](target)
        # Ctrl-C sends SIGINT to the terminal's foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert "Traceback" not in stderr, stderr
    assert process.returncode == 0, (process.returncode, stderr)


# Fragments ---------------------------------------------------------------------------


def load(block: Block) -> dict[str, Any]:
    """Execute a fragment as a module and return its namespace."""
    namespace: dict[str, Any] = {"__name__": f"example_{block.line}"}
    exec(compile(block.code, block.id, "exec"), namespace)
    return namespace


@contextlib.asynccontextmanager
async def serving(handler: Any, **options: Any) -> AsyncIterator[Target]:
    """Serve ``handler`` on a free port of 127.0.0.1 for the duration of the block."""
    async with anyio.create_task_group() as task_group:
        serve = functools.partial(wsserver.serve, handler, "127.0.0.1", 0, **options)
        server = await task_group.start(serve)
        try:
            port = server.sockets[0].getsockname()[1]
            yield Target(port=port, unix_path="")
        finally:
            server.close()


async def in_thread(check: Callable[..., None], *args: Any) -> None:
    """Run a blocking client check without blocking the server's loop."""
    await anyio.to_thread.run_sync(check, *args)


async def fragment_echo(ns: dict[str, Any]) -> None:
    handler = ns.get("echo") or ns["handler"]
    async with serving(handler) as target:
        await in_thread(check_echo, target)


def _greeting_then_upper(target: Target) -> None:
    with target.connect() as ws:
        ws.send("alice")
        assert ws.recv(timeout=TIMEOUT) == "hello, alice"
        ws.send("shout")
        assert ws.recv(timeout=TIMEOUT) == "SHOUT"
        ws.send(b"12345")
        assert ws.recv(timeout=TIMEOUT) == "5 bytes received"


async def fragment_greeting(ns: dict[str, Any]) -> None:
    async with serving(ns["handler"]) as target:
        await in_thread(_greeting_then_upper, target)


def _admin_refused(target: Target) -> None:
    with target.connect("/admin/panel") as ws:
        with pytest.raises(Exception) as closed:
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 1008, closed.value
    check_echo(target)


async def fragment_path(ns: dict[str, Any]) -> None:
    async with serving(ns["router"]) as target:
        await in_thread(_admin_refused, target)


def _fragments(target: Target) -> None:
    with target.connect() as ws:
        assert ws.recv(timeout=TIMEOUT) == "part one, part two, the end"
        assert ws.recv(timeout=TIMEOUT) == "".join(f"row {n}\n" for n in range(1000))


async def fragment_stream(ns: dict[str, Any]) -> None:
    async with serving(ns["stream_report"]) as target:
        await in_thread(_fragments, target)


def _latency(target: Target) -> None:
    with target.connect() as ws:
        assert ws.recv(timeout=TIMEOUT).startswith("round trip: ")
        assert ws.recv(timeout=TIMEOUT).startswith("keepalive says: ")


async def fragment_ping(ns: dict[str, Any]) -> None:
    async with serving(ns["measure"]) as target:
        await in_thread(_latency, target)


def _three_then_4000(target: Target) -> None:
    with target.connect() as ws:
        for word in ["one", "two", "three"]:
            ws.send(word)
            assert ws.recv(timeout=TIMEOUT) == word
        with pytest.raises(Exception):  # noqa: B017 - whichever ConnectionClosed
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 4000
        assert ws.close_reason == "three messages is the limit"


async def fragment_close(ns: dict[str, Any]) -> None:
    async with serving(ns["only_three"]) as target:
        await in_thread(_three_then_4000, target)


def _chat(target: Target) -> None:
    with target.connect() as alice, target.connect() as bob:
        # Alice is in the room once she hears herself; then so is Bob.
        alice.send("alice here")
        assert alice.recv(timeout=TIMEOUT) == "alice here"
        bob.send("bob here")
        # Bob may have joined before Alice spoke, and heard her first.
        assert _recv_until(bob, "bob here") in ([], ["alice here"])
        assert alice.recv(timeout=TIMEOUT) == "bob here"
        alice.send("hi bob")
        assert bob.recv(timeout=TIMEOUT) == "hi bob"


def _recv_until(ws: ClientConnection, expected: str) -> list[Any]:
    """Receive until ``expected``; return what came before it (two messages at most)."""
    before = []
    while (message := ws.recv(timeout=TIMEOUT)) != expected:
        before.append(message)
        assert len(before) <= 2, before
    return before


async def fragment_broadcast(ns: dict[str, Any]) -> None:
    handler = ns.get("chat") or ns["handler"]
    async with serving(handler) as target:
        await in_thread(_chat, target)


def _admin_credentials(target: Target) -> None:
    with pytest.raises(InvalidStatus) as refused:
        target.connect().close()
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["WWW-Authenticate"] == (
        'Basic realm="admin", charset="UTF-8"'
    )
    token = "YWRtaW46Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ=="  # admin:correct horse...
    with target.connect(additional_headers={"Authorization": f"Basic {token}"}) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"


async def fragment_check_credentials(ns: dict[str, Any]) -> None:
    async def echo(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    async with serving(echo, create_protocol=ns["create_protocol"]) as target:
        await in_thread(_admin_credentials, target)


def _client_address(target: Target) -> None:
    with target.connect() as ws:
        assert ws.recv(timeout=TIMEOUT) == "127.0.0.1"
    with target.connect(additional_headers={"X-Forwarded-For": "203.0.113.7"}) as ws:
        # The peer is 127.0.0.1, the proxy: the header is believed.
        assert ws.recv(timeout=TIMEOUT) == "203.0.113.7"


async def fragment_client_address(ns: dict[str, Any]) -> None:
    async def tell(websocket: Any) -> None:
        await websocket.send(ns["client_address"](websocket))

    options = ns["serve"].keywords  # the functools.partial the example builds
    async with serving(tell, **options) as target:
        await in_thread(_client_address, target)


async def fragment_tls_context(ns: dict[str, Any]) -> None:
    assert isinstance(ns["context"], ssl.SSLContext)


async def fragment_sansio_driver(ns: dict[str, Any]) -> None:
    """The blocking driver serves one client over a plain socket, in a thread."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        target = Target(port=listener.getsockname()[1], unix_path="")

        def accept_and_serve() -> None:
            sock, _ = listener.accept()
            ns["serve_one"](sock)

        def client() -> None:
            with target.connect(compression=None) as ws:
                ws.send("sans-I/O")
                assert ws.recv(timeout=TIMEOUT) == "sans-I/O"

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(in_thread, accept_and_serve)
            await in_thread(client)


def _negotiates(target: Target, expected: str) -> None:
    with target.connect() as ws:
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Extensions"] == expected
        ws.send("compressed " * 100)
        assert ws.recv(timeout=TIMEOUT) == "compressed " * 100


async def fragment_deflate_factory(ns: dict[str, Any]) -> None:
    async def echo(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    expected = (
        "permessage-deflate; server_no_context_takeover;"
        " server_max_window_bits=10; client_max_window_bits=10"
    )
    async with serving(echo, extensions=[ns["lean"]]) as target:
        await in_thread(_negotiates, target, expected)


def _sees_1001(target: Target, connected: threading.Event) -> None:
    with target.connect() as ws:
        connected.set()
        with pytest.raises(Exception):  # noqa: B017 - ConnectionClosedOK
            ws.recv(timeout=TIMEOUT)
        assert ws.close_code == 1001


async def fragment_graceful_stop(ns: dict[str, Any]) -> None:
    async def echo(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    connected = threading.Event()
    async with anyio.create_task_group() as task_group:
        server = await task_group.start(wsserver.serve, echo, "127.0.0.1", 0)
        target = Target(port=server.sockets[0].getsockname()[1], unix_path="")
        task_group.start_soon(in_thread, _sees_1001, target, connected)
        await anyio.to_thread.run_sync(connected.wait)
        await ns["stop"](server, TIMEOUT)
    assert not server.is_serving()


FRAGMENT_CHECKS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "sansio-driver": fragment_sansio_driver,
    "deflate-factory": fragment_deflate_factory,
    "graceful-stop": fragment_graceful_stop,
    "echo": fragment_echo,
    "greeting": fragment_greeting,
    "path": fragment_path,
    "stream": fragment_stream,
    "ping": fragment_ping,
    "close": fragment_close,
    "broadcast": fragment_broadcast,
    "check-credentials": fragment_check_credentials,
    "client-address": fragment_client_address,
    "tls-context": fragment_tls_context,
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=b.id) for b in ALL_BLOCKS if b.kind == "fragment"],
)
async def test_fragment_works_with_a_real_client(
    block: Block, anyio_backend: str, certificates: tuple[str, str, str]
) -> None:
    certfile, keyfile, _ = certificates
    code = certificates_in(block.code, certfile, keyfile)
    ns = load(Block(block.page, block.line, block.info, code, block.kind, block.args))
    with anyio.fail_after(TIMEOUT * 2):
        await FRAGMENT_CHECKS[block.args[0]](ns)
