"""Every start-up failure of the command line is one line, naming what failed.

Status 1 when starting fails (an address that cannot be listened on, a
certificate that cannot be loaded, a socket that cannot be used), status 2
for a usage error (argparse's own, a bad value, flags that do not go
together). Run as a user runs it: a subprocess, real sockets.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from .runner import run_cli

BACKENDS = ["trio", "asyncio"]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def assert_one_line(result: subprocess.CompletedProcess[str], status: int, line: str) -> None:
    assert result.returncode == status, result.stderr
    assert result.stderr == f"wsserver: {line}\n"
    assert result.stdout == ""


# Listening --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_port_in_use_is_one_line_and_status_1(
    tmp_path: Path, busy_port: int, backend: str
) -> None:
    result = run_cli(["--port", str(busy_port), "--backend", backend], tmp_path)
    assert_one_line(result, 1, f"cannot listen on 127.0.0.1:{busy_port}: address already in use")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_host_that_does_not_resolve_is_one_line_and_status_1(
    tmp_path: Path, backend: str
) -> None:
    # .invalid never resolves (RFC 6761); the resolver's words vary by system.
    result = run_cli(["--host", "nosuch.invalid", "--port", "0", "--backend", backend], tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("wsserver: cannot listen on nosuch.invalid:0: ")
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(["--port", "99999"], tmp_path)
    assert_one_line(result, 2, "--port must be an integer from 0 to 65535 or none, got 99999")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_unix_socket_in_a_missing_directory_is_one_line_and_status_1(
    tmp_path: Path, backend: str
) -> None:
    path = tmp_path / "missing" / "app.sock"
    result = run_cli(["--uds", str(path), "--backend", backend], tmp_path)
    assert_one_line(result, 1, f"cannot listen on {path}: no such file or directory")


@pytest.mark.parametrize(
    ("fd", "reason"), [("0", "socket operation on non-socket"), ("97", "bad file descriptor")]
)
def test_an_unusable_file_descriptor_is_one_line_and_status_1(
    tmp_path: Path, fd: str, reason: str
) -> None:
    # 0 is standard input (here /dev/null); 97 is not open.
    result = run_cli(["--fd", fd], tmp_path)
    assert_one_line(result, 1, f"cannot use --fd {fd}: {reason}")


def test_a_datagram_socket_is_refused_for_fd(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fd = sock.fileno()
        result = run_cli(["--fd", str(fd)], tmp_path, pass_fds=[fd])
    assert_one_line(result, 1, f"cannot use --fd {fd}: not a stream socket")


# TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cert.pem and key.pem that go together, other.key.pem that does not, bad.pem."""
    folder = tmp_path_factory.mktemp("pem")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    issued.private_key_pem.write_to_path(folder / "key.pem")
    authority.issue_cert("127.0.0.1").private_key_pem.write_to_path(folder / "other.key.pem")
    (folder / "bad.pem").write_text("not a certificate\n")
    return folder


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--certfile", "missing.pem"],
         "cannot read --certfile missing.pem: no such file or directory"),
        (["--certfile", "bad.pem"], "--certfile bad.pem holds no PEM certificate"),
        (["--certfile", "cert.pem"], "--certfile cert.pem holds no usable PEM private key"),
        (["--certfile", "cert.pem", "--keyfile", "missing.pem"],
         "cannot read --keyfile missing.pem: no such file or directory"),
        (["--certfile", "cert.pem", "--keyfile", "bad.pem"],
         "--keyfile bad.pem holds no usable PEM private key"),
        (["--certfile", "cert.pem", "--keyfile", "other.key.pem"],
         "the private key in --keyfile other.key.pem does not match the certificate"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_bad_certificate_or_key_names_the_file(
    pem_files: Path, flags: list[str], line: str
) -> None:
    assert_one_line(run_cli(flags, pem_files), 1, line)


def test_keyfile_without_certfile_is_refused(pem_files: Path) -> None:
    # Not silently served as plain ws://.
    result = run_cli(["--keyfile", "key.pem"], pem_files)
    assert_one_line(result, 2, "--keyfile needs --certfile: the certificate to serve TLS with")


# Usage errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--open-timeout", "soon"],
         "--open-timeout must be a positive number of seconds or none, got 'soon'"),
        (["--backend", "curio"],
         "argument --backend: invalid choice: 'curio' (choose from 'trio', 'asyncio')"),
        (["--log-level", "trace"],
         "argument --log-level: invalid choice: 'trace'"
         " (choose from 'critical', 'error', 'warning', 'info', 'debug')"),
        (["--port", "http"], "argument --port: invalid int value: 'http'"),
        (["--uds", "a.sock", "--fd", "3"],
         "argument --fd: not allowed with argument --uds/--unix-socket"),
        (["--uds", "a.sock", "--port", "9000"], "--port does not apply with --uds"),
        (["--fd", "3", "--host", "::"], "--host does not apply with --fd"),
        (["--uds", "a.sock", "--reuse-port"], "--reuse-port does not apply with --uds"),
        (["--header", "X-Nothing"], "argument --header: expected NAME:VALUE, got 'X-Nothing'"),
        (["--workers", "0"], "argument --workers: expected a positive integer, got '0'"),
        # Refused by wsserver.workers, before any process starts.
        (["--workers", "2", "--reuse-port", "--port", "0"],
         "reuse_port with several workers needs a fixed port, not 0"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["justaname"], "the handler must be given as module:function, not 'justaname'"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_usage_error_is_one_line_and_status_2(
    tmp_path: Path, flags: list[str], line: str
) -> None:
    assert_one_line(run_cli(flags, tmp_path), 2, line)


# The handler ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "spec", "line"),
    [
        (None, "nosuchmodule:handler",
         "cannot import nosuchmodule: No module named 'nosuchmodule'"),
        ("x = 1\n", "myapp:handler", "myapp has no handler"),
        ("handler = 1\n", "myapp:handler", "myapp:handler is not callable"),
    ],
    ids=["missing module", "missing attribute", "not callable"],
)
def test_a_handler_that_cannot_be_loaded_is_one_line_and_status_1(
    tmp_path: Path, source: str | None, spec: str, line: str
) -> None:
    if source is not None:
        (tmp_path / "myapp.py").write_text(source)
    assert_one_line(run_cli([spec], tmp_path), 1, line)
