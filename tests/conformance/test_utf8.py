"""UTF-8 in text messages (RFC 6455, section 8.1; UTF-8 itself per RFC 3629).

The tables are built from the definition of UTF-8 rather than copied: a code
point is written with the generic n-byte pattern (a lead byte with n high bits
set, then n - 1 bytes 10xxxxxx), which yields valid encodings when n is the
shortest length, and every kind of invalid one otherwise: overlong forms,
surrogates (U+D800..U+DFFF), code points above U+10FFFF and the old 5- and
6-byte forms. Truncations and stray continuation bytes complete the table.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from .rawclient import CONT, TEXT, RawClient, frame_bytes

pytestmark = pytest.mark.anyio

CASE_SECONDS = 10
FAIL_FAST_SECONDS = 2

_LEAD_BITS = {2: 0xC0, 3: 0xE0, 4: 0xF0, 5: 0xF8, 6: 0xFC}


def encode_in(code_point: int, length: int) -> bytes:
    """Write ``code_point`` with the generic ``length``-byte UTF-8 bit pattern."""
    if length == 1:
        assert code_point < 0x80
        return bytes([code_point])
    trail = []
    for _ in range(length - 1):
        trail.append(0x80 | (code_point & 0x3F))
        code_point >>= 6
    assert code_point < 1 << (7 - length), "code point too large for this length"
    return bytes([_LEAD_BITS[length] | code_point, *reversed(trail)])


def shortest_length(code_point: int) -> int:
    """How many bytes UTF-8 uses for ``code_point``."""
    for length, limit in ((1, 0x80), (2, 0x800), (3, 0x10000), (4, 0x110000)):
        if code_point < limit:
            return length
    raise ValueError("not a Unicode code point")


def encode(code_point: int) -> bytes:
    """The UTF-8 encoding of a scalar value."""
    return encode_in(code_point, shortest_length(code_point))


# Valid ------------------------------------------------------------------------------

# Boundaries of each length, both sides of the surrogate gap, noncharacters
# (which are valid UTF-8) and the last code point.
VALID_CODE_POINTS = [
    0x00, 0x7F, 0x80, 0x7FF, 0x800, 0xFFF, 0x1000, 0xCFFF, 0xD000, 0xD7FF,
    0xE000, 0xFDD0, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x1F600, 0x3FFFF, 0x40000,
    0xFFFFF, 0x100000, 0x10FFFF,
]

VALID = [
    *(pytest.param(encode(cp), id=f"U+{cp:04X}") for cp in VALID_CODE_POINTS),
    pytest.param(b"", id="empty"),
    pytest.param(b"".join(encode(cp) for cp in (0x3BA, 0x1F79, 0x3C3, 0x3BC, 0x3B5)),
                 id="greek-kosme"),
    pytest.param(b"".join(encode(cp) for cp in VALID_CODE_POINTS), id="all-boundaries"),
    pytest.param(b"ascii " + encode(0xE9) + encode(0x20AC) + encode(0x1D11E) + b" end",
                 id="mixed-lengths"),
]


def test_valid_table_agrees_with_python() -> None:
    # A check on the table itself: the generic pattern gives Python's encoding.
    for code_point in VALID_CODE_POINTS:
        assert encode(code_point) == chr(code_point).encode("utf-8")


@pytest.mark.parametrize("payload", VALID)
async def test_valid_utf8_is_echoed_exactly(port: int, payload: bytes) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, payload)
            await client.expect_frame(TEXT, payload)
            await client.finish()


@pytest.mark.parametrize("payload", VALID)
async def test_valid_utf8_in_one_byte_fragments_is_echoed_exactly(
    port: int, payload: bytes
) -> None:
    parts = [payload[index : index + 1] for index in range(len(payload))] or [b""]
    frames = b"".join(
        frame_bytes(TEXT if index == 0 else CONT, part, fin=index == len(parts) - 1)
        for index, part in enumerate(parts)
    )
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(frames)
            await client.expect_frame(TEXT, payload)
            await client.finish()


SPLIT_MESSAGE = b"a" + encode(0xE9) + encode(0x20AC) + encode(0x10348) + encode(0x7FF) + b"z"


@pytest.mark.parametrize("split", range(1, len(SPLIT_MESSAGE)))
async def test_valid_message_split_at_every_byte_across_two_fragments(
    port: int, split: int
) -> None:
    first, second = SPLIT_MESSAGE[:split], SPLIT_MESSAGE[split:]
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, first, fin=False)
            await client.send_frame(CONT, second, fin=True)
            await client.expect_frame(TEXT, SPLIT_MESSAGE)
            await client.finish()


# Invalid ------------------------------------------------------------------------------


def _invalid_table() -> list[Any]:
    cases: list[tuple[str, bytes]] = []
    # Overlong forms: a code point written with more bytes than it needs.
    for code_point in (0x00, 0x2F, 0x7F, 0x80, 0x7FF, 0x800, 0xFFFF):
        for length in range(shortest_length(code_point) + 1, 5):
            name = f"overlong-U+{code_point:04X}-in-{length}"
            cases.append((name, encode_in(code_point, length)))
    cases.append(("overlong-U+002F-in-5", encode_in(0x2F, 5)))
    cases.append(("overlong-U+002F-in-6", encode_in(0x2F, 6)))
    # Surrogates, alone and as a CESU-8 style pair.
    for code_point in (0xD800, 0xDB7F, 0xDBFF, 0xDC00, 0xDFFF):
        cases.append((f"surrogate-U+{code_point:04X}", encode_in(code_point, 3)))
    cases.append(("surrogate-pair", encode_in(0xD83D, 3) + encode_in(0xDE00, 3)))
    # Beyond U+10FFFF, in 4 bytes and in the old 5- and 6-byte forms.
    for code_point, length in ((0x110000, 4), (0x13FFFF, 4), (0x1FFFFF, 4),
                               (0x200000, 5), (0x3FFFFFF, 5), (0x4000000, 6),
                               (0x7FFFFFFF, 6)):
        cases.append((f"beyond-U+{code_point:X}", encode_in(code_point, length)))
    # Truncated sequences, at the end of the message or followed by ASCII.
    for code_point in (0x80, 0x800, 0xFFFD, 0x10000, 0x10FFFF):
        full = encode(code_point)
        for cut in range(1, len(full)):
            cases.append((f"truncated-U+{code_point:04X}-{cut}-of-{len(full)}-at-end",
                          b"text " + full[:cut]))
        cases.append((f"truncated-U+{code_point:04X}-before-ascii", full[:-1] + b"A"))
    # Continuation bytes with no lead byte.
    for byte in (0x80, 0x9F, 0xA0, 0xBF):
        cases.append((f"lone-continuation-{byte:02X}", bytes([byte])))
    cases.append(("continuation-after-complete-char", encode(0xE9) + b"\x80"))
    cases.append(("continuations-only", bytes(range(0x80, 0xC0))))
    # Bytes that never appear in UTF-8.
    for byte in (0xC0, 0xC1, 0xF5, 0xF8, 0xFC, 0xFE, 0xFF):
        cases.append((f"never-valid-byte-{byte:02X}", b"x" + bytes([byte]) + b"x"))
    return [pytest.param(payload, id=name) for name, payload in cases]


INVALID = _invalid_table()


def test_invalid_table_is_invalid_for_python_too() -> None:
    for case in INVALID:
        with pytest.raises(UnicodeDecodeError):
            case.values[0].decode("utf-8")


@pytest.mark.parametrize("payload", INVALID)
async def test_invalid_utf8_closes_with_1007(port: int, payload: bytes) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, b"valid " + encode(0x20AC))
            await client.expect_frame(TEXT, b"valid " + encode(0x20AC))
            await client.send_frame(TEXT, payload)
            await client.expect_close(1007)


@pytest.mark.parametrize("payload", INVALID)
async def test_invalid_utf8_in_one_byte_fragments_closes_with_1007(
    port: int, payload: bytes
) -> None:
    frames = b"".join(
        frame_bytes(TEXT if index == 0 else CONT, payload[index : index + 1],
                    fin=index == len(payload) - 1)
        for index in range(len(payload))
    )
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(frames)
            await client.expect_close(1007)


# Fail fast: the first fragment alone proves the message invalid, so the server
# must not wait for the rest. The remaining fragments are never sent.
FAIL_FAST_PREFIXES = [
    pytest.param(b"hello " + encode_in(0x2F, 2), id="overlong"),
    pytest.param(b"hello " + encode_in(0xD800, 3), id="surrogate"),
    pytest.param(b"hello " + encode_in(0x110000, 4), id="beyond-max"),
    pytest.param(b"hello \x80", id="lone-continuation"),
    pytest.param(b"hello \xfe", id="byte-FE"),
    pytest.param(b"hello " + encode(0xE9)[:1] + b"A", id="truncated-before-ascii"),
    # Partial sequences at the end of the fragment that no byte could complete.
    pytest.param(b"hello \xc0", id="partial-C0"),
    pytest.param(b"hello \xe0\x80", id="partial-overlong-E0-80"),
    pytest.param(b"hello \xed\xa0", id="partial-surrogate-ED-A0"),
    pytest.param(b"hello \xf0\x8f", id="partial-overlong-F0-8F"),
    pytest.param(b"hello \xf4\x90", id="partial-beyond-F4-90"),
    pytest.param(b"hello \xf5", id="partial-F5"),
]


@pytest.mark.parametrize("first_fragment", FAIL_FAST_PREFIXES)
async def test_invalid_utf8_in_first_fragment_fails_fast(
    port: int, first_fragment: bytes
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, first_fragment, fin=False)
            await client.expect_close(1007, timeout=FAIL_FAST_SECONDS)


async def test_invalid_utf8_in_a_later_fragment_fails_before_the_message_ends(
    port: int,
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, "κόσμε ".encode(), fin=False)
            await client.expect_silence(0.05)
            await client.send_frame(CONT, encode_in(0x110000, 4), fin=False)
            await client.expect_close(1007, timeout=FAIL_FAST_SECONDS)


# Fail fast inside one frame (Autobahn 6.4.3 and 6.4.4): a long text frame whose
# payload is sent in pieces, the bytes after the bad one never. The server must
# fail it on the bytes it has, without waiting for the frame to end.
FRAME_PREFIX = "κόσμε".encode()


@pytest.mark.parametrize(
    "bad_piece",
    [
        pytest.param(encode_in(0x110000, 4), id="whole-bad-sequence"),  # 6.4.3
        pytest.param(encode_in(0x110000, 4)[:2], id="up-to-the-bad-byte"),  # 6.4.4
        pytest.param(encode_in(0xD800, 3)[:2], id="surrogate-start"),
    ],
)
async def test_invalid_utf8_inside_a_frame_still_arriving_fails_fast(
    port: int, bad_piece: bytes
) -> None:
    payload = FRAME_PREFIX + bad_piece + b"x" * 65536
    frame = frame_bytes(TEXT, payload)
    good_end = len(frame) - len(payload) + len(FRAME_PREFIX)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_raw(frame[:good_end])
            await client.expect_silence(0.05)
            await client.send_raw(frame[good_end : good_end + len(bad_piece)])
            await client.expect_close(1007, timeout=FAIL_FAST_SECONDS)


async def test_valid_prefix_of_a_long_message_is_not_refused_early(port: int) -> None:
    # A sequence cut between fragments is not an error until the message ends.
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port) as client:
            await client.send_frame(TEXT, b"hello " + encode(0x10348)[:3], fin=False)
            await client.expect_silence(0.1)
            await client.send_frame(CONT, encode(0x10348)[3:], fin=True)
            await client.expect_frame(TEXT, b"hello " + encode(0x10348))
            await client.finish()
