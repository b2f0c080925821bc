"""Pings and pongs (RFC 6455, sections 5.5.2 and 5.5.3)."""

from __future__ import annotations

import os
import struct

import anyio
import pytest

from .rawclient import BINARY, CONT, PING, PONG, TEXT, RawClient, frame_bytes

pytestmark = pytest.mark.anyio

CASE_SECONDS = 10


@pytest.mark.parametrize("size", [0, 1, 2, 4, 16, 63, 64, 100, 124, 125])
async def test_ping_is_answered_with_identical_pong(port: int, size: int) -> None:
    payload = os.urandom(size)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(PING, payload)
            await client.expect_frame(PONG, payload)
            await client.finish()


async def test_pings_of_every_size_from_0_to_125_are_answered(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            for size in range(126):
                payload = bytes((size + index) % 256 for index in range(size))
                await client.send_frame(PING, payload)
                await client.expect_frame(PONG, payload)
            await client.finish()


async def test_ping_with_every_byte_value_is_answered_verbatim(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            for start in range(0, 256, 125):
                payload = bytes(range(start, min(start + 125, 256)))
                await client.send_frame(PING, payload)
                await client.expect_frame(PONG, payload)
            await client.finish()


async def test_ping_written_one_byte_at_a_time_is_answered(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(PING, b"slowly", chunk_size=1)
            await client.expect_frame(PONG, b"slowly")
            await client.finish()


@pytest.mark.parametrize("opcode", [PING, PONG], ids=["ping", "pong"])
@pytest.mark.parametrize("size", [126, 127, 1000, 65536])
async def test_control_frame_over_125_bytes_closes_with_1002(
    port: int, opcode: int, size: int
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, b"p" * size)
            await client.expect_close(1002)


async def test_ping_length_126_header_alone_closes_with_1002(port: int) -> None:
    # The length field is enough to fail: the payload never needs to arrive.
    head = bytes([0x80 | PING, 0x80 | 126]) + struct.pack("!H", 126) + os.urandom(4)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(head)
            await client.expect_close(1002)


@pytest.mark.parametrize("size", [0, 10, 125])
async def test_unsolicited_pong_is_ignored(port: int, size: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(PONG, b"u" * size)
            await client.send_frame(TEXT, b"after the pong")
            await client.expect_frame(TEXT, b"after the pong")
            await client.finish()


async def test_ten_pings_in_one_write_are_answered_in_order(port: int) -> None:
    payloads = [f"ping number {index}".encode() for index in range(10)]
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(b"".join(frame_bytes(PING, payload) for payload in payloads))
            for payload in payloads:
                await client.expect_frame(PONG, payload)
            await client.finish()


async def test_ten_pings_in_separate_writes_are_answered_in_order(port: int) -> None:
    payloads = [os.urandom(index * 12) for index in range(10)]
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            for payload in payloads:
                await client.send_frame(PING, payload)
            for payload in payloads:
                await client.expect_frame(PONG, payload)
            await client.finish()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
async def test_ping_in_the_middle_of_a_fragmented_message(port: int, opcode: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, b"first half, ", fin=False)
            await client.send_frame(PING, b"in between")
            # The pong comes before the message is complete.
            await client.expect_frame(PONG, b"in between")
            await client.send_frame(CONT, b"second half", fin=True)
            await client.expect_frame(opcode, b"first half, second half")
            await client.finish()


async def test_pings_and_pongs_between_every_fragment(port: int) -> None:
    parts = [b"a", b"bc", b"def", b"ghij"]
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            frames = []
            for index, part in enumerate(parts):
                opcode = TEXT if index == 0 else CONT
                frames.append(frame_bytes(opcode, part, fin=index == len(parts) - 1))
                if index < len(parts) - 1:
                    frames.append(frame_bytes(PING, str(index).encode()))
                    frames.append(frame_bytes(PONG, b"unsolicited"))
            await client.send_raw(b"".join(frames))
            for index in range(len(parts) - 1):
                await client.expect_frame(PONG, str(index).encode())
            await client.expect_frame(TEXT, b"".join(parts))
            await client.finish()


async def test_ping_after_close_is_not_answered(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_close(1000)
            await client.send_frame(PING, b"too late")
            await client.expect_close(1000)
