"""permessage-deflate (RFC 7692): negotiation, and messages exchanged with a zlib peer.

Python's zlib plays the client: it compresses what the server decodes and
decompresses what the server encodes, following RFC 7692 section 7.2 by hand.
"""

from __future__ import annotations

import itertools
import os
import tracemalloc
import zlib
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsserver.sansio import ServerConnection
from wsserver.sansio.exceptions import NegotiationError, PayloadTooBig, ProtocolError
from wsserver.sansio.extensions import (
    ExtensionParameter,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
    enable_server_permessage_deflate,
)
from wsserver.sansio.frames import Frame, Opcode

from .helpers import client_frame, handshake_request, sent_frames

TAIL = b"\x00\x00\xff\xff"
MiB = 1024 * 1024


# A zlib peer acting as the client ---------------------------------------------


def client_compressor(window_bits: int = 15) -> zlib._Compress:
    # zlib cannot compress raw DEFLATE with 8 bits; old zlib used 9 instead.
    return zlib.compressobj(wbits=-max(window_bits, 9))


def client_compress(compressor: zlib._Compress, message: bytes, *, fin: bool = True) -> bytes:
    """Compress a message, or a fragment of one, as an RFC 7692 client would.

    Each fragment is sync-flushed; the final one loses the flush's last 4 bytes.
    """
    data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(TAIL)
    return data[:-4] if fin else data


def client_decompress(decompressor: zlib._Decompress, frames: Sequence[Frame]) -> bytes:
    """Decompress one message the server encoded, as an RFC 7692 client would."""
    assert frames[0].rsv1
    assert not any(frame.rsv1 for frame in frames[1:])
    assert [frame.fin for frame in frames] == [False] * (len(frames) - 1) + [True]
    payload = b"".join(frame.data for frame in frames) + TAIL
    return decompressor.decompress(payload)


def strict_client_decompress(decompressor: zlib._Decompress, frames: Sequence[Frame]) -> bytes:
    """Like :func:`client_decompress`, but every back-reference must be in the window.

    Given a large output buffer, zlib also resolves references into the output
    of the same call, beyond its window; one byte per call forbids that.
    """
    payload = b"".join(frame.data for frame in frames) + TAIL
    output = bytearray()
    while True:
        byte = decompressor.decompress(payload, 1)
        payload = decompressor.unconsumed_tail
        if not byte and not payload:
            return bytes(output)
        output += byte


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (clamped and sorted)."""
    offsets = sorted({min(max(cut, 0), len(data)) for cut in cuts})
    bounds = [0, *offsets, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def as_frames(chunks: Sequence[bytes], opcode: Opcode, *, rsv1: bool) -> list[Frame]:
    """One message as frames: ``opcode`` then continuations, RSV1 on the first only."""
    last = len(chunks) - 1
    return [
        Frame(
            opcode if index == 0 else Opcode.CONT,
            chunk,
            fin=index == last,
            rsv1=rsv1 and index == 0,
        )
        for index, chunk in enumerate(chunks)
    ]


def decode_message(
    extension: PerMessageDeflate,
    frames: Sequence[Frame],
    max_size: int | None = None,
) -> bytes:
    """Decode a message frame by frame, passing the remaining budget as a connection does."""
    received = b""
    for frame in frames:
        budget = None if max_size is None else max_size - len(received)
        decoded = extension.decode(frame, max_size=budget)
        assert not decoded.rsv1
        assert decoded.opcode is frame.opcode
        assert decoded.fin is frame.fin
        received += decoded.data
    return received


def negotiate(
    params: Sequence[ExtensionParameter], **options: object
) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
    factory = ServerPerMessageDeflateFactory(**options)  # type: ignore[arg-type]
    return factory.process_request_params(params, [])


# Negotiation: accepted offers ---------------------------------------------------


def test_names_are_permessage_deflate() -> None:
    assert ServerPerMessageDeflateFactory().name == "permessage-deflate"
    assert PerMessageDeflate().name == "permessage-deflate"


def test_bare_offer_is_accepted_with_full_windows_and_context_takeover() -> None:
    response, extension = negotiate([])
    assert response == []
    assert not extension.server_no_context_takeover
    assert not extension.client_no_context_takeover
    assert extension.server_max_window_bits == 15
    assert extension.client_max_window_bits == 15


@pytest.mark.parametrize(
    ("offer", "options", "expected_response"),
    [
        pytest.param(
            [("server_no_context_takeover", None)],
            {},
            [("server_no_context_takeover", None)],
            id="client-asks",
        ),
        pytest.param(
            [],
            {"server_no_context_takeover": True},
            [("server_no_context_takeover", None)],
            id="server-wants",
        ),
        pytest.param(
            [("server_no_context_takeover", None)],
            {"server_no_context_takeover": True},
            [("server_no_context_takeover", None)],
            id="both",
        ),
    ],
)
def test_server_no_context_takeover_is_granted_when_either_side_wants_it(
    offer: list[ExtensionParameter],
    options: dict[str, object],
    expected_response: list[ExtensionParameter],
) -> None:
    response, extension = negotiate(offer, **options)
    assert response == expected_response
    assert extension.server_no_context_takeover


@pytest.mark.parametrize(
    ("offer", "options"),
    [
        pytest.param([("client_no_context_takeover", None)], {}, id="client-offers"),
        pytest.param([], {"client_no_context_takeover": True}, id="server-wants"),
    ],
)
def test_client_no_context_takeover_is_answered_when_either_side_wants_it(
    offer: list[ExtensionParameter], options: dict[str, object]
) -> None:
    response, extension = negotiate(offer, **options)
    assert response == [("client_no_context_takeover", None)]
    assert extension.client_no_context_takeover


@pytest.mark.parametrize(
    ("offered", "configured", "expected"),
    [
        pytest.param("10", None, 10, id="requested-is-echoed"),
        pytest.param("10", 12, 10, id="requested-smaller-wins"),
        pytest.param("12", 10, 10, id="server-smaller-wins"),
        pytest.param("8", None, 8, id="eight-is-honoured"),
        pytest.param(None, 12, 12, id="server-announces-unrequested"),
    ],
)
def test_server_max_window_bits_is_never_larger_than_requested(
    offered: str | None, configured: int | None, expected: int
) -> None:
    offer = [] if offered is None else [("server_max_window_bits", offered)]
    response, extension = negotiate(offer, server_max_window_bits=configured)
    assert response == [("server_max_window_bits", str(expected))]
    assert extension.server_max_window_bits == expected


@pytest.mark.parametrize(
    ("offered", "configured", "expected_response", "expected_bits"),
    [
        pytest.param(None, None, [], 15, id="supported-not-used"),
        pytest.param("10", None, [], 10, id="client-hint-is-used-for-inflating"),
        pytest.param(None, 12, [("client_max_window_bits", "12")], 12, id="server-limits"),
        pytest.param("10", 12, [("client_max_window_bits", "10")], 10, id="never-above-hint"),
        pytest.param("13", 9, [("client_max_window_bits", "9")], 9, id="server-limits-below-hint"),
    ],
)
def test_client_max_window_bits_limits_a_client_that_offers_it(
    offered: str | None,
    configured: int | None,
    expected_response: list[ExtensionParameter],
    expected_bits: int,
) -> None:
    response, extension = negotiate(
        [("client_max_window_bits", offered)], client_max_window_bits=configured
    )
    assert response == expected_response
    assert extension.client_max_window_bits == expected_bits


def test_client_without_client_max_window_bits_is_accepted_with_full_window() -> None:
    response, extension = negotiate([], client_max_window_bits=10)
    # RFC 7692, section 7.1.2.2: the response must not mention it then.
    assert response == []
    assert extension.client_max_window_bits == 15


def test_client_without_client_max_window_bits_is_declined_when_required() -> None:
    with pytest.raises(NegotiationError):
        negotiate([], client_max_window_bits=10, require_client_max_window_bits=True)


def test_required_client_max_window_bits_accepts_a_client_that_offers_it() -> None:
    response, extension = negotiate(
        [("client_max_window_bits", None)],
        client_max_window_bits=10,
        require_client_max_window_bits=True,
    )
    assert response == [("client_max_window_bits", "10")]
    assert extension.client_max_window_bits == 10


def test_every_parameter_at_once_is_answered_in_rfc_order() -> None:
    response, extension = negotiate(
        [
            ("client_max_window_bits", None),
            ("server_max_window_bits", "11"),
            ("client_no_context_takeover", None),
            ("server_no_context_takeover", None),
        ],
        server_max_window_bits=13,
        client_max_window_bits=9,
    )
    assert response == [
        ("server_no_context_takeover", None),
        ("client_no_context_takeover", None),
        ("server_max_window_bits", "11"),
        ("client_max_window_bits", "9"),
    ]
    assert repr(extension) == (
        "PerMessageDeflate(client_no_context_takeover=True, "
        "server_no_context_takeover=True, client_max_window_bits=9, "
        "server_max_window_bits=11)"
    )


# Negotiation: declined offers and bad configuration ----------------------------------


@pytest.mark.parametrize(
    "offer",
    [
        pytest.param([("server_no_context_takeover", None)] * 2, id="duplicate-flag"),
        pytest.param(
            [("server_max_window_bits", "10"), ("server_max_window_bits", "11")],
            id="duplicate-value",
        ),
        pytest.param([("client_max_window_bits", None)] * 2, id="duplicate-valueless"),
        pytest.param([("x-unknown", None)], id="unknown"),
        pytest.param([("Server_No_Context_Takeover", None)], id="wrong-case"),
        pytest.param([("server_no_context_takeover", "1")], id="server-flag-with-value"),
        pytest.param([("client_no_context_takeover", "")], id="client-flag-with-value"),
        pytest.param([("server_max_window_bits", None)], id="server-bits-without-value"),
        pytest.param([("server_max_window_bits", "7")], id="server-bits-too-small"),
        pytest.param([("server_max_window_bits", "16")], id="server-bits-too-large"),
        pytest.param([("server_max_window_bits", "010")], id="server-bits-leading-zero"),
        pytest.param([("server_max_window_bits", "+9")], id="server-bits-sign"),
        pytest.param([("server_max_window_bits", "ten")], id="server-bits-not-a-number"),
        pytest.param([("client_max_window_bits", "")], id="client-bits-empty"),
        pytest.param([("client_max_window_bits", "16")], id="client-bits-too-large"),
    ],
)
def test_invalid_offer_is_declined(offer: list[ExtensionParameter]) -> None:
    with pytest.raises(NegotiationError):
        negotiate(offer)


def test_second_permessage_deflate_is_declined() -> None:
    factory = ServerPerMessageDeflateFactory()
    _, first = factory.process_request_params([], [])
    with pytest.raises(NegotiationError):
        factory.process_request_params([], [first])


@pytest.mark.parametrize(
    "options",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 7},
        {"client_max_window_bits": 16},
        {"compression_level": 10},
        {"compression_level": -2},
        {"memory_level": 0},
        {"memory_level": 10},
        {"require_client_max_window_bits": True},
    ],
)
def test_factory_rejects_invalid_settings(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ServerPerMessageDeflateFactory(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"server_max_window_bits": 7},
        {"client_max_window_bits": 16},
        {"compression_level": 10},
        {"memory_level": 0},
    ],
)
def test_extension_rejects_invalid_settings(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PerMessageDeflate(**options)  # type: ignore[arg-type]


def test_enable_adds_a_default_factory() -> None:
    (factory,) = enable_server_permessage_deflate(None)
    assert isinstance(factory, ServerPerMessageDeflateFactory)
    response, _ = factory.process_request_params([("client_max_window_bits", None)], [])
    assert response == [("server_max_window_bits", "12"), ("client_max_window_bits", "12")]


def test_enable_keeps_other_factories_and_appends() -> None:
    other = ServerPerMessageDeflateFactory()
    extensions = [other]
    assert enable_server_permessage_deflate(extensions) == [other]
    assert enable_server_permessage_deflate(extensions) is not extensions
    assert enable_server_permessage_deflate(()) != []


# Receiving: messages compressed by the client ----------------------------------------


def test_compressed_text_message_is_inflated() -> None:
    extension = PerMessageDeflate()
    data = client_compress(client_compressor(), "café ☕".encode() * 20)
    frame = extension.decode(Frame(Opcode.TEXT, data, rsv1=True))
    assert frame == Frame(Opcode.TEXT, "café ☕".encode() * 20)


def test_uncompressed_message_passes_through() -> None:
    extension = PerMessageDeflate()
    frames = as_frames([b"plain ", b"text"], Opcode.TEXT, rsv1=False)
    assert [extension.decode(frame) for frame in frames] == frames


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frame_passes_through_even_inside_a_compressed_message(opcode: Opcode) -> None:
    extension = PerMessageDeflate()
    compressor = client_compressor()
    first = client_compress(compressor, b"hello ", fin=False)
    second = client_compress(compressor, b"world")
    assert extension.decode(Frame(Opcode.TEXT, first, fin=False, rsv1=True)).data == b"hello "
    control = Frame(opcode, b"\x03\xe8")
    assert extension.decode(control) is control
    assert extension.decode(Frame(Opcode.CONT, second)).data == b"world"


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frame_with_rsv1_is_a_protocol_error(opcode: Opcode) -> None:
    with pytest.raises(ProtocolError) as exc_info:
        PerMessageDeflate().decode(Frame(opcode, b"", rsv1=True))
    assert exc_info.value.code == 1002


def test_continuation_frame_with_rsv1_is_a_protocol_error() -> None:
    extension = PerMessageDeflate()
    data = client_compress(client_compressor(), b"hello", fin=False)
    extension.decode(Frame(Opcode.BINARY, data, fin=False, rsv1=True))
    with pytest.raises(ProtocolError) as exc_info:
        extension.decode(Frame(Opcode.CONT, b"", rsv1=True))
    assert exc_info.value.code == 1002


def test_rsv2_and_rsv3_are_left_for_the_connection_to_reject() -> None:
    data = client_compress(client_compressor(), b"x")
    frame = PerMessageDeflate().decode(Frame(Opcode.TEXT, data, rsv1=True, rsv2=True, rsv3=True))
    assert (frame.data, frame.rsv1, frame.rsv2, frame.rsv3) == (b"x", False, True, True)


def test_fragmented_compressed_message_is_inflated_across_continuations() -> None:
    message = os.urandom(3000) * 3
    data = client_compress(client_compressor(), message)
    frames = as_frames(split(data, [1, 2, 500, 501, 2000]), Opcode.BINARY, rsv1=True)
    extension = PerMessageDeflate()
    assert decode_message(extension, frames) == message
    # The next message starts afresh: rsv1 clear means uncompressed.
    assert extension.decode(Frame(Opcode.TEXT, b"raw")).data == b"raw"


def test_compressed_then_uncompressed_messages_alternate() -> None:
    extension = PerMessageDeflate()
    compressor = client_compressor()
    for index in range(4):
        message = f"message {index}".encode() * 10
        compressed = index % 2 == 0
        data = client_compress(compressor, message) if compressed else message
        frames = as_frames(split(data, [len(data) // 2]), Opcode.TEXT, rsv1=compressed)
        assert decode_message(extension, frames) == message


def test_empty_compressed_message_is_inflated_to_nothing() -> None:
    extension = PerMessageDeflate()
    assert extension.decode(Frame(Opcode.TEXT, b"\x00", rsv1=True)).data == b""
    assert extension.decode(Frame(Opcode.TEXT, b"", rsv1=True)).data == b""


def test_with_client_context_takeover_messages_refer_to_earlier_ones() -> None:
    extension = PerMessageDeflate()
    compressor = client_compressor()
    message = os.urandom(1000)
    first = client_compress(compressor, message)
    second = client_compress(compressor, message)
    assert len(second) < len(first) // 10  # it is a back-reference
    assert extension.decode(Frame(Opcode.BINARY, first, rsv1=True)).data == message
    assert extension.decode(Frame(Opcode.BINARY, second, rsv1=True)).data == message


def test_without_client_context_takeover_each_message_inflates_alone() -> None:
    _, extension = negotiate([("client_no_context_takeover", None)])
    # A client that keeps its context despite agreeing not to is caught: its
    # second message refers to bytes the server has forgotten.
    compressor = client_compressor()
    message = os.urandom(1000)
    first = client_compress(compressor, message)
    second = client_compress(compressor, message)
    assert extension.decode(Frame(Opcode.BINARY, first, rsv1=True)).data == message
    with pytest.raises(ProtocolError):
        extension.decode(Frame(Opcode.BINARY, second, rsv1=True))


def test_without_client_context_takeover_fresh_client_streams_inflate() -> None:
    _, extension = negotiate([("client_no_context_takeover", None)])
    for index in range(3):
        message = f"hello {index} ".encode() * 50
        data = client_compress(client_compressor(), message)
        assert extension.decode(Frame(Opcode.TEXT, data, rsv1=True)).data == message


def test_message_ended_with_a_final_block_is_inflated_and_the_next_starts_afresh() -> None:
    # RFC 7692, section 7.2.3.4: a sender may end a message with BFINAL set.
    extension = PerMessageDeflate()
    for message in [b"first message", b"second message"]:
        compressor = client_compressor()
        data = compressor.compress(message) + compressor.flush(zlib.Z_FINISH)
        frames = as_frames(split(data, [len(data) - 1]), Opcode.TEXT, rsv1=True)
        assert decode_message(extension, [*frames, Frame(Opcode.CONT, b"")]) == message


def test_data_after_a_final_block_is_a_protocol_error() -> None:
    compressor = client_compressor()
    data = compressor.compress(b"done") + compressor.flush(zlib.Z_FINISH)
    with pytest.raises(ProtocolError):
        PerMessageDeflate().decode(Frame(Opcode.TEXT, data + b"junk", rsv1=True))
    extension = PerMessageDeflate()
    extension.decode(Frame(Opcode.TEXT, data, fin=False, rsv1=True))
    with pytest.raises(ProtocolError):
        extension.decode(Frame(Opcode.CONT, b"junk"))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xff\xff\xff", id="reserved-block-type"),
        pytest.param(b"\x01\x05\x00\x00\x00", id="stored-length-mismatch"),
        pytest.param(
            # A fixed-Huffman block whose first match points before the start.
            b"\x02\x04\x00",
            id="distance-too-far-back",
        ),
    ],
)
def test_corrupt_compressed_data_is_a_protocol_error_1002(data: bytes) -> None:
    with pytest.raises(ProtocolError) as exc_info:
        PerMessageDeflate().decode(Frame(Opcode.BINARY, data, rsv1=True))
    assert type(exc_info.value) is ProtocolError
    assert exc_info.value.code == 1002


# Receiving: size limits ------------------------------------------------------------


def test_decompression_bomb_is_stopped_at_max_size_without_inflating_it() -> None:
    bomb = client_compress(client_compressor(), bytes(10 * 1024 * 1024))
    assert len(bomb) < 12 * 1024
    extension = PerMessageDeflate()
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooBig) as exc_info:
            extension.decode(Frame(Opcode.BINARY, bomb, rsv1=True), max_size=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc_info.value.code == 1009
    # The output buffer grows to max_size + 1 bytes, and growing it may copy it
    # once: about twice max_size at worst, far from the bomb's 10 MiB.
    assert peak < 3 * MiB


def test_bomb_spread_over_frames_is_stopped_by_the_remaining_budget() -> None:
    compressor = client_compressor()
    chunks = [client_compress(compressor, bytes(400_000), fin=index == 2) for index in range(3)]
    frames = as_frames(chunks, Opcode.BINARY, rsv1=True)
    extension = PerMessageDeflate()
    with pytest.raises(PayloadTooBig):
        decode_message(extension, frames, max_size=MiB)


def test_message_of_exactly_max_size_is_accepted() -> None:
    message = os.urandom(1000) + bytes(5000)
    data = client_compress(client_compressor(), message)
    frames = as_frames(split(data, [10, 20]), Opcode.BINARY, rsv1=True)
    assert decode_message(PerMessageDeflate(), frames, max_size=len(message)) == message


def test_message_one_byte_over_max_size_is_too_big() -> None:
    message = os.urandom(1000) + bytes(5000)
    data = client_compress(client_compressor(), message)
    frames = as_frames(split(data, [10, 20]), Opcode.BINARY, rsv1=True)
    with pytest.raises(PayloadTooBig):
        decode_message(PerMessageDeflate(), frames, max_size=len(message) - 1)


def test_empty_compressed_message_fits_a_zero_budget() -> None:
    data = client_compress(client_compressor(), b"")
    assert PerMessageDeflate().decode(Frame(Opcode.TEXT, data, rsv1=True), max_size=0).data == b""


def test_uncompressed_frame_over_max_size_is_too_big() -> None:
    with pytest.raises(PayloadTooBig):
        PerMessageDeflate().decode(Frame(Opcode.BINARY, b"12345"), max_size=4)


# Sending: messages the client decompresses ----------------------------------------


def test_sent_message_has_rsv1_and_no_trailing_empty_block() -> None:
    frame = PerMessageDeflate().encode(Frame(Opcode.TEXT, b"hello hello hello"))
    assert frame.rsv1 and frame.fin and frame.opcode is Opcode.TEXT
    assert not frame.data.endswith(TAIL)
    assert client_decompress(zlib.decompressobj(-15), [frame]) == b"hello hello hello"


def test_sent_empty_message_is_a_single_zero_byte() -> None:
    # RFC 7692, section 7.2.3.6.
    frame = PerMessageDeflate().encode(Frame(Opcode.BINARY, b""))
    assert frame.data == b"\x00"
    assert client_decompress(zlib.decompressobj(-15), [frame]) == b""


def test_control_frames_are_sent_unchanged() -> None:
    extension = PerMessageDeflate()
    for opcode in (Opcode.PING, Opcode.PONG, Opcode.CLOSE):
        frame = Frame(opcode, b"\x03\xe8bye")
        assert extension.encode(frame) is frame


def test_sent_fragmented_message_has_rsv1_on_its_first_frame_only() -> None:
    extension = PerMessageDeflate()
    chunks = [b"one, ", b"", b"two, ", b"three" * 100]
    frames = [extension.encode(frame) for frame in as_frames(chunks, Opcode.TEXT, rsv1=False)]
    assert [frame.rsv1 for frame in frames] == [True, False, False, False]
    assert [frame.opcode for frame in frames] == [Opcode.TEXT] + [Opcode.CONT] * 3
    assert client_decompress(zlib.decompressobj(-15), frames) == b"".join(chunks)


def test_each_sent_fragment_can_be_inflated_on_arrival() -> None:
    extension = PerMessageDeflate()
    decompressor = zlib.decompressobj(-15)
    first = extension.encode(Frame(Opcode.BINARY, b"streamed ", fin=False))
    assert decompressor.decompress(first.data) == b"streamed "


def test_with_server_context_takeover_a_repeated_message_compresses_smaller() -> None:
    extension = PerMessageDeflate()
    message = os.urandom(1000)
    first = extension.encode(Frame(Opcode.BINARY, message))
    second = extension.encode(Frame(Opcode.BINARY, message))
    assert len(second.data) < len(first.data) // 10
    decompressor = zlib.decompressobj(-15)
    assert client_decompress(decompressor, [first]) == message
    assert client_decompress(decompressor, [second]) == message


def test_without_server_context_takeover_each_message_inflates_alone() -> None:
    _, extension = negotiate([("server_no_context_takeover", None)])
    message = os.urandom(1000)
    frames = [extension.encode(Frame(Opcode.BINARY, message)) for _ in range(3)]
    assert len({frame.data for frame in frames}) == 1
    for frame in frames:
        assert client_decompress(zlib.decompressobj(-15), [frame]) == message


def test_continuation_of_a_message_not_started_here_is_sent_unchanged() -> None:
    frame = Frame(Opcode.CONT, b"abc")
    assert PerMessageDeflate().encode(frame) is frame


@pytest.mark.parametrize("window_bits", range(8, 16))
def test_sent_messages_fit_the_negotiated_server_window(window_bits: int) -> None:
    _, extension = negotiate([("server_max_window_bits", str(window_bits))])
    decompressor = zlib.decompressobj(-window_bits)
    # Repeats from 250 to 300 bytes back, around the 8-bit window's edge, and
    # from one message to the next, where only the window can resolve them.
    blocks = [os.urandom(size) for size in range(250, 301, 10)]
    for message in [*blocks, *blocks, b"".join(block * 2 for block in blocks), bytes(5000)]:
        frame = extension.encode(Frame(Opcode.BINARY, message))
        assert strict_client_decompress(decompressor, [frame]) == message


def test_strict_client_catches_a_reference_beyond_its_window() -> None:
    # The check above is meaningful: a 15-bit sender breaks a 9-bit receiver.
    extension = PerMessageDeflate()
    block = os.urandom(2000)
    frame = extension.encode(Frame(Opcode.BINARY, block * 2))
    with pytest.raises(zlib.error):
        strict_client_decompress(zlib.decompressobj(-9), [frame])


def test_eight_bit_server_window_still_compresses() -> None:
    _, extension = negotiate([("server_max_window_bits", "8")])
    frame = extension.encode(Frame(Opcode.TEXT, b"a" * 10_000))
    assert len(frame.data) < 200


def test_compression_level_zero_sends_stored_blocks() -> None:
    extension = PerMessageDeflate(compression_level=0, memory_level=1)
    frame = extension.encode(Frame(Opcode.BINARY, bytes(1000)))
    assert len(frame.data) > 1000
    assert client_decompress(zlib.decompressobj(-15), [frame]) == bytes(1000)


# Properties ------------------------------------------------------------------------

messages = st.lists(st.binary(max_size=2000) | st.text(max_size=300).map(str.encode), max_size=6)
cut_lists = st.lists(st.integers(min_value=0, max_value=2000), max_size=4)


@given(
    messages=messages,
    client_context_takeover=st.booleans(),
    window_bits=st.integers(min_value=8, max_value=15),
    data=st.data(),
)
def test_any_client_messages_round_trip_in_any_fragmentation(
    messages: list[bytes], client_context_takeover: bool, window_bits: int, data: st.DataObject
) -> None:
    offer: list[ExtensionParameter] = [("client_max_window_bits", None)]
    if not client_context_takeover:
        offer.append(("client_no_context_takeover", None))
    _, extension = negotiate(offer, client_max_window_bits=window_bits)
    compressor = client_compressor(window_bits)
    for message in messages:
        if not client_context_takeover:
            compressor = client_compressor(window_bits)
        compressed = client_compress(compressor, message)
        frames = as_frames(split(compressed, data.draw(cut_lists)), Opcode.BINARY, rsv1=True)
        assert decode_message(extension, frames, max_size=len(message)) == message


@given(
    messages=messages,
    server_context_takeover=st.booleans(),
    window_bits=st.integers(min_value=8, max_value=15),
    data=st.data(),
)
def test_any_server_messages_round_trip_in_any_fragmentation(
    messages: list[bytes], server_context_takeover: bool, window_bits: int, data: st.DataObject
) -> None:
    offer: list[ExtensionParameter] = [("server_max_window_bits", str(window_bits))]
    if not server_context_takeover:
        offer.append(("server_no_context_takeover", None))
    _, extension = negotiate(offer)
    decompressor = zlib.decompressobj(-window_bits)
    for message in messages:
        if not server_context_takeover:
            decompressor = zlib.decompressobj(-window_bits)
        chunks = split(message, data.draw(cut_lists))
        frames = [extension.encode(frame) for frame in as_frames(chunks, Opcode.TEXT, rsv1=False)]
        assert strict_client_decompress(decompressor, frames) == message


@given(message=st.binary(max_size=5000), max_size=st.integers(min_value=0, max_value=6000))
def test_decoded_size_never_exceeds_max_size(message: bytes, max_size: int) -> None:
    compressed = client_compress(client_compressor(), message)
    frame = Frame(Opcode.BINARY, compressed, rsv1=True)
    if len(message) <= max_size:
        assert PerMessageDeflate().decode(frame, max_size=max_size).data == message
    else:
        with pytest.raises(PayloadTooBig):
            PerMessageDeflate().decode(frame, max_size=max_size)


@given(garbage=st.binary(min_size=1, max_size=200))
def test_arbitrary_compressed_payload_inflates_or_fails_cleanly(garbage: bytes) -> None:
    try:
        frame = PerMessageDeflate().decode(Frame(Opcode.BINARY, garbage, rsv1=True), max_size=MiB)
    except ProtocolError as exc:  # PayloadTooBig included
        assert exc.code in (1002, 1009)
    else:
        assert len(frame.data) <= MiB


# Through ServerConnection: max_size applies to the inflated message ---------------


def deflate_connection(max_size: int) -> ServerConnection:
    """An open connection that negotiated permessage-deflate, its output drained."""
    connection = ServerConnection(extensions=[ServerPerMessageDeflateFactory()], max_size=max_size)
    offer = ("Sec-WebSocket-Extensions", "permessage-deflate")
    connection.receive_data(handshake_request(extra=[offer]))
    (request,) = connection.events_received()
    connection.send_response(connection.accept(request))
    connection.data_to_send()
    return connection


@pytest.mark.parametrize("excess", [0, 1])
def test_max_size_counts_inflated_bytes_even_when_deflate_makes_the_frame_longer(
    excess: int,
) -> None:
    # Random bytes grow when deflated: a message of exactly max_size bytes
    # arrives in a longer frame and must still be accepted (found by interop).
    max_size = 2**16
    message = os.urandom(max_size + excess)
    payload = client_compress(client_compressor(), message)
    assert len(payload) > max_size
    connection = deflate_connection(max_size)
    connection.receive_data(client_frame(Opcode.BINARY, payload, rsv=0b100))
    if excess == 0:
        (frame,) = connection.events_received()
        assert frame.data == message
    else:
        frames, _ = sent_frames(connection)
        assert frames[-1].opcode is Opcode.CLOSE
        assert frames[-1].data[:2] == (1009).to_bytes(2, "big")
