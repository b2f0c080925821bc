"""Opcodes (RFC 6455, section 5.2): 0x3-0x7 and 0xB-0xF are reserved and fail
the connection with 1002; earlier valid messages are still answered."""

from __future__ import annotations

import anyio
import pytest

from .rawclient import BINARY, PING, TEXT, RawClient

pytestmark = pytest.mark.anyio

CASE_SECONDS = 10

RESERVED_OPCODES = [
    pytest.param(opcode, id=f"opcode-{opcode:#x}")
    for opcode in [*range(0x3, 0x8), *range(0xB, 0x10)]
]


@pytest.mark.parametrize("opcode", RESERVED_OPCODES)
@pytest.mark.parametrize("payload", [b"", b"payload"], ids=["empty", "payload"])
async def test_reserved_opcode_closes_with_1002(port: int, opcode: int, payload: bytes) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, payload)
            await client.expect_close(1002)


@pytest.mark.parametrize("opcode", RESERVED_OPCODES)
async def test_reserved_opcode_without_fin_closes_with_1002(port: int, opcode: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, b"first fragment?", fin=False)
            await client.expect_close(1002)


@pytest.mark.parametrize("opcode", RESERVED_OPCODES)
async def test_reserved_opcode_after_a_valid_message_which_is_echoed_first(
    port: int, opcode: int
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, b"valid message")
            await client.expect_frame(TEXT, b"valid message")
            await client.send_frame(opcode, b"bad")
            await client.send_frame(PING, b"never answered")
            await client.send_frame(BINARY, b"never echoed")
            await client.expect_close(1002)
