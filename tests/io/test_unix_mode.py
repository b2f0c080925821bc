"""The permissions of a Unix socket file: ``unix_serve(mode=...)`` and ``--uds-mode``."""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

import wsserver

from ..cli.runner import run_cli, running_cli
from .clients import RawClient


async def echo(websocket: Any) -> None:
    async for message in websocket:
        await websocket.send(message)


def permissions(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666])
async def test_unix_serve_gives_the_socket_file_its_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "app.sock"
    with anyio.fail_after(5):
        async with anyio.create_task_group() as task_group:
            server = await task_group.start(
                functools.partial(wsserver.unix_serve, echo, str(path), mode=mode)
            )
            assert permissions(path) == mode
            # And it serves: a client connects through the file.
            stream = await anyio.connect_unix(str(path))
            client = RawClient(stream)
            await client.handshake()
            await client.aclose()
            server.close()


@pytest.mark.anyio
async def test_unix_serve_without_mode_leaves_the_umask_s_permissions(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    umask = os.umask(0o022)
    os.umask(umask)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as task_group:
            server = await task_group.start(
                functools.partial(wsserver.unix_serve, echo, str(path))
            )
            assert permissions(path) == 0o777 & ~umask
            server.close()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", [-1, 0o1000, "660"])
async def test_an_invalid_mode_is_refused_before_binding(tmp_path: Path, mode: Any) -> None:
    path = tmp_path / "app.sock"
    with pytest.raises((ValueError, TypeError), match=r"^mode must be permission bits"):
        await wsserver.unix_serve(echo, str(path), mode=mode)
    assert not path.exists()


def test_cli_uds_mode_sets_the_socket_file_s_permissions(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    with running_cli(["--uds", str(path), "--uds-mode", "640"], tmp_path) as running:
        assert permissions(path) == 0o640
        status, _ = running.stop()
    assert status == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--uds-mode", "660"], "wsserver: --uds-mode applies only with --uds\n"),
        (["--uds", "x.sock", "--uds-mode", "999"],
         "wsserver: --uds-mode must be permission bits in octal, such as 660, got '999'\n"),
        (["--uds", "x.sock", "--uds-mode", "7777"],
         "wsserver: --uds-mode must be permission bits from 0 to 777, got '7777'\n"),
    ],
)
def test_cli_bad_uds_mode_is_one_line_and_status_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli(args, tmp_path)
    assert (result.returncode, result.stderr) == (2, message)
