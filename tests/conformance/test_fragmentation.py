"""Fragmentation (RFC 6455, section 5.4): messages in several frames, control frames
in between, and every broken continuation sequence."""

from __future__ import annotations

import os

import anyio
import pytest

from .rawclient import BINARY, CLOSE, CONT, PING, PONG, TEXT, RawClient, close_payload, frame_bytes

pytestmark = pytest.mark.anyio

CASE_SECONDS = 10

KINDS = pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])


def fragments_of(opcode: int, parts: list[bytes]) -> bytes:
    """The frames of one message: ``opcode`` first, continuations after, FIN on the last."""
    last = len(parts) - 1
    return b"".join(
        frame_bytes(opcode if index == 0 else CONT, part, fin=index == last)
        for index, part in enumerate(parts)
    )


def split_evenly(data: bytes, count: int) -> list[bytes]:
    step = -(-len(data) // count)
    return [data[index * step : (index + 1) * step] for index in range(count)]


@KINDS
@pytest.mark.parametrize("count", [2, 3, 4, 5, 10, 50, 200])
async def test_message_in_n_fragments_is_echoed_whole(port: int, opcode: int, count: int) -> None:
    message = b"fragmented message " * 30
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(fragments_of(opcode, split_evenly(message, count)))
            await client.expect_frame(opcode, message)
            await client.finish()


@KINDS
async def test_fragments_in_separate_writes_with_pauses(port: int, opcode: int) -> None:
    parts = [b"one ", b"two ", b"three"]
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            for index, part in enumerate(parts):
                await client.send_frame(opcode if index == 0 else CONT, part,
                                        fin=index == len(parts) - 1)
                if index < len(parts) - 1:
                    await client.expect_silence(0.05)
            await client.expect_frame(opcode, b"one two three")
            await client.finish()


EMPTY_PATTERNS = [
    pytest.param([b"", b"tail"], id="empty-first"),
    pytest.param([b"head", b""], id="empty-last"),
    pytest.param([b"head", b"", b"", b"tail"], id="empty-middle"),
    pytest.param([b"", b"", b""], id="all-empty"),
    pytest.param([b"", b"x", b""], id="empty-around"),
]


@KINDS
@pytest.mark.parametrize("parts", EMPTY_PATTERNS)
async def test_empty_fragments_are_allowed(port: int, opcode: int, parts: list[bytes]) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(fragments_of(opcode, parts))
            await client.expect_frame(opcode, b"".join(parts))
            await client.finish()


@KINDS
async def test_control_frames_interleaved_with_fragments(port: int, opcode: int) -> None:
    parts = [os.urandom(10) if opcode == BINARY else b"part %d " % index for index in range(4)]
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            frames = []
            for index, part in enumerate(parts):
                frames.append(frame_bytes(opcode if index == 0 else CONT, part, fin=index == 3))
                if index < 3:
                    frames.append(frame_bytes(PING, b"ping %d" % index))
                    frames.append(frame_bytes(PONG, b"pong %d" % index))
            await client.send_raw(b"".join(frames))
            for index in range(3):
                await client.expect_frame(PONG, b"ping %d" % index)
            await client.expect_frame(opcode, b"".join(parts))
            await client.finish()


async def test_close_in_the_middle_of_a_fragmented_message_is_honoured(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, b"never ", fin=False)
            await client.send_frame(CLOSE, close_payload(1000))
            await client.send_frame(CONT, b"finished", fin=True)
            await client.expect_close(1000)


@KINDS
async def test_messages_before_and_after_a_fragmented_one(port: int, opcode: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(
                frame_bytes(TEXT, b"before")
                + fragments_of(opcode, [b"frag", b"mented"])
                + frame_bytes(BINARY, b"after")
            )
            await client.expect_frame(TEXT, b"before")
            await client.expect_frame(opcode, b"fragmented")
            await client.expect_frame(BINARY, b"after")
            await client.finish()


# Broken continuation sequences --------------------------------------------------------


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "no-fin"])
@pytest.mark.parametrize("after_message", [False, True], ids=["first-frame", "after-message"])
async def test_continuation_without_a_start_closes_with_1002(
    port: int, fin: bool, after_message: bool
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            if after_message:
                await client.send_frame(TEXT, b"complete")
                await client.expect_frame(TEXT, b"complete")
            await client.send_frame(CONT, b"orphan", fin=fin)
            await client.expect_close(1002)


async def test_continuation_after_a_finished_fragmented_message_closes_with_1002(
    port: int,
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(fragments_of(BINARY, [b"a", b"b"]))
            await client.expect_frame(BINARY, b"ab")
            await client.send_frame(CONT, b"c", fin=True)
            await client.expect_close(1002)


@pytest.mark.parametrize("first", [TEXT, BINARY], ids=["in-text", "in-binary"])
@pytest.mark.parametrize("second", [TEXT, BINARY], ids=["new-text", "new-binary"])
@pytest.mark.parametrize("fin", [True, False], ids=["fin", "no-fin"])
async def test_new_message_during_a_fragmented_one_closes_with_1002(
    port: int, first: int, second: int, fin: bool
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(first, b"started", fin=False)
            await client.send_frame(second, b"interloper", fin=fin)
            await client.expect_close(1002)


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [(PING, b"fragmented ping"), (PONG, b"fragmented pong"), (CLOSE, close_payload(1000))],
    ids=["ping", "pong", "close"],
)
async def test_fragmented_control_frame_closes_with_1002(
    port: int, opcode: int, payload: bytes
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(opcode, payload[:4], fin=False)
            await client.send_frame(CONT, payload[4:], fin=True)
            await client.expect_close(1002)


async def test_fragmented_ping_inside_a_fragmented_message_closes_with_1002(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, b"start", fin=False)
            await client.send_frame(PING, b"half a ping", fin=False)
            await client.expect_close(1002)
