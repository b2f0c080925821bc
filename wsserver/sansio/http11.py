"""The slice of HTTP/1.1 a WebSocket server needs: requests in, responses out."""

from __future__ import annotations

import datetime
import email.utils
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
    "http_date",
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
# RFC 9112, section 3.2: the request target, here in origin-form or absolute-form:
# visible ASCII characters.
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")


class Headers(MutableMapping[str, str]):
    """HTTP headers: a case-insensitive multi-dict that keeps insertion order.

    ``headers[name]`` returns the single value of ``name`` and raises
    :exc:`MultipleValuesError` when there are several; :meth:`get_all` returns
    them all. Assigning ``headers[name] = value`` *adds* a value, as headers do
    on the wire; ``del headers[name]`` removes every value.
    """

    # Every connection keeps its request's and its response's headers for its
    # whole life, so they are stored compactly: two flat lists, no tuple, list
    # or dict per header. A lookup scans the lowercase names, in C; a handshake
    # has about a dozen headers, and at most MAX_HEADERS.
    __slots__ = ("_fields", "_keys", "_repeats")

    def __init__(self, *args: HeadersLike, **kwargs: str) -> None:
        # Names as spelled and values, alternating, in arrival order.
        self._fields: list[str] = []
        # The lowercase name of each header, in the same order.
        self._keys: list[str] = []
        # Whether a name came more than once; while none did (the usual
        # case), the first header of a name is its only one.
        self._repeats = False
        if args or kwargs:
            self.update(*args, **kwargs)

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
        key = _lowercase(name)
        keys = self._keys
        if key not in keys:
            raise KeyError(name)
        position = keys.index(key)
        if self._repeats and keys.count(key) > 1:
            raise MultipleValuesError(name)
        return self._fields[2 * position + 1]

    def __setitem__(self, name: str, value: str) -> None:
        key = _lowercase(name)
        keys = self._keys
        if key in keys:
            self._repeats = True
        keys.append(key)
        fields = self._fields
        fields.append(name)
        fields.append(value)

    def __delitem__(self, name: str) -> None:
        key = _lowercase(name)
        if key not in self._keys:
            raise KeyError(name)
        pairs = [pair for pair in self.raw_items() if _lowercase(pair[0]) != key]
        self.clear()
        self.update(pairs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _lowercase(name) in self._keys

    def __iter__(self) -> Iterator[str]:
        fields = self._fields
        if not self._repeats:
            return iter(fields[::2])
        # Each name once, as first spelled.
        first: dict[str, str] = {}
        for position, key in enumerate(self._keys):
            if key not in first:
                first[key] = fields[2 * position]
        return iter(first.values())

    def __len__(self) -> int:
        return len(set(self._keys)) if self._repeats else len(self._keys)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._by_key() == other._by_key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.raw_items())!r})"

    def __str__(self) -> str:
        return "".join(f"{name}: {value}\r\n" for name, value in self.raw_items()) + "\r\n"

    def _by_key(self) -> dict[str, list[str]]:
        """Every value of each lowercase name, in order: what equality compares."""
        values: dict[str, list[str]] = {}
        fields = self._fields
        for position, key in enumerate(self._keys):
            values.setdefault(key, []).append(fields[2 * position + 1])
        return values

    def copy(self) -> Headers:
        """Return a shallow copy."""
        copy = Headers()
        copy._fields = self._fields.copy()
        copy._keys = self._keys.copy()
        copy._repeats = self._repeats
        return copy

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name``, in order; ``[]`` when absent."""
        key = _lowercase(name)
        keys = self._keys
        if key not in keys:
            return []
        fields = self._fields
        if not self._repeats:
            return [fields[2 * keys.index(key) + 1]]
        return [fields[2 * position + 1] for position, k in enumerate(keys) if k == key]

    def raw_items(self) -> Iterator[tuple[str, str]]:
        """Iterate over ``(name, value)`` pairs as received, repeats included."""
        fields = self._fields
        return zip(fields[::2], fields[1::2], strict=True)

    def clear(self) -> None:
        """Remove every header."""
        self._fields = []
        self._keys = []
        self._repeats = False


# Header names as spelled -> (that spelling, its lowercase form), shared by
# every Headers: each request would otherwise bring its own copies of the
# same dozen names. Bounded in count and length, since clients choose the
# names (at most about 150 KiB): other names are lowercased afresh, which
# costs time, not correctness.
_SPELLINGS: dict[str, tuple[str, str]] = {}
_MAX_SPELLINGS = 512
_MAX_SPELLING_LENGTH = 40


def _spelling(name: str) -> tuple[str, str]:
    """Return ``name`` and its lowercase form, both shared when the name was seen before."""
    known = _SPELLINGS.get(name)
    if known is None:
        known = (name, name.lower())
        if len(_SPELLINGS) < _MAX_SPELLINGS and len(name) <= _MAX_SPELLING_LENGTH:
            _SPELLINGS[name] = known
    return known


def _lowercase(name: str) -> str:
    return _spelling(name)[1]


def _headers_of(fields: list[str], keys: list[str]) -> Headers:
    """Wrap lists built by a parser: names and values alternating, and the lowercase names."""
    headers = Headers()
    headers._fields = fields
    headers._keys = keys
    headers._repeats = len(set(keys)) != len(keys)
    return headers


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
    yield from reader.wait_for(1)
    request = _parse_buffered_request(reader, max_line_bytes, max_headers)
    if request is None:
        request = yield from _parse_request_lines(reader, max_line_bytes, max_headers)
    return request


# A request head as clients send it, up to the empty line that ends it: a GET
# for HTTP/1.1 with a target of visible characters, then header lines with a
# token before the colon and field characters after it (RFC 9110, sections
# 5.1 and 5.5; obs-text, bytes 0x80-0xff, tolerated). Neither part of a header
# line can hold a CR or an LF, so the head is read in one linear pass.
_REQUEST_HEAD_RE = re.compile(
    rb"GET ([\x21-\x7e]+) HTTP/1\.1\r\n"
    rb"((?:[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[\x09\x20-\x7e\x80-\xff]*\r\n)*)"
    rb"\r\n"
)


def _parse_buffered_request(
    reader: StreamReader, max_line_bytes: int, max_headers: int
) -> Request | None:
    """Parse a request buffered whole, when it is of the usual kind, in one pass.

    The usual kind: it arrived in one read, matches the pattern above, fits
    in ``max_line_bytes`` (so no line of it can pass the limit) and has at
    most ``max_headers`` headers. For anything else, return ``None`` and
    consume nothing: the line-by-line parser then gives the exact answer, and
    for every request of the usual kind it would give this same one.
    """
    end = reader.find(b"\r\n\r\n", max_line_bytes)
    if end < 0:
        return None
    head = reader.peek(end + 4)
    match = _REQUEST_HEAD_RE.fullmatch(head)
    if match is None:
        return None
    lines = match.group(2).decode("iso-8859-1").split("\r\n")
    lines.pop()  # what follows the last CRLF: nothing
    if len(lines) > max_headers:
        return None
    reader.skip(end + 4)
    fields: list[str] = []
    keys: list[str] = []
    for line in lines:
        name, _, value = line.partition(":")
        name, key = _spelling(name)
        fields.append(name)
        fields.append(value.strip(" \t"))
        keys.append(key)
    headers = _headers_of(fields, keys)
    _check_framing(headers)
    return Request(match.group(1).decode("ascii"), headers)


def _parse_request_lines(
    reader: StreamReader, max_line_bytes: int, max_headers: int
) -> Generator[None, None, Request]:
    """Parse the request line by line, answering each line as soon as it is complete."""
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
    if not _TARGET_RE.fullmatch(target):
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
        # Header values are bytes on the wire; ISO-8859-1 maps each to one
        # character, so nothing is lost and the original bytes can be recovered.
        headers[name.decode("ascii")] = value.decode("iso-8859-1")
    _check_framing(headers)
    return Request(target.decode("ascii"), headers)


def _check_framing(headers: Headers) -> None:
    """Refuse a request without exactly one ``Host``, or with a body.

    :raises InvalidMessage: if it is one of those.
    """
    # RFC 9112 section 3.2: exactly one Host header, or 400.
    if len(headers.get_all("Host")) != 1:
        raise InvalidMessage("request must have exactly one Host header")
    # A handshake request has no body; refusing one avoids request smuggling.
    if "Transfer-Encoding" in headers:
        raise InvalidMessage("request with Transfer-Encoding is not supported")
    if headers.get_all("Content-Length") not in ([], ["0"]):
        raise InvalidMessage("request with a body is not supported")


_FORBIDDEN_IN_HEADERS_RE = re.compile("[\r\n\x00]")


def serialize_response(response: Response) -> bytes:
    """Encode ``response`` for the wire.

    A ``Content-Length`` header is added for error responses that lack one.

    :raises ValueError: if a header name or value contains a line break.
    """
    headers = response.headers
    # One search over every name and value joined, rather than one per header.
    if _FORBIDDEN_IN_HEADERS_RE.search("".join(headers._fields)):
        for name, value in headers.raw_items():
            if _FORBIDDEN_IN_HEADERS_RE.search(name + value):
                raise ValueError(f"invalid character in header {name!r}")
    lines = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
    lines.extend(map(": ".join, headers.raw_items()))
    if response.status_code != HTTPStatus.SWITCHING_PROTOCOLS and (
        "content-length" not in headers._keys
    ):
        lines.append(f"Content-Length: {len(response.body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("iso-8859-1") + response.body


# The last Date value made, and the second it stands for.
_date_second = -1
_date_text = ""


def http_date() -> str:
    """Return the current time as a ``Date`` header value (:rfc:`9110#section-5.6.7`).

    Made once per second: formatting it took a tenth of a handshake's time in
    the core. (The core reads the wall clock for this header only; it keeps
    no time otherwise.)
    """
    global _date_second, _date_text
    now = datetime.datetime.now(datetime.timezone.utc)
    second = int(now.timestamp())
    if second != _date_second:
        _date_text = email.utils.format_datetime(now, usegmt=True)
        _date_second = second
    return _date_text
