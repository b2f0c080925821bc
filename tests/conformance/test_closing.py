"""The closing handshake (RFC 6455, sections 5.5.1, 7 and 7.4): close codes and
reasons, what happens to frames after a close, and who closes TCP."""

from __future__ import annotations

import anyio
import pytest

from .rawclient import BINARY, CLOSE, PING, PONG, TEXT, RawClient, close_payload, frame_bytes

pytestmark = pytest.mark.anyio

CASE_SECONDS = 10

# Codes an endpoint may send (section 7.4.1 and the IANA registry) and the
# application ranges 3000-3999 (registered) and 4000-4999 (private).
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
               3000, 3999, 4000, 4999]
# Reserved, reserved for reporting only (1005, 1006, 1015), unassigned, or out of range.
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
async def test_valid_close_code_is_echoed(port: int, code: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_close(code)
            await client.expect_close(code)


@pytest.mark.parametrize("code", [1000, 1001, 1011, 3000, 4999])
async def test_valid_close_code_with_a_reason_is_echoed(port: int, code: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_close(code, "done for today, \u00e0 bient\u00f4t".encode())
            await client.expect_close(code)


@pytest.mark.parametrize("code", INVALID_CODES)
async def test_invalid_close_code_closes_with_1002(port: int, code: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_close(code)
            await client.expect_close(1002)


@pytest.mark.parametrize("payload", [b"\x03", b"\xe8"], ids=["03", "E8"])
async def test_one_byte_close_payload_closes_with_1002(port: int, payload: bytes) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(CLOSE, payload)
            await client.expect_close(1002)


@pytest.mark.parametrize(
    "reason",
    [b"r" * 123, ("\u00e9" * 61).encode() + b"!", ("\u20ac" * 41).encode()],
    ids=["ascii", "two-byte-chars", "three-byte-chars"],
)
async def test_close_reason_of_123_bytes_is_accepted(port: int, reason: bytes) -> None:
    assert len(reason) == 123
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_close(1000, reason)
            await client.expect_close(1000)


async def test_close_reason_of_124_bytes_closes_with_1002(port: int) -> None:
    # 2 + 124 = 126 bytes: over the 125-byte limit of control frames.
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_close(1000, b"r" * 124)
            await client.expect_close(1002)


@pytest.mark.parametrize(
    "reason",
    [b"\xff", b"bad \xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"cut \xe2\x82"],
    ids=["byte-FF", "overlong", "surrogate", "beyond-max", "truncated"],
)
async def test_invalid_utf8_close_reason_closes_with_1007(port: int, reason: bytes) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_close(1000, reason)
            await client.expect_close(1007)


async def test_empty_close_is_echoed_empty(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(CLOSE, b"")
            frame = await client.expect_close(None)
            assert frame.payload == b""


FRAMES_AFTER_CLOSE = [
    pytest.param(frame_bytes(TEXT, b"late text"), id="text"),
    pytest.param(frame_bytes(BINARY, b"late binary"), id="binary"),
    pytest.param(frame_bytes(PING, b"late ping"), id="ping"),
    pytest.param(frame_bytes(PONG, b"late pong"), id="pong"),
    pytest.param(frame_bytes(CLOSE, close_payload(1001)), id="second-close"),
    pytest.param(frame_bytes(0x5, b"reserved"), id="reserved-opcode"),
    pytest.param(frame_bytes(TEXT, b"\xff\xfe"), id="invalid-utf8"),
    pytest.param(b"\x00\x01garbage that is no frame", id="garbage"),
]


@pytest.mark.parametrize("after", FRAMES_AFTER_CLOSE)
async def test_frames_after_close_are_ignored(port: int, after: bytes) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            # One write: the server sees the close and what follows together.
            await client.send_raw(frame_bytes(CLOSE, close_payload(1000)) + after)
            await client.expect_close(1000)


async def test_server_closes_tcp_after_echoing_close(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_close(1000)
            # The client keeps its side open: the server still closes first
            # (section 7.1.1), it does not wait for the client's TCP close.
            await client.expect_frame(CLOSE, close_payload(1000))
            await client.expect_eof(timeout=2)


async def test_messages_before_close_are_echoed_then_close(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, b"one")
            await client.send_frame(BINARY, b"two")
            await client.expect_frame(TEXT, b"one")
            await client.expect_frame(BINARY, b"two")
            await client.send_close(1000)
            await client.expect_close(1000)


async def test_close_written_one_byte_at_a_time_is_echoed(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(CLOSE, close_payload(3001, b"slow"), chunk_size=1)
            await client.expect_close(3001)
