"""The slice of HTTP/1.1 a WebSocket server needs: requests in, responses out."""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator, Mapping, MutableMapping
from http import HTTPStatus
from typing import TypeAlias

import attrs

from .exceptions import InvalidMessage, RequestTooLarge, WebSocketError
from .streams import StreamReader

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE_BYTES",
    "Headers",
    "HeadersLike",
    "Request",
    "Response",
    "parse_request",
    "serialize_response",
]

MAX_LINE_BYTES = 8192
"""Longest request line or header line accepted, CRLF included."""

MAX_HEADERS = 128
"""Most header lines accepted in one request."""

# RFC 9110, section 5.6.2: a token.
_TOKEN_RE = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# RFC 9110, section 5.5: field values are visible characters, spaces and tabs;
# obs-text (bytes 0x80-0xff) is tolerated.
_VALUE_RE = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")


class Headers(MutableMapping[str, str]):
    """HTTP headers: a case-insensitive multi-dict that keeps insertion order.

    ``headers[name]`` returns the single value of ``name`` and raises
    :exc:`MultipleValuesError` when there are several; :meth:`get_all` returns
    them all. Assigning ``headers[name] = value`` *adds* a value, as headers do
    on the wire; ``del headers[name]`` removes every value.
    """

    __slots__ = ("_index", "_items", "_names")

    def __init__(self, *args: HeadersLike, **kwargs: str) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, list[str]] = {}
        # Lowercase name -> the spelling it first arrived with, for iteration.
        self._names: dict[str, str] = {}
        for arg in args:
            self.update(arg)
        self.update(kwargs)

    def update(self, *args: object, **kwargs: str) -> None:
        """Add every header from a mapping, a :class:`Headers` or ``(name, value)`` pairs."""
        for arg in (*args, kwargs):
            if isinstance(arg, Headers):
                pairs: Iterable[tuple[str, str]] = arg.raw_items()
            elif isinstance(arg, Mapping):
                pairs = arg.items()
            else:
                pairs = arg  # type: ignore[assignment]
            for name, value in pairs:
                self[name] = value

    def __getitem__(self, name: str) -> str:
        values = self._index[name.lower()]
        if len(values) > 1:
            raise MultipleValuesError(name)
        return values[0]

    def __setitem__(self, name: str, value: str) -> None:
        self._items.append((name, value))
        key = name.lower()
        values = self._index.get(key)
        if values is None:
            self._index[key] = [value]
            self._names[key] = name
        else:
            values.append(value)

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        del self._index[key]
        del self._names[key]
        self._items = [(n, v) for n, v in self._items if n.lower() != key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._index == other._index

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"

    def __str__(self) -> str:
        return "".join(f"{name}: {value}\r\n" for name, value in self._items) + "\r\n"

    def copy(self) -> Headers:
        """Return a shallow copy."""
        return Headers(self)

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name``, in order; ``[]`` when absent."""
        return list(self._index.get(name.lower(), ()))

    def raw_items(self) -> Iterator[tuple[str, str]]:
        """Iterate over ``(name, value)`` pairs as received, repeats included."""
        return iter(self._items)

    def clear(self) -> None:
        """Remove every header."""
        self._items.clear()
        self._index.clear()
        self._names.clear()


HeadersLike: TypeAlias = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


class MultipleValuesError(WebSocketError, LookupError):
    """A header that should appear once has several values."""

    def __str__(self) -> str:
        return f"several values for {self.args[0]} header"


@attrs.frozen(slots=True)
class Request:
    """The client's opening handshake request.

    ``path`` is the request target (path and query string).
    """

    path: str
    headers: Headers


@attrs.frozen(slots=True)
class Response:
    """The server's handshake response: a 101, or an HTTP error with a body."""

    status_code: int
    reason_phrase: str
    headers: Headers
    body: bytes = b""


def _decode_latin1(value: bytes) -> str:
    # Header values are bytes on the wire; ISO-8859-1 maps each to one character
    # so nothing is lost and the original bytes can be recovered.
    return value.decode("iso-8859-1")


def parse_request(
    reader: StreamReader,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_headers: int = MAX_HEADERS,
) -> Generator[None, None, Request]:
    """Parse an HTTP/1.1 GET request; a generator that yields while bytes are missing.

    :raises RequestTooLarge: if a line passes ``max_line_bytes`` or the
        headers pass ``max_headers``.
    :raises InvalidMessage: if the bytes are not a valid HTTP/1.1 GET request
        with one ``Host`` header and without a body.
    :raises EOFError: if the stream ends before the request is complete.
    """
    try:
        request_line = yield from reader.read_line(max_line_bytes)
    except OverflowError as exc:
        raise InvalidMessage("request line too long") from exc
    if not request_line.endswith(b"\r\n"):
        raise InvalidMessage("request line does not end with CRLF")
    try:
        method, target, version = request_line[:-2].split(b" ")
    except ValueError:
        raise InvalidMessage(f"invalid request line: {request_line[:80]!r}") from None
    if not _TOKEN_RE.fullmatch(method) or not version.startswith(b"HTTP/"):
        raise InvalidMessage(f"invalid request line: {request_line[:80]!r}")
    if version != b"HTTP/1.1":
        raise InvalidMessage(f"unsupported HTTP version: {version[:20]!r}")
    if method != b"GET":
        raise InvalidMessage(f"unsupported HTTP method: {method[:20]!r}")
    if not target or b"\x00" in target or any(c < 0x21 or c > 0x7E for c in target):
        raise InvalidMessage("invalid request target")

    headers = Headers()
    count = 0
    while True:
        try:
            line = yield from reader.read_line(max_line_bytes)
        except OverflowError as exc:
            raise RequestTooLarge("header line too long") from exc
        if not line.endswith(b"\r\n"):
            raise InvalidMessage("header line does not end with CRLF")
        if line == b"\r\n":
            break
        count += 1
        if count > max_headers:
            raise RequestTooLarge(f"more than {max_headers} headers")
        name, sep, value = line[:-2].partition(b":")
        if not sep or not _TOKEN_RE.fullmatch(name):
            raise InvalidMessage(f"invalid header line: {line[:80]!r}")
        value = value.strip(b" \t")
        if not _VALUE_RE.fullmatch(value):
            raise InvalidMessage(f"invalid header value: {line[:80]!r}")
        headers[name.decode("ascii")] = _decode_latin1(value)

    # RFC 9112 section 3.2: exactly one Host header, or 400.
    if len(headers.get_all("Host")) != 1:
        raise InvalidMessage("request must have exactly one Host header")
    # A handshake request has no body; refusing one avoids request smuggling.
    if "Transfer-Encoding" in headers:
        raise InvalidMessage("request with Transfer-Encoding is not supported")
    if headers.get_all("Content-Length") not in ([], ["0"]):
        raise InvalidMessage("request with a body is not supported")
    return Request(target.decode("ascii"), headers)


def serialize_response(response: Response) -> bytes:
    """Encode ``response`` for the wire.

    A ``Content-Length`` header is added for error responses that lack one.

    :raises ValueError: if a header name or value contains a line break.
    """
    lines = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n"]
    has_length = False
    for name, value in response.headers.raw_items():
        if any(c in name or c in value for c in "\r\n\x00"):
            raise ValueError(f"invalid character in header {name!r}")
        has_length = has_length or name.lower() == "content-length"
        lines.append(f"{name}: {value}\r\n")
    if response.status_code != HTTPStatus.SWITCHING_PROTOCOLS and not has_length:
        lines.append(f"Content-Length: {len(response.body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("iso-8859-1") + response.body
