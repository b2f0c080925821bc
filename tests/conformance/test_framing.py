"""Framing (RFC 6455, section 5.2): every payload length encoding, masking, splits."""

from __future__ import annotations

import os
import struct

import anyio
import pytest

from .rawclient import BINARY, CLOSE, PING, TEXT, RawClient, close_payload, frame_bytes

pytestmark = pytest.mark.anyio

SERVER_OPTIONS = {"max_size": 2**24}
CASE_SECONDS = 10
BIG_CASE_SECONDS = 60

KINDS = pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])


def payload_for(opcode: int, size: int) -> bytes:
    """ASCII for text (valid UTF-8 of any length), random bytes for binary."""
    if opcode == TEXT:
        pattern = b"The quick brown fox jumps over the lazy dog. 0123456789\n"
        return (pattern * (size // len(pattern) + 1))[:size]
    return os.urandom(size)


# Every length encoding: 7-bit (0..125), 16-bit (126..65535), 64-bit (65536..).
LENGTHS = [0, 1, 2, 124, 125, 126, 127, 65535, 65536, 65537, 2**20]


@KINDS
@pytest.mark.parametrize("size", LENGTHS)
async def test_message_of_every_length_encoding_is_echoed(
    port: int, opcode: int, size: int
) -> None:
    payload = payload_for(opcode, size)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, payload)
            await client.expect_frame(opcode, payload)
            await client.finish()


@KINDS
async def test_sixteen_mebibyte_message_is_echoed(port: int, opcode: int) -> None:
    payload = payload_for(opcode, 2**24)
    with anyio.fail_after(BIG_CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, payload)
            await client.expect_frame(opcode, payload, timeout=BIG_CASE_SECONDS)
            await client.finish()


@KINDS
@pytest.mark.parametrize("size", [0, 7, 125, 126, 300])
async def test_frame_written_one_byte_at_a_time_is_echoed(
    port: int, opcode: int, size: int
) -> None:
    payload = payload_for(opcode, size)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, payload, chunk_size=1)
            await client.expect_frame(opcode, payload)
            await client.finish()


async def test_frame_head_and_payload_in_separate_writes_is_echoed(port: int) -> None:
    data = frame_bytes(BINARY, b"x" * 1000)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(data[:8])  # head, 16-bit length and mask
            await anyio.sleep(0.05)
            await client.send_raw(data[8:])
            await client.expect_frame(BINARY, b"x" * 1000)
            await client.finish()


@pytest.mark.parametrize(
    "mask",
    [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04", b"\x80\x00\x00\x7f"],
    ids=["zero", "ones", "counting", "edges"],
)
async def test_any_mask_key_is_applied(port: int, mask: bytes) -> None:
    payload = "masked \u00e9\u20ac text of odd length".encode()
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, payload, mask=mask)
            await client.expect_frame(TEXT, payload)
            await client.finish()


@pytest.mark.parametrize("count", [2, 5, 20])
async def test_messages_in_one_write_are_echoed_in_order(port: int, count: int) -> None:
    messages = [
        (TEXT if index % 2 else BINARY, f"message {index}".encode() * (index + 1))
        for index in range(count)
    ]
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(b"".join(frame_bytes(op, data) for op, data in messages))
            for opcode, data in messages:
                await client.expect_frame(opcode, data)
            await client.finish()


# Malformed frames -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [(TEXT, b"hello"), (BINARY, b"\x00\x01"), (PING, b"ping"), (CLOSE, close_payload(1000))],
    ids=["text", "binary", "ping", "close"],
)
async def test_unmasked_frame_closes_with_1002(port: int, opcode: int, payload: bytes) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(frame_bytes(opcode, payload, masked=False))
            await client.expect_close(1002)


def _with_length_field(opcode: int, length_field: bytes, payload: bytes) -> bytes:
    """A masked frame whose length is written as given, minimal or not."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x80 | opcode]) + length_field + mask + masked


@pytest.mark.parametrize(
    ("length_field", "size"),
    [
        (b"\xfe" + struct.pack("!H", 0), 0),
        (b"\xfe" + struct.pack("!H", 5), 5),
        (b"\xfe" + struct.pack("!H", 125), 125),
        (b"\xff" + struct.pack("!Q", 0), 0),
        (b"\xff" + struct.pack("!Q", 125), 125),
        (b"\xff" + struct.pack("!Q", 65535), 65535),
    ],
    ids=["16bit-0", "16bit-5", "16bit-125", "64bit-0", "64bit-125", "64bit-65535"],
)
async def test_length_not_minimally_encoded_closes_with_1002(
    port: int, length_field: bytes, size: int
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(_with_length_field(BINARY, length_field, b"a" * size))
            await client.expect_close(1002)


async def test_64_bit_length_with_top_bit_set_closes_with_1002(port: int) -> None:
    head = bytes([0x80 | BINARY, 0x80 | 127]) + struct.pack("!Q", 2**63 + 10) + os.urandom(4)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(head + b"x" * 10)
            await client.expect_close(1002)
