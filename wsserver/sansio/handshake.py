"""The server side of the opening handshake (RFC 6455, section 4.2).

Header grammar helpers, origin checks, extension and subprotocol negotiation.
Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Union

from .exceptions import (
    InvalidHeader,
    InvalidHeaderFormat,
    InvalidHeaderValue,
    InvalidOrigin,
    InvalidUpgrade,
    InvalidVersion,
    NegotiationError,
)
from .extensions.base import Extension, ExtensionParameter, ServerExtensionFactory
from .http11 import Headers, MultipleValuesError

__all__ = [
    "GUID",
    "Origin",
    "Subprotocol",
    "accept_key",
    "build_extensions_header",
    "check_origin",
    "check_request",
    "negotiate_extensions",
    "parse_extensions_header",
    "parse_token_list",
    "select_subprotocol",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Origin = Union[str, "re.Pattern[str]", None]
"""An allowed origin: an exact string, a compiled pattern, or ``None`` for "no header"."""

Subprotocol = str

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_QUOTED = re.compile(r'"(?:[\x09\x20-\x21\x23-\x5b\x5d-\x7e]|\\[\x09\x20-\x7e])*"')
_OWS = re.compile(r"[\t ]*")
_QUOTED_PAIR = re.compile(r"\\(.)")
# 16 bytes in base64 with its padding; every such string decodes to 16 bytes.
_KEY = re.compile(r"[A-Za-z0-9+/]{22}==")


def accept_key(key: str) -> str:
    """Compute ``Sec-WebSocket-Accept`` from ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode()).digest()
    return binascii.b2a_base64(digest, newline=False).decode()


def _single(headers: Headers, name: str) -> str:
    """The one value of header ``name``.

    :raises InvalidHeader: if it is missing or repeated.
    """
    try:
        return headers[name]
    except KeyError:
        raise InvalidHeader(name) from None
    except MultipleValuesError:
        raise InvalidHeader(name, "multiple values") from None


def _skip_ows(header: str, pos: int) -> int:
    match = _OWS.match(header, pos)
    assert match is not None  # [\t ]* always matches
    return match.end()


def _parse_token(header: str, pos: int, name: str) -> tuple[str, int]:
    match = _TOKEN.match(header, pos)
    if match is None:
        raise InvalidHeaderFormat(name, "expected token", header, pos)
    return match.group(), match.end()


def _parse_list(
    header: str,
    name: str,
    parse_item: Callable[[str, int, str], tuple[object, int]],
) -> list[object]:
    """Parse a comma-separated list (RFC 9110, section 5.6.1), skipping empty items."""
    items: list[object] = []
    pos = _skip_ows(header, 0)
    while pos < len(header):
        if header[pos] == ",":
            pos = _skip_ows(header, pos + 1)
            continue
        item, pos = parse_item(header, pos, name)
        items.append(item)
        pos = _skip_ows(header, pos)
        if pos < len(header):
            if header[pos] != ",":
                raise InvalidHeaderFormat(name, "expected comma", header, pos)
            pos = _skip_ows(header, pos + 1)
    return items


def parse_token_list(headers: Headers, name: str) -> list[str]:
    """Parse every value of a header holding a list of tokens, such as ``Connection``.

    :raises InvalidHeaderFormat: if a value is not a token list.
    """
    tokens: list[str] = []
    for value in headers.get_all(name):
        if _TOKEN.fullmatch(value):  # the usual value: one token
            tokens.append(value)
        else:
            tokens.extend(_parse_list(value, name, _parse_token))  # type: ignore[arg-type]
    return tokens


def _parse_extension_item(
    header: str, pos: int, name: str
) -> tuple[tuple[str, list[ExtensionParameter]], int]:
    ext_name, pos = _parse_token(header, pos, name)
    pos = _skip_ows(header, pos)
    params: list[ExtensionParameter] = []
    while pos < len(header) and header[pos] == ";":
        pos = _skip_ows(header, pos + 1)
        param, pos = _parse_token(header, pos, name)
        pos = _skip_ows(header, pos)
        value: str | None = None
        if pos < len(header) and header[pos] == "=":
            pos = _skip_ows(header, pos + 1)
            if pos < len(header) and header[pos] == '"':
                match = _QUOTED.match(header, pos)
                if match is None:
                    raise InvalidHeaderFormat(name, "invalid quoted string", header, pos)
                value = _QUOTED_PAIR.sub(r"\1", match.group()[1:-1])
                pos = match.end()
                # RFC 6455, section 9.1: a quoted value must still be a token.
                if _TOKEN.fullmatch(value) is None:
                    raise InvalidHeaderFormat(name, "expected token", header, pos)
            else:
                value, pos = _parse_token(header, pos, name)
            pos = _skip_ows(header, pos)
        params.append((param, value))
    return (ext_name, params), pos


def parse_extensions_header(
    headers: Headers,
) -> list[tuple[str, list[ExtensionParameter]]]:
    """Parse every ``Sec-WebSocket-Extensions`` header into ``(name, params)`` offers.

    :raises InvalidHeaderFormat: if a value does not follow RFC 6455, section 9.1.
    """
    offers: list[tuple[str, list[ExtensionParameter]]] = []
    for value in headers.get_all("Sec-WebSocket-Extensions"):
        offers.extend(
            _parse_list(value, "Sec-WebSocket-Extensions", _parse_extension_item)  # type: ignore[arg-type]
        )
    return offers


def build_extensions_header(
    accepted: Sequence[tuple[str, Sequence[ExtensionParameter]]],
) -> str:
    """Format accepted extensions for the ``Sec-WebSocket-Extensions`` response header."""
    parts = []
    for name, params in accepted:
        items = [name]
        items.extend(p if v is None else f"{p}={v}" for p, v in params)
        parts.append("; ".join(items))
    return ", ".join(parts)


def check_request(headers: Headers) -> str:
    """Check the upgrade headers of a handshake request; return ``Sec-WebSocket-Key``.

    :raises InvalidUpgrade: if ``Connection`` or ``Upgrade`` do not ask for a
        WebSocket upgrade (answered with 426).
    :raises InvalidVersion: if ``Sec-WebSocket-Version`` is not 13 (426).
    :raises InvalidHeader: if ``Sec-WebSocket-Key`` is missing or invalid (400).
    """
    connection = parse_token_list(headers, "Connection")
    if not any(token.lower() == "upgrade" for token in connection):
        raise InvalidUpgrade("Connection", ", ".join(connection) or None)
    upgrade = parse_token_list(headers, "Upgrade")
    # RFC 6455 allows other protocols beside websocket in theory; in practice a
    # client sends exactly one, and anything else is a client we do not speak to.
    if [token.lower() for token in upgrade] != ["websocket"]:
        raise InvalidUpgrade("Upgrade", ", ".join(upgrade) or None)

    try:
        version = _single(headers, "Sec-WebSocket-Version")
    except InvalidHeader as exc:
        raise InvalidVersion("Sec-WebSocket-Version", exc.value) from None
    if version != "13":
        raise InvalidVersion("Sec-WebSocket-Version", version)

    key = _single(headers, "Sec-WebSocket-Key")
    if _KEY.fullmatch(key):  # what every client sends: 16 bytes in base64
        return key
    try:
        raw_key = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidHeaderValue("Sec-WebSocket-Key", key) from None
    if len(raw_key) != 16:
        raise InvalidHeaderValue("Sec-WebSocket-Key", key)
    return key


def check_origin(headers: Headers, origins: Sequence[Origin] | None) -> str | None:
    """Check ``Origin`` against the allowed ``origins``; return it.

    ``origins=None`` accepts any origin. ``None`` inside ``origins`` accepts a
    request without an ``Origin`` header; strings match exactly, compiled
    patterns must match the whole origin.

    :raises InvalidOrigin: if the origin is not allowed (answered with 403).
    """
    values = headers.get_all("Origin")
    if len(values) > 1:
        raise InvalidHeader("Origin", "multiple values")
    origin: str | None = values[0] if values else None
    if origins is None:
        return origin
    for allowed in origins:
        if allowed is None:
            if origin is None:
                return origin
        elif origin is None:
            continue
        elif isinstance(allowed, str):
            if origin == allowed:
                return origin
        elif allowed.fullmatch(origin):
            return origin
    raise InvalidOrigin(origin)


def negotiate_extensions(
    headers: Headers,
    factories: Sequence[ServerExtensionFactory] | None,
) -> tuple[str | None, list[Extension]]:
    """Accept the client's extension offers that a factory agrees to.

    Offers are considered in the client's order; for each, the first factory
    with the same name that accepts it wins, and later offers of an extension
    already accepted are declined by that extension's factory.

    :returns: the ``Sec-WebSocket-Extensions`` response value (``None`` when
        nothing was accepted) and the extensions to apply, in order.
    :raises InvalidHeaderFormat: if the request header is malformed.
    """
    offers = parse_extensions_header(headers)
    if not offers or not factories:
        return None, []
    accepted: list[Extension] = []
    response: list[tuple[str, list[ExtensionParameter]]] = []
    for name, params in offers:
        for factory in factories:
            if factory.name != name:
                continue
            try:
                response_params, extension = factory.process_request_params(
                    params, accepted
                )
            except NegotiationError:
                continue
            accepted.append(extension)
            response.append((name, response_params))
            break
    if not accepted:
        return None, []
    return build_extensions_header(response), accepted


def select_subprotocol(
    client_subprotocols: Sequence[Subprotocol],
    server_subprotocols: Sequence[Subprotocol],
) -> Subprotocol | None:
    """Pick the server's most preferred subprotocol that the client offers.

    :returns: the subprotocol, or ``None`` when they share none.
    """
    offered = set(client_subprotocols)
    for subprotocol in server_subprotocols:
        if subprotocol in offered:
            return subprotocol
    return None
