"""Reserved bits (RFC 6455, section 5.2): without a negotiated extension, any set bit
fails the connection with 1002, and the offending frame is never echoed."""

from __future__ import annotations

import anyio
import pytest

from .rawclient import BINARY, CLOSE, CONT, PING, PONG, TEXT, RawClient, close_payload

pytestmark = pytest.mark.anyio

CASE_SECONDS = 10

# Every non-empty combination of (RSV1, RSV2, RSV3).
RSV_COMBINATIONS = [
    pytest.param(
        (value & 4 != 0, value & 2 != 0, value & 1 != 0),
        id="rsv" + "".join(str(bit) for bit, mask in ((1, 4), (2, 2), (3, 1)) if value & mask),
    )
    for value in range(1, 8)
]

FRAMES = [
    pytest.param(TEXT, b"reserved text", id="text"),
    pytest.param(BINARY, b"\x00reserved\xff", id="binary"),
    pytest.param(PING, b"reserved ping", id="ping"),
    pytest.param(PONG, b"reserved pong", id="pong"),
    pytest.param(CLOSE, close_payload(1000), id="close"),
]


@pytest.mark.parametrize("rsv", RSV_COMBINATIONS)
@pytest.mark.parametrize(("opcode", "payload"), FRAMES)
async def test_reserved_bits_close_with_1002_and_nothing_is_echoed(
    port: int, opcode: int, payload: bytes, rsv: tuple[bool, bool, bool]
) -> None:
    rsv1, rsv2, rsv3 = rsv
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, payload, rsv1=rsv1, rsv2=rsv2, rsv3=rsv3)
            await client.expect_close(1002)


@pytest.mark.parametrize("rsv", RSV_COMBINATIONS)
async def test_reserved_bits_on_continuation_close_with_1002(
    port: int, rsv: tuple[bool, bool, bool]
) -> None:
    rsv1, rsv2, rsv3 = rsv
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, b"start ", fin=False)
            await client.send_frame(CONT, b"end", rsv1=rsv1, rsv2=rsv2, rsv3=rsv3)
            await client.expect_close(1002)


@pytest.mark.parametrize("rsv", RSV_COMBINATIONS)
async def test_reserved_bits_after_a_valid_message_which_is_echoed_first(
    port: int, rsv: tuple[bool, bool, bool]
) -> None:
    rsv1, rsv2, rsv3 = rsv
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, b"valid")
            await client.expect_frame(TEXT, b"valid")
            await client.send_frame(TEXT, b"invalid", rsv1=rsv1, rsv2=rsv2, rsv3=rsv3)
            await client.send_frame(PING, b"never answered")
            await client.expect_close(1002)
