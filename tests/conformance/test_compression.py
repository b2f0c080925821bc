"""permessage-deflate (RFC 7692), negotiated by the raw client, with Python's zlib
compressing and inflating on the client side.

Three servers per backend: the default ``serve()`` configuration (12-bit
windows), a factory with no preferences of its own (it grants what the client
asks), and one that imposes no context takeover in both directions.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import AsyncIterator

import anyio
import pytest

from wsserver.sansio.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from .conftest import serve_echo
from .rawclient import BINARY, CLOSE, CONT, PING, PONG, TEXT, RawClient, close_payload

pytestmark = pytest.mark.anyio

MAX_SIZE = 2**16
SERVER_OPTIONS = {"max_size": MAX_SIZE}
CASE_SECONDS = 10
OFFER = "permessage-deflate"

KINDS = pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
WINDOW_BITS = pytest.mark.parametrize("bits", range(8, 16))

# RFC 7692, section 7.2.1: a sync flush ends with these four bytes, which the
# sender removes from every message and the receiver appends again.
TAIL = b"\x00\x00\xff\xff"


@pytest.fixture(scope="module")
async def plain_port(anyio_backend: str) -> AsyncIterator[int]:
    """A server whose factory states no preferences: it grants what is asked."""
    factory = ServerPerMessageDeflateFactory()
    async with serve_echo(extensions=[factory], max_size=MAX_SIZE) as port:
        yield port


@pytest.fixture(scope="module")
async def no_takeover_port(anyio_backend: str) -> AsyncIterator[int]:
    """A server that imposes no context takeover in both directions."""
    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True
    )
    async with serve_echo(extensions=[factory], max_size=MAX_SIZE) as port:
        yield port


class ClientDeflater:
    """Compresses the client's messages within a negotiated window."""

    def __init__(self, window_bits: int = 15, *, no_context_takeover: bool = False) -> None:
        # zlib refuses a raw 8-bit compressor. A 9-bit one never refers more
        # than 512 - 262 = 250 bytes back (its minimum lookahead), which fits
        # the 256 bytes an 8-bit inflater keeps.
        self._bits = max(window_bits, 9)
        self._no_context_takeover = no_context_takeover
        self._compressor: zlib._Compress | None = None

    def _get(self) -> zlib._Compress:
        if self._compressor is None:
            self._compressor = zlib.compressobj(wbits=-self._bits)
        return self._compressor

    def compress_parts(self, parts: list[bytes]) -> list[bytes]:
        """Compress one message given as fragments: one payload per fragment."""
        compressor = self._get()
        payloads = [compressor.compress(part) + compressor.flush(zlib.Z_SYNC_FLUSH)
                    for part in parts]
        assert payloads[-1].endswith(TAIL)
        payloads[-1] = payloads[-1][: -len(TAIL)]
        if self._no_context_takeover:
            self._compressor = None
        return payloads

    def compress(self, data: bytes) -> bytes:
        """Compress one unfragmented message."""
        return self.compress_parts([data])[0]


class ClientInflater:
    """Inflates the server's messages within the window it announced."""

    def __init__(self, window_bits: int = 15, *, no_context_takeover: bool = False) -> None:
        self._bits = window_bits
        self._no_context_takeover = no_context_takeover
        self._decompressor: zlib._Decompress | None = None

    def decompress(self, payload: bytes) -> bytes:
        """Inflate one message, refusing any reference beyond the window.

        zlib resolves a back-reference from the output of the current call as
        well as from its window, so a stream that reaches too far back still
        inflates when produced in one go. Producing one byte per call leaves
        only the window to refer to: zlib then reports "invalid distance too
        far back" for a server that compressed with a larger window than it
        announced.
        """
        if self._decompressor is None or self._no_context_takeover:
            self._decompressor = zlib.decompressobj(wbits=-self._bits)
        decompressor = self._decompressor
        output: list[bytes] = []
        data = payload + TAIL
        while True:
            chunk = decompressor.decompress(data, 1)
            data = decompressor.unconsumed_tail
            if not chunk and not data:
                return b"".join(output)
            output.append(chunk)


def server_params(client: RawClient) -> dict[str, str | None]:
    """The parameters of the permessage-deflate the server accepted."""
    extensions = client.extensions
    assert [name for name, _ in extensions] == [OFFER], extensions
    return extensions[0][1]


async def recv_message(
    client: RawClient, inflater: ClientInflater, *, compressed: bool | None = None
) -> tuple[int, bytes]:
    """Receive one whole message; inflate it if RSV1 says it is compressed."""
    frame = await client.recv_frame()
    assert frame is not None, "TCP closed instead of a message"
    assert frame.opcode in (TEXT, BINARY) and frame.fin, frame
    assert not (frame.rsv2 or frame.rsv3), frame
    if compressed is not None:
        assert frame.rsv1 is compressed, frame
    data = inflater.decompress(frame.payload) if frame.rsv1 else frame.payload
    return frame.opcode, data


def sample(opcode: int, size: int) -> bytes:
    """Compressible but not trivial data: repeats at a few distances, some noise."""
    if opcode == TEXT:
        words = b"deflate window context takeover message frame server client "
        return (words * (size // len(words) + 1))[:size]
    unit = os.urandom(64) * 3 + os.urandom(16)
    return (unit * (size // len(unit) + 1))[:size]


def server_inflater(client: RawClient) -> ClientInflater:
    """An inflater for the window the server announced (15 bits if it announced none)."""
    return ClientInflater(int(server_params(client).get("server_max_window_bits") or 15))


# Negotiation ---------------------------------------------------------------------------


async def test_plain_offer_is_accepted(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            params = server_params(client)
            # No client_max_window_bits in the offer: none may come back.
            assert "client_max_window_bits" not in params
            bits = int(params.get("server_max_window_bits") or 15)
            await client.send_frame(TEXT, ClientDeflater().compress(b"hello"), rsv1=True)
            assert await recv_message(client, ClientInflater(bits)) == (TEXT, b"hello")
            await client.finish()


@WINDOW_BITS
@pytest.mark.parametrize("server", ["default", "plain"])
async def test_server_max_window_bits_offer_is_honoured(
    port: int, plain_port: int, server: str, bits: int
) -> None:
    offer = f"{OFFER}; server_max_window_bits={bits}"
    # Repeats 400 bytes apart: out of reach of a 256-byte window.
    message = os.urandom(400) * 4
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port if server == "default" else plain_port,
                                     extensions=offer) as client:
            granted = server_params(client).get("server_max_window_bits")
            assert granted is not None and granted.isdigit(), granted
            assert 8 <= int(granted) <= bits
            inflater = ClientInflater(int(granted))
            deflater = ClientDeflater()
            for _ in range(3):
                await client.send_frame(BINARY, deflater.compress(message), rsv1=True)
                assert await recv_message(client, inflater) == (BINARY, message)
            await client.finish()


@WINDOW_BITS
@pytest.mark.parametrize("server", ["default", "plain"])
async def test_client_max_window_bits_offer_is_honoured(
    port: int, plain_port: int, server: str, bits: int
) -> None:
    offer = f"{OFFER}; client_max_window_bits={bits}"
    message = os.urandom(300) * 5
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port if server == "default" else plain_port,
                                     extensions=offer) as client:
            params = server_params(client)
            granted = params.get("client_max_window_bits")
            if granted is not None:
                assert granted.isdigit() and 8 <= int(granted) <= bits, granted
            client_bits = bits if granted is None else int(granted)
            server_bits = int(params.get("server_max_window_bits") or 15)
            deflater, inflater = ClientDeflater(client_bits), ClientInflater(server_bits)
            for _ in range(3):
                await client.send_frame(BINARY, deflater.compress(message), rsv1=True)
                assert await recv_message(client, inflater) == (BINARY, message)
            await client.finish()


async def test_client_max_window_bits_without_value_may_be_limited(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=f"{OFFER}; client_max_window_bits") as client:
            params = server_params(client)
            granted = params.get("client_max_window_bits")
            client_bits = 15 if granted is None else int(granted)
            server_bits = int(params.get("server_max_window_bits") or 15)
            message = os.urandom(3000) * 3
            await client.send_frame(
                BINARY, ClientDeflater(client_bits).compress(message), rsv1=True
            )
            assert await recv_message(client, ClientInflater(server_bits)) == (BINARY, message)
            await client.finish()


async def test_quoted_parameter_value_is_accepted(plain_port: int) -> None:
    offer = f'{OFFER}; server_max_window_bits="10"'
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(plain_port, extensions=offer) as client:
            granted = server_params(client).get("server_max_window_bits")
            assert granted is not None and int(granted) <= 10
            await client.finish()


DECLINED_OFFERS = [
    pytest.param(f"{OFFER}; server_max_window_bits=7", id="server-bits-7"),
    pytest.param(f"{OFFER}; server_max_window_bits=16", id="server-bits-16"),
    pytest.param(f"{OFFER}; server_max_window_bits=010", id="leading-zero"),
    pytest.param(f"{OFFER}; server_max_window_bits", id="server-bits-without-value"),
    pytest.param(f"{OFFER}; client_max_window_bits=20", id="client-bits-20"),
    pytest.param(f"{OFFER}; client_no_context_takeover=1", id="takeover-with-value"),
    pytest.param(f"{OFFER}; server_no_context_takeover; server_no_context_takeover",
                 id="duplicate"),
    pytest.param(f"{OFFER}; x_unknown_param", id="unknown-param"),
    pytest.param("x-webkit-deflate-frame", id="other-extension"),
]


@pytest.mark.parametrize("offer", DECLINED_OFFERS)
async def test_unacceptable_offer_is_declined_and_rsv1_then_closes_with_1002(
    plain_port: int, offer: str
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(plain_port, extensions=offer) as client:
            assert "sec-websocket-extensions" not in client.response_headers
            await client.send_frame(TEXT, b"plain")
            await client.expect_frame(TEXT, b"plain")
            await client.send_frame(TEXT, ClientDeflater().compress(b"x"), rsv1=True)
            await client.expect_close(1002)


async def test_second_offer_is_used_when_the_first_is_declined(plain_port: int) -> None:
    offer = f"{OFFER}; server_max_window_bits=99, {OFFER}; server_max_window_bits=9"
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(plain_port, extensions=offer) as client:
            granted = server_params(client).get("server_max_window_bits")
            assert granted is not None and int(granted) <= 9
            await client.send_frame(TEXT, ClientDeflater().compress(b"second"), rsv1=True)
            assert await recv_message(client, ClientInflater(int(granted))) == (TEXT, b"second")
            await client.finish()


# Messages --------------------------------------------------------------------------------


@KINDS
@pytest.mark.parametrize("size", [0, 1, 100, 10_000, MAX_SIZE])
async def test_compressed_message_is_echoed(port: int, opcode: int, size: int) -> None:
    message = sample(opcode, size)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            inflater = server_inflater(client)
            await client.send_frame(opcode, ClientDeflater().compress(message), rsv1=True)
            assert await recv_message(client, inflater) == (opcode, message)
            await client.finish()


@KINDS
async def test_uncompressed_message_is_echoed(port: int, opcode: int) -> None:
    message = sample(opcode, 500)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            inflater = server_inflater(client)
            await client.send_frame(opcode, message)
            assert await recv_message(client, inflater) == (opcode, message)
            await client.finish()


async def test_compressed_and_uncompressed_messages_alternate(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            inflater = server_inflater(client)
            deflater = ClientDeflater(15)
            for index in range(6):
                message = b"message %d " % index * 20
                if index % 2:
                    await client.send_frame(TEXT, message)
                else:
                    await client.send_frame(TEXT, deflater.compress(message), rsv1=True)
                assert await recv_message(client, inflater) == (TEXT, message)
            await client.finish()


@KINDS
@pytest.mark.parametrize("count", [2, 5])
async def test_compressed_fragmented_message_is_echoed(
    port: int, opcode: int, count: int
) -> None:
    message = sample(opcode, 5000)
    step = len(message) // count + 1
    parts = [message[index : index + step] for index in range(0, len(message), step)]
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            inflater = server_inflater(client)
            payloads = ClientDeflater().compress_parts(parts)
            for index, payload in enumerate(payloads):
                # RSV1 marks the message: first frame only (RFC 7692, section 6.1).
                await client.send_frame(opcode if index == 0 else CONT, payload,
                                        fin=index == len(payloads) - 1, rsv1=index == 0)
            assert await recv_message(client, inflater) == (opcode, message)
            await client.finish()


async def test_compressed_stream_cut_anywhere_across_fragments(port: int) -> None:
    message = sample(TEXT, 3000)
    payload = ClientDeflater().compress(message)
    cuts = [0, 1, len(payload) // 3, len(payload) - 1, len(payload)]
    parts = [payload[a:b] for a, b in itertools.pairwise(cuts)]
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            inflater = server_inflater(client)
            for index, part in enumerate(parts):
                await client.send_frame(TEXT if index == 0 else CONT, part,
                                        fin=index == len(parts) - 1, rsv1=index == 0)
            assert await recv_message(client, inflater) == (TEXT, message)
            await client.finish()


async def test_message_ending_with_a_final_deflate_block_is_accepted(port: int) -> None:
    # RFC 7692, section 7.2.3.4: a sender may end a message with BFINAL set.
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            inflater = server_inflater(client)
            for text in (b"final block one", b"final block two"):
                compressor = zlib.compressobj(wbits=-15)
                payload = compressor.compress(text) + compressor.flush(zlib.Z_FINISH)
                await client.send_frame(TEXT, payload, rsv1=True)
                assert await recv_message(client, inflater) == (TEXT, text)
            await client.finish()


# Context takeover ---------------------------------------------------------------------


async def test_context_takeover_is_kept_by_default(plain_port: int) -> None:
    message = os.urandom(2000)
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(plain_port, extensions=OFFER) as client:
            params = server_params(client)
            assert "server_no_context_takeover" not in params
            assert "client_no_context_takeover" not in params
            deflater, inflater = ClientDeflater(), ClientInflater()
            first = deflater.compress(message)
            second = deflater.compress(message)
            # The client's second message refers to the first: the server must
            # have kept its inflater's history to read it.
            assert len(second) < len(first) // 10
            sizes = []
            for payload in (first, second):
                await client.send_frame(BINARY, payload, rsv1=True)
                frame = await client.recv_frame()
                assert frame is not None and frame.rsv1, frame
                assert inflater.decompress(frame.payload) == message
                sizes.append(len(frame.payload))
            # And the server's own second echo refers to its first.
            assert sizes[1] < sizes[0] // 10
            await client.finish()


@pytest.mark.parametrize("server", ["offered", "imposed"])
async def test_server_no_context_takeover_resets_the_servers_context(
    plain_port: int, no_takeover_port: int, server: str
) -> None:
    message = os.urandom(2000)
    offered = server == "offered"
    offer = f"{OFFER}; server_no_context_takeover" if offered else OFFER
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(plain_port if offered else no_takeover_port,
                                     extensions=offer) as client:
            assert "server_no_context_takeover" in server_params(client)
            deflater = ClientDeflater(no_context_takeover=not offered)
            for _ in range(3):
                await client.send_frame(BINARY, deflater.compress(message), rsv1=True)
                frame = await client.recv_frame()
                assert frame is not None and frame.rsv1, frame
                # A fresh inflater reads every message: nothing refers back.
                assert ClientInflater().decompress(frame.payload) == message
            await client.finish()


@pytest.mark.parametrize("server", ["offered", "imposed"])
async def test_client_no_context_takeover_is_accepted(
    plain_port: int, no_takeover_port: int, server: str
) -> None:
    message = sample(TEXT, 1500)
    offered = server == "offered"
    offer = f"{OFFER}; client_no_context_takeover" if offered else OFFER
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(plain_port if offered else no_takeover_port,
                                     extensions=offer) as client:
            params = server_params(client)
            assert "client_no_context_takeover" in params
            inflater = ClientInflater(
                no_context_takeover="server_no_context_takeover" in params
            )
            deflater = ClientDeflater(no_context_takeover=True)
            for _ in range(3):
                payload = deflater.compress(message)
                await client.send_frame(TEXT, payload, rsv1=True)
                assert await recv_message(client, inflater) == (TEXT, message)
            await client.finish()


async def test_client_no_context_takeover_resets_the_servers_inflater(plain_port: int) -> None:
    # A client that promised to reset but refers back to its previous message
    # cannot be read: the server dropped that history, as the promise allows.
    message = os.urandom(1000)
    offer = f"{OFFER}; client_no_context_takeover"
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(plain_port, extensions=offer) as client:
            deflater = ClientDeflater()  # keeps its context despite the promise
            await client.send_frame(BINARY, deflater.compress(message), rsv1=True)
            assert await recv_message(client, ClientInflater()) == (BINARY, message)
            await client.send_frame(BINARY, deflater.compress(message), rsv1=True)
            await client.expect_close(1002)


# Errors -------------------------------------------------------------------------------


async def test_rsv1_on_continuation_closes_with_1002(port: int) -> None:
    payloads = ClientDeflater().compress_parts([b"first part ", b"second part"])
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            await client.send_frame(TEXT, payloads[0], fin=False, rsv1=True)
            await client.send_frame(CONT, payloads[1], fin=True, rsv1=True)
            await client.expect_close(1002)


async def test_rsv1_on_continuation_of_uncompressed_message_closes_with_1002(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            await client.send_frame(TEXT, b"plain start ", fin=False)
            await client.send_frame(CONT, ClientDeflater().compress(b"end"), rsv1=True)
            await client.expect_close(1002)


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [(PING, b"ping"), (PONG, b"pong"), (CLOSE, close_payload(1000))],
    ids=["ping", "pong", "close"],
)
async def test_rsv1_on_control_frame_closes_with_1002(
    port: int, opcode: int, payload: bytes
) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            await client.send_frame(opcode, payload, rsv1=True)
            await client.expect_close(1002)


@pytest.mark.parametrize("rsv", ["rsv2", "rsv3"])
async def test_other_reserved_bits_still_close_with_1002(port: int, rsv: str) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            await client.send_frame(TEXT, ClientDeflater().compress(b"x"), rsv1=True,
                                    rsv2=rsv == "rsv2", rsv3=rsv == "rsv3")
            await client.expect_close(1002)


@pytest.mark.parametrize("size", [MAX_SIZE + 1, 2**20, 2**24], ids=["max+1", "1MiB", "16MiB"])
async def test_compressed_message_over_max_size_closes_with_1009(port: int, size: int) -> None:
    # Zeros compress about a thousandfold: a small frame, a large message.
    payload = ClientDeflater().compress(bytes(size))
    assert len(payload) < MAX_SIZE
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            await client.send_frame(BINARY, payload, rsv1=True)
            await client.expect_close(1009)


async def test_compressed_fragments_over_max_size_close_with_1009(port: int) -> None:
    payloads = ClientDeflater().compress_parts([bytes(MAX_SIZE // 2)] * 2 + [b"!"])
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            for index, payload in enumerate(payloads):
                await client.send_frame(BINARY if index == 0 else CONT, payload,
                                        fin=index == 2, rsv1=index == 0)
            await client.expect_close(1009)


async def test_compressed_message_of_exactly_max_size_is_echoed(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            inflater = server_inflater(client)
            await client.send_frame(BINARY, ClientDeflater().compress(bytes(MAX_SIZE)), rsv1=True)
            assert await recv_message(client, inflater) == (BINARY, bytes(MAX_SIZE))
            await client.finish()


async def test_invalid_deflate_data_closes_with_1002(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            # Block type 3 is reserved in DEFLATE (RFC 1951, section 3.2.3).
            await client.send_frame(BINARY, b"\xff\xff\xff\xff", rsv1=True)
            await client.expect_close(1002)


async def test_compressed_invalid_utf8_closes_with_1007(port: int) -> None:
    with anyio.fail_after(CASE_SECONDS):
        async with RawClient.connect(port, extensions=OFFER) as client:
            payload = ClientDeflater().compress(b"caf\xc3 au lait")
            await client.send_frame(TEXT, payload, rsv1=True)
            await client.expect_close(1007)
