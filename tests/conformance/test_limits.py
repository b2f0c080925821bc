"""Message size limit: ``max_size`` bytes pass, one more fails with 1009, whether the
message comes in one frame or in fragments."""

from __future__ import annotations

import os
import struct

import anyio
import pytest

from .rawclient import BINARY, CONT, PING, PONG, TEXT, RawClient, frame_bytes

pytestmark = pytest.mark.anyio

MAX_SIZE = 4096
SERVER_OPTIONS = {"max_size": MAX_SIZE}
CASE_SECONDS = 10

KINDS = pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])


def payload_for(opcode: int, size: int) -> bytes:
    return b"t" * size if opcode == TEXT else os.urandom(size)


def fragments(opcode: int, payload: bytes, sizes: list[int], *, last_fin: bool = True) -> bytes:
    assert sum(sizes) == len(payload)
    out, start = [], 0
    for index, size in enumerate(sizes):
        is_last = index == len(sizes) - 1
        out.append(frame_bytes(opcode if index == 0 else CONT, payload[start : start + size],
                               fin=is_last and last_fin))
        start += size
    return b"".join(out)


@KINDS
async def test_message_of_exactly_max_size_in_one_frame_is_echoed(port: int, opcode: int) -> None:
    payload = payload_for(opcode, MAX_SIZE)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, payload)
            await client.expect_frame(opcode, payload)
            await client.finish()


EXACT_SPLITS = [
    pytest.param([MAX_SIZE - 1, 1], id="max-1+1"),
    pytest.param([1, MAX_SIZE - 1], id="1+max-1"),
    pytest.param([MAX_SIZE, 0], id="max+empty"),
    pytest.param([MAX_SIZE // 4] * 4, id="quarters"),
    pytest.param([256] * (MAX_SIZE // 256), id="16x256"),
]


@KINDS
@pytest.mark.parametrize("sizes", EXACT_SPLITS)
async def test_message_of_exactly_max_size_in_fragments_is_echoed(
    port: int, opcode: int, sizes: list[int]
) -> None:
    payload = payload_for(opcode, MAX_SIZE)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(fragments(opcode, payload, sizes))
            await client.expect_frame(opcode, payload)
            await client.finish()


@KINDS
async def test_message_one_byte_over_max_size_closes_with_1009(port: int, opcode: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, payload_for(opcode, MAX_SIZE + 1))
            await client.expect_close(1009)


OVER_SPLITS = [
    pytest.param([MAX_SIZE, 1], id="max+1"),
    pytest.param([1, MAX_SIZE], id="1+max"),
    pytest.param([MAX_SIZE // 2, MAX_SIZE // 2, 1], id="half+half+1"),
    pytest.param([17] * 241, id="241x17"),
]


@KINDS
@pytest.mark.parametrize("sizes", OVER_SPLITS)
async def test_fragments_one_byte_over_max_size_close_with_1009(
    port: int, opcode: int, sizes: list[int]
) -> None:
    payload = payload_for(opcode, MAX_SIZE + 1)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(fragments(opcode, payload, sizes))
            await client.expect_close(1009)


@KINDS
async def test_limit_is_enforced_before_the_message_ends(port: int, opcode: int) -> None:
    # The fragment that crosses the limit is refused; no final fragment is needed.
    payload = payload_for(opcode, MAX_SIZE + 1)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(fragments(opcode, payload, [MAX_SIZE, 1], last_fin=False))
            await client.expect_close(1009)


@pytest.mark.parametrize("length", [MAX_SIZE + 1, 65536, 2**40], ids=["max+1", "64KiB", "1TiB"])
async def test_oversized_frame_is_refused_from_its_header(port: int, length: int) -> None:
    # Only the header is sent: the server must not wait for (or buffer) the payload.
    if length < 65536:
        length_field = bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        length_field = bytes([0x80 | 127]) + struct.pack("!Q", length)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(bytes([0x80 | BINARY]) + length_field + os.urandom(4))
            await client.expect_close(1009)


async def test_limit_applies_per_message(port: int) -> None:
    payload = payload_for(BINARY, MAX_SIZE)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            for _ in range(3):
                await client.send_raw(fragments(BINARY, payload, [MAX_SIZE // 2] * 2))
            for _ in range(3):
                await client.expect_frame(BINARY, payload)
            await client.finish()


async def test_control_frames_do_not_count_towards_the_limit(port: int) -> None:
    payload = payload_for(TEXT, MAX_SIZE)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(
                frame_bytes(TEXT, payload[: MAX_SIZE // 2], fin=False)
                + frame_bytes(PING, b"p" * 125)
                + frame_bytes(CONT, payload[MAX_SIZE // 2 :], fin=False)
                + frame_bytes(PING, b"q" * 125)
                + frame_bytes(PONG, b"r" * 125)
                + frame_bytes(CONT, b"", fin=True)
            )
            await client.expect_frame(PONG, b"p" * 125)
            await client.expect_frame(PONG, b"q" * 125)
            await client.expect_frame(TEXT, payload)
            await client.finish()
