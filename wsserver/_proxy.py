"""Who the client is behind a reverse proxy: ``Forwarded`` and ``X-Forwarded-*`` headers.

Pure functions over header values, no I/O. A proxy tells the server who
connected to it by appending to ``Forwarded`` (:rfc:`7239`) or to
``X-Forwarded-For`` / ``X-Forwarded-Proto``. Anyone can send those headers,
so they are believed only when the TCP peer is a trusted proxy, and then only
as far as a chain of trusted proxies vouches for them: reading the hops from
the right (the one our proxy appended) to the left, the client is the first
hop that is not itself a trusted proxy. A hop that cannot be parsed stops the
walk, and the TCP peer's address is kept, so that a client cannot forge its
way past a proxy with a malformed header.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

import attrs

from .sansio import Headers

__all__ = [
    "ForwardedElement",
    "Node",
    "TrustedProxies",
    "client_from_headers",
    "parse_forwarded",
    "parse_node",
    "parse_x_forwarded",
    "parse_x_forwarded_for",
    "scheme_of",
    "trusted_proxies",
]

EVERYONE: Final[str] = "*"
"""The ``forwarded_allow_ips`` entry that trusts every peer, Unix sockets included."""

UNIX: Final[str] = "unix:"
"""The ``forwarded_allow_ips`` entry that trusts peers on a Unix socket.

Such a peer has no address to check, but only a process allowed to open the
socket file can be one: a proxy on the same machine.
"""

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Values may be tokens, but an address with a port such as 192.0.2.43:47011 is
# not one (":" is a delimiter) and RFC 7239 says to quote it; proxies that do not
# are common, and ":", "[" and "]" delimit nothing here, so they are let through.
_VALUE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z:\[\]]+")
# quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 7230 section 3.2.6).
_QUOTED: Final = re.compile(r'"((?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*)"')
_OWS: Final = re.compile(r"[ \t]*")
_QUOTED_PAIR: Final = re.compile(r"\\(.)")
# obfnode / obfport = "_" 1*( ALPHA / DIGIT / "." / "_" / "-" ) (RFC 7239 section 6.3).
_OBFUSCATED: Final = re.compile(r"_[A-Za-z0-9._\-]+")
_PORT: Final = re.compile(r"[0-9]{1,5}")

_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


@attrs.frozen
class Node:
    """One hop's address, as a proxy wrote it (``for=`` or an X-Forwarded-For entry).

    Attributes:
        host: an IP address without brackets, ``"unknown"``, or an obfuscated
            identifier such as ``"_hidden"`` (:rfc:`7239#section-6.3`).
        port: the port, 0 when not given or obfuscated.
    """

    host: str
    port: int = 0

    def is_ip(self) -> bool:
        """Tell whether :attr:`host` is an IP address (not ``unknown`` nor obfuscated)."""
        return _ip(self.host) is not None


@attrs.frozen
class ForwardedElement:
    """One element of a ``Forwarded`` header: what one proxy said about one hop.

    Attributes:
        for_: the ``for=`` parameter, the address of who sent the request to
            that proxy; ``None`` when absent.
        proto: the ``proto=`` parameter, the scheme that request used, lowercase.
        host: the ``host=`` parameter.
        by: the ``by=`` parameter, the proxy's own interface.
    """

    for_: Node | None = None
    proto: str | None = None
    host: str | None = None
    by: str | None = None


# Parsing ------------------------------------------------------------------------------


def parse_node(text: str) -> Node | None:
    """Parse a node: ``192.0.2.43``, ``192.0.2.43:47011``, ``[2001:db8::17]:4711``, ``_hidden``.

    Lenient where no ambiguity arises: an IPv6 address without brackets and
    without a port is accepted, as some proxies write ``X-Forwarded-For`` so.

    Args:
        text: the node, without its quotes.

    Returns:
        The node, or ``None`` if ``text`` is not a node (:rfc:`7239#section-6`).
    """
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or not isinstance(_ip(address), ipaddress.IPv6Address):
            return None
        if not rest:
            return Node(address)
        if not rest.startswith(":"):
            return None
        port = _parse_port(rest[1:])
        return None if port is None else Node(address, port)
    if text.count(":") > 1:
        # Unbracketed IPv6: valid only without a port.
        return Node(text) if isinstance(_ip(text), ipaddress.IPv6Address) else None
    name, colon, port_text = text.partition(":")
    if not (name.lower() == "unknown" or _OBFUSCATED.fullmatch(name)) and not isinstance(
        _ip(name), ipaddress.IPv4Address
    ):
        return None
    name = "unknown" if name.lower() == "unknown" else name
    if not colon:
        return Node(name)
    port = _parse_port(port_text)
    return None if port is None else Node(name, port)


def _parse_port(text: str) -> int | None:
    """A port number, 0 for an obfuscated one, ``None`` if neither."""
    if _OBFUSCATED.fullmatch(text):
        return 0
    if _PORT.fullmatch(text) and int(text) <= 65535:
        return int(text)
    return None


def parse_forwarded(values: Iterable[str]) -> list[ForwardedElement | None]:
    """Parse the ``Forwarded`` header lines, left to right.

    ``Forwarded = 1#forwarded-element``, each element ``pair *( ";" pair )``
    with ``pair = token "=" ( token / quoted-string )`` (:rfc:`7239#section-4`).
    Parameter names are case-insensitive; empty elements and pairs are
    skipped. A line that does not follow the grammar, or an element that
    repeats a parameter or has a ``for=`` that is not a node, becomes one
    ``None`` in its place: where a hop is malformed, nothing to its left can
    be told apart from what the client made up.

    Args:
        values: every ``Forwarded`` header line, in the order received.

    Returns:
        The elements; ``None`` for a malformed line or element.
    """
    elements: list[ForwardedElement | None] = []
    for line in values:
        parsed = _parse_forwarded_line(line)
        if parsed is None:
            elements.append(None)
        else:
            elements.extend(parsed)
    return elements


def _parse_forwarded_line(line: str) -> list[ForwardedElement | None] | None:
    """Parse one header line; ``None`` if it does not follow the grammar."""
    elements: list[ForwardedElement | None] = []
    pairs: list[tuple[str, str]] = []
    position = _skip_ows(line, 0)
    while True:
        if position < len(line) and line[position] not in ",;":
            name = _TOKEN.match(line, position)
            if name is None or not line.startswith("=", name.end()):
                return None
            position = name.end() + 1
            if line.startswith('"', position):
                quoted = _QUOTED.match(line, position)
                if quoted is None:
                    return None
                value = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
                position = quoted.end()
            else:
                token = _VALUE.match(line, position)
                if token is None:
                    return None
                value = token.group()
                position = token.end()
            pairs.append((name.group().lower(), value))
            position = _skip_ows(line, position)
        if position == len(line) or line[position] == ",":
            if pairs:
                elements.append(_element(pairs))
                pairs = []
            if position == len(line):
                return elements
        elif line[position] != ";":
            return None
        position = _skip_ows(line, position + 1)


def _skip_ows(line: str, position: int) -> int:
    match = _OWS.match(line, position)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _element(pairs: list[tuple[str, str]]) -> ForwardedElement | None:
    """Build an element from its pairs; ``None`` if it is malformed."""
    names = [name for name, _ in pairs]
    # "Each parameter MUST NOT occur more than once per forwarded-element."
    if len(set(names)) != len(names):
        return None
    found = dict(pairs)
    node = None
    if "for" in found:
        node = parse_node(found["for"])
        if node is None:
            return None
    proto = found.get("proto")
    return ForwardedElement(
        for_=node,
        proto=None if proto is None else proto.lower(),
        host=found.get("host"),
        by=found.get("by"),
    )


def parse_x_forwarded_for(values: Iterable[str]) -> list[Node | None]:
    """Parse the ``X-Forwarded-For`` header lines: comma-separated addresses.

    Args:
        values: every ``X-Forwarded-For`` header line, in the order received.

    Returns:
        The hops, left to right; ``None`` for an entry that is not a node.
    """
    return [parse_node(entry) for entry in parse_x_forwarded(values)]


def parse_x_forwarded(values: Iterable[str]) -> list[str]:
    """Split comma-separated header lines into their non-empty, stripped entries.

    Args:
        values: every line of a header such as ``X-Forwarded-Proto``.

    Returns:
        The entries, left to right.
    """
    return [entry.strip() for line in values for entry in line.split(",") if entry.strip()]


# Trust --------------------------------------------------------------------------------


class TrustedProxies:
    """The proxies whose forwarding headers are believed.

    Args:
        entries: IP addresses and networks in CIDR notation (``"10.0.0.0/8"``),
            ``"unix:"`` for peers on a Unix socket, or ``"*"`` to trust every peer.

    Raises:
        ValueError: if an entry is none of these.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.everyone = False
        self.unix = False
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            if entry.strip() == EVERYONE:
                self.everyone = True
                continue
            if entry.strip() == UNIX:
                self.unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                # 'unix:' is left out of the message: it is the rare case, and
                # the help of the option names it.
                raise ValueError(
                    f"a trusted proxy must be an IP address, a network or '*', got {entry!r}"
                ) from None
        self.networks = tuple(networks)

    def trusts_peer(self, peer: object) -> bool:
        """Tell whether the TCP peer ``(host, port)``, or a Unix socket's peer, is trusted."""
        if isinstance(peer, tuple):
            return peer[0] in self
        # anyio gives a Unix socket's peer as its path, usually "".
        return self.everyone or (self.unix and isinstance(peer, str))

    def __contains__(self, host: object) -> bool:
        """Tell whether ``host`` (an address as text, from a socket or a header) is trusted."""
        if self.everyone:
            return True
        address = _ip(host) if isinstance(host, str) else None
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


@functools.lru_cache(maxsize=64)
def trusted_proxies(entries: tuple[str, ...]) -> TrustedProxies:
    """Return the :class:`TrustedProxies` for ``entries``, built once per server's options.

    Raises:
        ValueError: if an entry is neither ``"*"``, an address nor a network.
    """
    return TrustedProxies(entries)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# Resolving ----------------------------------------------------------------------------

T = TypeVar("T")


def _client_index(hops: Sequence[T | None], is_trusted: Callable[[T], bool]) -> int | None:
    """Index of the right-most hop that is not a trusted proxy (the left-most if all are).

    ``None`` if a malformed hop is met first: its left cannot be believed.
    """
    for index in range(len(hops) - 1, -1, -1):
        hop = hops[index]
        if hop is None:
            return None
        if index == 0 or not is_trusted(hop):
            return index
    return None


def scheme_of(proto: str | None) -> str | None:
    """The WebSocket scheme for a forwarded protocol: ``https`` and ``wss`` give ``wss``.

    Returns:
        ``"ws"``, ``"wss"``, or ``None`` for a protocol that is neither HTTP nor WebSocket.
    """
    return None if proto is None else _SCHEMES.get(proto.strip().lower())


def client_from_headers(
    peer: Any, headers: Headers, trusted: TrustedProxies, scheme: str
) -> tuple[Any, str]:
    """Return the client's address and scheme as a trusted proxy reports them.

    ``Forwarded`` takes precedence: when it is present, ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are ignored, so that a client cannot add one of them
    behind a proxy that writes only the other.

    Args:
        peer: the TCP peer's address, ``(host, port)``, or a Unix socket's path
            (usually ``""``).
        headers: the request's headers.
        trusted: the trusted proxies.
        scheme: ``"ws"`` or ``"wss"`` as seen on the socket.

    Returns:
        ``(address, scheme)``: the address is ``(host, port)``, with port 0
        when the proxy did not say; host may be ``"unknown"`` or an obfuscated
        identifier. When the peer is not trusted, or the headers say nothing
        that can be believed, ``(peer, scheme)`` unchanged.
    """
    if not trusted.trusts_peer(peer):
        return peer, scheme

    def believed(node: Node) -> bool:
        return node.host in trusted

    if "Forwarded" in headers:
        elements = parse_forwarded(headers.get_all("Forwarded"))
        index = _client_index(
            elements, lambda element: element.for_ is not None and believed(element.for_)
        )
        if index is None:
            return peer, scheme
        element = elements[index]
        assert element is not None
        address = peer if element.for_ is None else (element.for_.host, element.for_.port)
        return address, scheme_of(element.proto) or scheme

    protos = parse_x_forwarded(headers.get_all("X-Forwarded-Proto"))
    nodes = parse_x_forwarded_for(headers.get_all("X-Forwarded-For"))
    if not nodes:
        forwarded_scheme = scheme_of(protos[-1]) if protos else None
        return peer, forwarded_scheme or scheme
    index = _client_index(nodes, believed)
    if index is None:
        return peer, scheme
    node = nodes[index]
    assert node is not None
    # One proto per hop when the proxies kept them in step; otherwise the
    # right-most, which the nearest proxy wrote.
    proto = protos[index] if len(protos) == len(nodes) else (protos[-1] if protos else None)
    return (node.host, node.port), scheme_of(proto) or scheme
