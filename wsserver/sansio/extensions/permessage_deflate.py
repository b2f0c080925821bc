"""Per-message compression with DEFLATE (RFC 7692).

Two public classes split the work the way :mod:`.base` does:

- :class:`ServerPerMessageDeflateFactory` holds the server's preferences and
  turns one client offer into response parameters and a negotiated extension,
  following RFC 7692, section 7.1;
- :class:`PerMessageDeflate` is that negotiated extension: it inflates the
  frames of compressed messages from the client and deflates every data
  message sent to it, section 7.2.

Window bits and zlib. Every window size here is a base-two logarithm, 8 to
15, and zlib runs in raw mode (negative ``wbits``: no zlib header, as the RFC
requires). zlib refuses a raw compressor with an 8-bit (256-byte) window, so
when ``server_max_window_bits=8`` is negotiated the compressor is given 9 bits.
That keeps the promise: zlib's deflate never refers further back than
``MAX_DIST = window - 262`` bytes (its minimum lookahead), which for a 512-byte
window is 250 bytes, inside the 256 bytes the client keeps. The tests check
this against an inflater that resolves every reference from its 8-bit window.
The decompressor uses exactly the negotiated client window.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import attrs

from ..exceptions import NegotiationError, PayloadTooBig, ProtocolError
from ..frames import CONTROL_OPCODES, Frame, Opcode
from .base import Extension, ExtensionParameter, ServerExtensionFactory

__all__ = [
    "PerMessageDeflate",
    "ServerPerMessageDeflateFactory",
    "enable_server_permessage_deflate",
]

EXTENSION_NAME = "permessage-deflate"

MIN_WINDOW_BITS = 8
MAX_WINDOW_BITS = 15

SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"
CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
SERVER_MAX_WINDOW_BITS = "server_max_window_bits"
CLIENT_MAX_WINDOW_BITS = "client_max_window_bits"

# RFC 7692, section 7.2.1: a message ends with an empty stored block, whose last
# four bytes the sender removes and the receiver puts back.
_EMPTY_BLOCK_TAIL = b"\x00\x00\xff\xff"

# RFC 7692, section 7.1.2: the value is "8" to "15", without leading zeros.
_WINDOW_BITS_BY_TEXT = {str(bits): bits for bits in range(MIN_WINDOW_BITS, MAX_WINDOW_BITS + 1)}

# zlib's smallest raw compression window; see the module docstring about 8.
_ZLIB_MIN_RAW_WINDOW_BITS = 9

# Defaults of enable_server_permessage_deflate(), explained in its docstring.
DEFAULT_SERVER_MAX_WINDOW_BITS = 12
DEFAULT_CLIENT_MAX_WINDOW_BITS = 12
DEFAULT_COMPRESSION_LEVEL = 6
DEFAULT_MEMORY_LEVEL = 5


def _check_window_bits(name: str, bits: int | None) -> None:
    if bits is not None and not MIN_WINDOW_BITS <= bits <= MAX_WINDOW_BITS:
        raise ValueError(
            f"{name} must be between {MIN_WINDOW_BITS} and {MAX_WINDOW_BITS}, got {bits}"
        )


def _check_zlib_levels(compression_level: int | None, memory_level: int | None) -> None:
    if compression_level is not None and not -1 <= compression_level <= 9:
        raise ValueError(f"compression_level must be between -1 and 9, got {compression_level}")
    if memory_level is not None and not 1 <= memory_level <= 9:
        raise ValueError(f"memory_level must be between 1 and 9, got {memory_level}")


class PerMessageDeflate:
    """The permessage-deflate extension, as negotiated for one connection.

    Usually built by :class:`ServerPerMessageDeflateFactory`; building one
    directly is for tests and for callers that negotiated by other means.

    The extension keeps per-message state in both directions: :meth:`decode`
    must see every data frame received, in order, and :meth:`encode` every data
    frame sent. A compressor or decompressor without context takeover is
    dropped after each message and created again on the next one, so an idle
    connection holds no zlib memory in that direction.

    :param client_no_context_takeover: the client starts a fresh DEFLATE
        context for every message, so the decompressor is reset after each.
    :param server_no_context_takeover: the server starts a fresh DEFLATE
        context for every message, so the compressor is reset after each.
    :param client_max_window_bits: the largest window the client compresses
        with, 8 to 15.
    :param server_max_window_bits: the largest window the server may compress
        with, 8 to 15.
    :param compression_level: zlib's level, 0 (none) to 9 (best), or -1 or
        :obj:`None` for zlib's default (6).
    :param memory_level: zlib's ``memLevel``, 1 to 9, or :obj:`None` for
        zlib's default (8); the compressor needs about
        ``2 ** (server_max_window_bits + 2) + 2 ** (memory_level + 9)`` bytes.
    :raises ValueError: if a window size or a zlib level is out of range.
    """

    __slots__ = (
        "_client_max_window_bits",
        "_client_no_context_takeover",
        "_compression_level",
        "_compressor",
        "_decompressor",
        "_is_receiving_compressed",
        "_is_sending_compressed",
        "_memory_level",
        "_server_max_window_bits",
        "_server_no_context_takeover",
    )

    def __init__(
        self,
        *,
        client_no_context_takeover: bool = False,
        server_no_context_takeover: bool = False,
        client_max_window_bits: int = MAX_WINDOW_BITS,
        server_max_window_bits: int = MAX_WINDOW_BITS,
        compression_level: int | None = None,
        memory_level: int | None = None,
    ) -> None:
        _check_window_bits("client_max_window_bits", client_max_window_bits)
        _check_window_bits("server_max_window_bits", server_max_window_bits)
        _check_zlib_levels(compression_level, memory_level)
        self._client_no_context_takeover = client_no_context_takeover
        self._server_no_context_takeover = server_no_context_takeover
        self._client_max_window_bits = client_max_window_bits
        self._server_max_window_bits = server_max_window_bits
        self._compression_level = (
            zlib.Z_DEFAULT_COMPRESSION if compression_level is None else compression_level
        )
        self._memory_level = zlib.DEF_MEM_LEVEL if memory_level is None else memory_level
        self._decompressor: zlib._Decompress | None = None
        self._compressor: zlib._Compress | None = None
        # Whether the message being received / sent is compressed: only its
        # first frame says so (RSV1), its continuation frames must not.
        self._is_receiving_compressed = False
        self._is_sending_compressed = False

    @property
    def name(self) -> str:
        """The extension's registered name, ``permessage-deflate``."""
        return EXTENSION_NAME

    @property
    def client_no_context_takeover(self) -> bool:
        """Whether the client resets its DEFLATE context after every message."""
        return self._client_no_context_takeover

    @property
    def server_no_context_takeover(self) -> bool:
        """Whether the server resets its DEFLATE context after every message."""
        return self._server_no_context_takeover

    @property
    def client_max_window_bits(self) -> int:
        """The largest window, in bits, the client compresses with."""
        return self._client_max_window_bits

    @property
    def server_max_window_bits(self) -> int:
        """The largest window, in bits, the server compresses with."""
        return self._server_max_window_bits

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate("
            f"client_no_context_takeover={self._client_no_context_takeover}, "
            f"server_no_context_takeover={self._server_no_context_takeover}, "
            f"client_max_window_bits={self._client_max_window_bits}, "
            f"server_max_window_bits={self._server_max_window_bits})"
        )

    # Receiving ---------------------------------------------------------------

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Inflate a frame received from the client, if its message is compressed.

        A message is compressed when its first frame (text or binary) has RSV1
        set; its continuation frames then carry RSV1 clear and are inflated as
        the rest of the same DEFLATE stream. Frames of uncompressed messages
        and valid control frames come back unchanged. A decoded frame has RSV1
        clear; RSV2 and RSV3 are left for the connection to reject.

        Inflating is bounded: never more than ``max_size + 1`` bytes are
        produced, however well the payload compresses, so a decompression bomb
        costs no more memory than an honest message of the limit's size.

        :param frame: the next frame received, after unmasking.
        :param max_size: how many more bytes the current message may have once
            decoded, or :obj:`None` for no limit.
        :returns: the frame with its payload inflated and RSV1 clear.
        :raises PayloadTooBig: if the decoded payload exceeds ``max_size``.
        :raises ProtocolError: if a control or continuation frame has RSV1 set,
            or the compressed payload is not a valid DEFLATE stream.
        """
        opcode = frame.opcode
        if opcode in CONTROL_OPCODES:
            if frame.rsv1:
                # RFC 7692, section 6.1: control frames are never compressed.
                raise ProtocolError(f"{opcode.name} frame with RSV1 set")
            return frame
        if opcode is Opcode.CONT:
            if frame.rsv1:
                raise ProtocolError("continuation frame with RSV1 set")
        else:
            self._is_receiving_compressed = frame.rsv1

        if not self._is_receiving_compressed:
            if max_size is not None and len(frame.data) > max_size:
                raise PayloadTooBig(f"message exceeds limit of {max_size} more bytes")
            return frame

        data = self._inflate(frame.data, is_final=frame.fin, max_size=max_size)
        if frame.fin:
            self._is_receiving_compressed = False
            decompressor = self._decompressor
            # A client that ended its stream with a BFINAL block starts a new
            # one with its next message, whatever context takeover says.
            if self._client_no_context_takeover or (decompressor is not None and decompressor.eof):
                self._decompressor = None
        return Frame(opcode, data, frame.fin, False, frame.rsv2, frame.rsv3)

    def _inflate(self, data: bytes, *, is_final: bool, max_size: int | None) -> bytes:
        decompressor = self._decompressor
        if decompressor is None:
            bits = self._client_max_window_bits
            decompressor = self._decompressor = zlib.decompressobj(wbits=-bits)
        if decompressor.eof:
            # The stream ended (BFINAL) in an earlier frame of this message.
            if data:
                raise ProtocolError("data after the end of a compressed message")
            return b""
        return self._inflate_bounded(decompressor, data, is_final=is_final, max_size=max_size)

    @staticmethod
    def _inflate_bounded(
        decompressor: zlib._Decompress,
        data: bytes,
        *,
        is_final: bool,
        max_size: int | None,
    ) -> bytes:
        # For zlib, a max_length of 0 means unbounded; asking for one byte more
        # than allowed tells "exactly at the limit" from "over it".
        limit = 0 if max_size is None else max(max_size, 0) + 1
        try:
            inflated = decompressor.decompress(data, limit)
            if max_size is not None and len(inflated) > max_size:
                raise PayloadTooBig(f"message exceeds limit of {max_size} more bytes")
            if decompressor.eof and decompressor.unused_data:
                raise ProtocolError("data after the end of a compressed message")
            if is_final and not decompressor.eof:
                rest_limit = 0 if max_size is None else limit - len(inflated)
                tail = decompressor.decompress(_EMPTY_BLOCK_TAIL, rest_limit)
                if tail:
                    inflated += tail
                    if max_size is not None and len(inflated) > max_size:
                        raise PayloadTooBig(f"message exceeds limit of {max_size} more bytes")
        except zlib.error as exc:
            # RFC 7692 names no close code. 1002 rather than 1007: a broken
            # DEFLATE stream breaks the extension's framing, it is not message
            # content inconsistent with its type.
            raise ProtocolError(f"invalid compressed data: {exc}") from exc
        return inflated

    # Sending -----------------------------------------------------------------

    def encode(self, frame: Frame) -> Frame:
        """Deflate a data frame about to be sent to the client.

        Every message is compressed: its first frame (text or binary) gets RSV1
        set, its continuation frames RSV1 clear. Each frame is flushed with
        ``Z_SYNC_FLUSH`` so it can go out at once, and the final frame loses
        the four bytes ``00 00 ff ff`` that the flush ends with. Control frames
        and continuation frames of a message that did not start here come back
        unchanged.

        :param frame: the next frame to send.
        :returns: the frame with its payload deflated.
        """
        opcode = frame.opcode
        if opcode in CONTROL_OPCODES:
            return frame
        if opcode is Opcode.CONT:
            if not self._is_sending_compressed:
                return frame
            is_first = False
        else:
            self._is_sending_compressed = True
            is_first = True

        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = self._new_compressor()
        data = compressor.compress(frame.data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if frame.fin:
            # zlib documents that a sync flush always ends with this block.
            data = data[: -len(_EMPTY_BLOCK_TAIL)]
            self._is_sending_compressed = False
            if self._server_no_context_takeover:
                self._compressor = None
        return Frame(opcode, data, frame.fin, is_first, frame.rsv2, frame.rsv3)

    def _new_compressor(self) -> zlib._Compress:
        # zlib has no raw 8-bit compressor; with 9 bits its references still
        # reach at most 250 bytes back (see the module docstring).
        bits = max(self._server_max_window_bits, _ZLIB_MIN_RAW_WINDOW_BITS)
        return zlib.compressobj(self._compression_level, zlib.DEFLATED, -bits, self._memory_level)


@attrs.frozen(slots=True)
class _Offer:
    """One client offer of permessage-deflate, validated."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    # Whether the parameter is present, and its value when it has one.
    has_client_max_window_bits: bool = False
    client_max_window_bits: int | None = None


def _parse_window_bits(name: str, value: str | None) -> int:
    if value is None:
        raise NegotiationError(f"{name} needs a value")
    try:
        return _WINDOW_BITS_BY_TEXT[value]
    except KeyError:
        raise NegotiationError(f"invalid {name}: {value!r}") from None


def _parse_offer(params: Sequence[ExtensionParameter]) -> _Offer:
    """Validate one offer's parameters (RFC 7692, sections 5 and 7.1)."""
    seen: set[str] = set()
    server_no_context_takeover = False
    client_no_context_takeover = False
    server_max_window_bits: int | None = None
    has_client_max_window_bits = False
    client_max_window_bits: int | None = None
    for name, value in params:
        if name in seen:
            raise NegotiationError(f"duplicate parameter {name}")
        seen.add(name)
        if name in (SERVER_NO_CONTEXT_TAKEOVER, CLIENT_NO_CONTEXT_TAKEOVER):
            if value is not None:
                raise NegotiationError(f"{name} takes no value, got {value!r}")
            if name == SERVER_NO_CONTEXT_TAKEOVER:
                server_no_context_takeover = True
            else:
                client_no_context_takeover = True
        elif name == SERVER_MAX_WINDOW_BITS:
            server_max_window_bits = _parse_window_bits(name, value)
        elif name == CLIENT_MAX_WINDOW_BITS:
            has_client_max_window_bits = True
            if value is not None:
                client_max_window_bits = _parse_window_bits(name, value)
        else:
            raise NegotiationError(f"unknown parameter {name}")
    return _Offer(
        server_no_context_takeover=server_no_context_takeover,
        client_no_context_takeover=client_no_context_takeover,
        server_max_window_bits=server_max_window_bits,
        has_client_max_window_bits=has_client_max_window_bits,
        client_max_window_bits=client_max_window_bits,
    )


@attrs.frozen(slots=True)
class ServerPerMessageDeflateFactory:
    """Negotiates permessage-deflate on the server side (RFC 7692, section 7.1).

    Each argument states what the server wants; an offer the server cannot
    agree with is declined, and the client's next offer, if any, is tried.

    :param server_no_context_takeover: ask to reset the server's DEFLATE
        context after every message (always granted: it is the server's own).
    :param client_no_context_takeover: ask the client to reset its context
        after every message (always granted: clients must support it).
    :param server_max_window_bits: the largest window, 8 to 15 bits, the server
        compresses with; a smaller value requested by the client wins.
    :param client_max_window_bits: the largest window, 8 to 15 bits, the client
        should compress with. It can only be imposed on a client that offers
        ``client_max_window_bits``; other clients are accepted with their full
        32 KiB window unless ``require_client_max_window_bits`` is set.
    :param compression_level: zlib's level, 0 to 9, or -1 or :obj:`None` for
        zlib's default (6).
    :param memory_level: zlib's ``memLevel``, 1 to 9, or :obj:`None` for zlib's
        default (8).
    :param require_client_max_window_bits: decline offers from clients that
        cannot limit their window to ``client_max_window_bits``.
    :raises ValueError: if a window size or a zlib level is out of range, or
        ``require_client_max_window_bits`` is set without
        ``client_max_window_bits``.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None
    compression_level: int | None = None
    memory_level: int | None = None
    require_client_max_window_bits: bool = False

    def __attrs_post_init__(self) -> None:
        _check_window_bits("server_max_window_bits", self.server_max_window_bits)
        _check_window_bits("client_max_window_bits", self.client_max_window_bits)
        _check_zlib_levels(self.compression_level, self.memory_level)
        if self.require_client_max_window_bits and self.client_max_window_bits is None:
            raise ValueError("require_client_max_window_bits needs client_max_window_bits")

    @property
    def name(self) -> str:
        """The extension's registered name, ``permessage-deflate``."""
        return EXTENSION_NAME

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        """Accept one permessage-deflate offer from the client.

        :param params: the offer's parameters, values already unquoted.
        :param accepted_extensions: the extensions accepted so far.
        :returns: the parameters for the ``Sec-WebSocket-Extensions`` response
            and the negotiated :class:`PerMessageDeflate`.
        :raises NegotiationError: to decline the offer: permessage-deflate is
            already accepted, or a parameter is unknown, repeated or has an
            invalid value, or the client cannot limit its window and
            ``require_client_max_window_bits`` is set.
        """
        if any(extension.name == EXTENSION_NAME for extension in accepted_extensions):
            # Both would claim RSV1 (RFC 7692, section 6).
            raise NegotiationError(f"{EXTENSION_NAME} is already accepted")
        offer = _parse_offer(params)

        # Section 7.1.1: either side's wish for no context takeover is granted.
        server_no_context_takeover = (
            self.server_no_context_takeover or offer.server_no_context_takeover
        )
        client_no_context_takeover = (
            self.client_no_context_takeover or offer.client_no_context_takeover
        )

        # Section 7.1.2.1: a requested limit must be echoed, with the same or a
        # smaller value; the server may also announce a limit of its own.
        server_bits = self.server_max_window_bits
        if offer.server_max_window_bits is not None:
            server_bits = min(offer.server_max_window_bits, server_bits or MAX_WINDOW_BITS)

        # Section 7.1.2.2: only a client that sent client_max_window_bits may be
        # given a limit, no larger than the value it sent, if any.
        client_bits: int | None = None
        client_bits_in_use = offer.client_max_window_bits or MAX_WINDOW_BITS
        if offer.has_client_max_window_bits:
            if self.client_max_window_bits is not None:
                client_bits = min(self.client_max_window_bits, client_bits_in_use)
                client_bits_in_use = client_bits
        elif self.require_client_max_window_bits:
            raise NegotiationError(
                f"client cannot limit its window to {self.client_max_window_bits} bits"
            )

        response: list[ExtensionParameter] = []
        if server_no_context_takeover:
            response.append((SERVER_NO_CONTEXT_TAKEOVER, None))
        if client_no_context_takeover:
            response.append((CLIENT_NO_CONTEXT_TAKEOVER, None))
        if server_bits is not None:
            response.append((SERVER_MAX_WINDOW_BITS, str(server_bits)))
        if client_bits is not None:
            response.append((CLIENT_MAX_WINDOW_BITS, str(client_bits)))

        extension = PerMessageDeflate(
            client_no_context_takeover=client_no_context_takeover,
            server_no_context_takeover=server_no_context_takeover,
            client_max_window_bits=client_bits_in_use,
            server_max_window_bits=server_bits or MAX_WINDOW_BITS,
            compression_level=self.compression_level,
            memory_level=self.memory_level,
        )
        return response, extension


def enable_server_permessage_deflate(
    extensions: Sequence[ServerExtensionFactory] | None,
) -> list[ServerExtensionFactory]:
    """Add permessage-deflate with memory-conscious defaults, unless already there.

    This is what ``serve(compression="deflate")`` does. The default factory
    uses 12-bit windows both ways, compression level 6 and memory level 5: the
    compressor then needs about 32 KiB and the decompressor about 11 KiB per
    connection, against about 256 KiB and 39 KiB with zlib's defaults, for a
    ratio that stays close on typical WebSocket messages (mostly far smaller
    than the 4 KiB window). Clients that cannot limit their window still get
    compression, with the 32 KiB window they asked for. Pass a
    :class:`ServerPerMessageDeflateFactory` in ``extensions`` to choose
    otherwise.

    :param extensions: the server's extension factories, or :obj:`None`.
    :returns: a new list: ``extensions`` plus a default
        :class:`ServerPerMessageDeflateFactory` if none of them is named
        ``permessage-deflate``.
    """
    factories = list(extensions or ())
    if not any(factory.name == EXTENSION_NAME for factory in factories):
        factories.append(
            ServerPerMessageDeflateFactory(
                server_max_window_bits=DEFAULT_SERVER_MAX_WINDOW_BITS,
                client_max_window_bits=DEFAULT_CLIENT_MAX_WINDOW_BITS,
                compression_level=DEFAULT_COMPRESSION_LEVEL,
                memory_level=DEFAULT_MEMORY_LEVEL,
            )
        )
    return factories
