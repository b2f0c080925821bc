"""Proxy headers: who the client is behind a trusted proxy, and never when the peer is not one.

The parsers in :mod:`wsserver._proxy` are tested alone (sync, no I/O); then
``remote_address`` and ``scheme`` are checked end to end on both backends,
with the ``websockets`` client sending the headers a proxy would add.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from websockets.sync.client import unix_connect

import wsserver
from wsserver import Headers
from wsserver._proxy import (
    ForwardedElement,
    Node,
    TrustedProxies,
    client_from_headers,
    parse_forwarded,
    parse_node,
    parse_x_forwarded_for,
)
from wsserver.options import ConnectionOptions

from ..serving import running_server
from .clients import in_thread, open_client

TIMEOUT = 10
LOCAL = TrustedProxies(["127.0.0.1", "::1"])
PROXY = ("127.0.0.1", 40000)


# Nodes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("192.0.2.43", Node("192.0.2.43")),
        ("192.0.2.43:47011", Node("192.0.2.43", 47011)),
        ("[2001:db8:cafe::17]", Node("2001:db8:cafe::17")),
        ("[::1]:4711", Node("::1", 4711)),
        ("2001:db8::17", Node("2001:db8::17")),  # unbracketed, as some X-Forwarded-For
        ("unknown", Node("unknown")),
        ("UNKNOWN:80", Node("unknown", 80)),
        ("_hidden", Node("_hidden")),
        ("_SEVKISEK", Node("_SEVKISEK")),
        ("192.0.2.43:_port1", Node("192.0.2.43", 0)),  # obfuscated port
        ("[::1]:_p", Node("::1", 0)),
    ],
)
def test_node_is_parsed(text: str, node: Node) -> None:
    assert parse_node(text) == node


@pytest.mark.parametrize(
    "text",
    [
        "", "example.com", "192.0.2.300", "192.0.2.43:", "192.0.2.43:65536", "192.0.2.43:8a",
        "[192.0.2.43]", "[::1", "[::1]x", "[::1]:", "::1:4711x", "_", "_a b", "1.2.3.4:5:6",
    ],
)
def test_malformed_node_is_refused(text: str) -> None:
    assert parse_node(text) is None


def test_only_ip_nodes_are_addresses() -> None:
    assert Node("::1").is_ip() and Node("10.1.2.3").is_ip()
    assert not Node("unknown").is_ip() and not Node("_hidden").is_ip()


# Forwarded ----------------------------------------------------------------------------


def test_forwarded_examples_of_rfc_7239_are_parsed() -> None:
    # The examples of RFC 7239 sections 4 and 7.1.
    assert parse_forwarded(['for="_gazonk"']) == [ForwardedElement(for_=Node("_gazonk"))]
    assert parse_forwarded(['For="[2001:db8:cafe::17]:4711"']) == [
        ForwardedElement(for_=Node("2001:db8:cafe::17", 4711))
    ]
    assert parse_forwarded(["for=192.0.2.60;proto=http;by=203.0.113.43"]) == [
        ForwardedElement(for_=Node("192.0.2.60"), proto="http", by="203.0.113.43")
    ]
    assert parse_forwarded(["for=192.0.2.43, for=198.51.100.17"]) == [
        ForwardedElement(for_=Node("192.0.2.43")),
        ForwardedElement(for_=Node("198.51.100.17")),
    ]


def test_forwarded_lines_and_elements_keep_their_order() -> None:
    elements = parse_forwarded(
        ['for=192.0.2.43;proto=HTTPS;host="example.com" , for=10.0.0.1', "for=10.0.0.2"]
    )
    assert elements == [
        ForwardedElement(for_=Node("192.0.2.43"), proto="https", host="example.com"),
        ForwardedElement(for_=Node("10.0.0.1")),
        ForwardedElement(for_=Node("10.0.0.2")),
    ]


def test_forwarded_tolerates_empty_elements_and_pairs() -> None:
    assert parse_forwarded([",for=10.0.0.1;;proto=wss;, ,"]) == [
        ForwardedElement(for_=Node("10.0.0.1"), proto="wss")
    ]


def test_forwarded_quoted_pairs_are_unescaped() -> None:
    assert parse_forwarded(['for="\\[::1\\]:80";host="a\\"b"']) == [
        ForwardedElement(for_=Node("::1", 80), host='a"b')
    ]


@pytest.mark.parametrize(
    "line",
    [
        'for="192.0.2.43',  # unterminated quote
        "for",  # no value
        "for=",  # empty value
        "=192.0.2.43",  # no name
        "for=192.0.2.43 proto=http",  # no separator
        'for="192.0.2.43"x',  # junk after a quoted value
        "for=a b",
    ],
)
def test_malformed_forwarded_line_becomes_one_unknown_hop(line: str) -> None:
    assert parse_forwarded(["for=10.0.0.1", line, "for=10.0.0.2"]) == [
        ForwardedElement(for_=Node("10.0.0.1")), None, ForwardedElement(for_=Node("10.0.0.2"))
    ]


@pytest.mark.parametrize(
    "element",
    ["for=10.0.0.1;for=10.0.0.2", "for=example.com", "for=10.0.0.1;FOR=10.0.0.2"],
)
def test_malformed_forwarded_element_is_marked(element: str) -> None:
    # A repeated parameter is forbidden by RFC 7239; a host name is not a node.
    assert parse_forwarded([f"for=10.0.0.9, {element}"]) == [
        ForwardedElement(for_=Node("10.0.0.9")), None
    ]


def test_x_forwarded_for_is_split_across_lines() -> None:
    assert parse_x_forwarded_for(["203.0.113.7, 10.0.0.1", " [::1]:80 ,", "bogus"]) == [
        Node("203.0.113.7"), Node("10.0.0.1"), Node("::1", 80), None
    ]


# Trust ----------------------------------------------------------------------------------


def test_trusted_proxies_are_addresses_and_networks() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"])
    assert "10.200.0.1" in trusted and "192.0.2.1" in trusted and "2001:db8::5" in trusted
    assert "192.0.2.2" not in trusted and "11.0.0.1" not in trusted and "::1" not in trusted
    # A dual-stack socket reports IPv4 peers as mapped IPv6 addresses.
    assert "::ffff:10.0.0.1" in trusted
    assert "" not in trusted and "unknown" not in trusted and "_hidden" not in trusted


def test_star_trusts_every_peer_even_a_unix_socket() -> None:
    trusted = TrustedProxies(["*"])
    assert "203.0.113.7" in trusted and "" in trusted
    assert trusted.trusts_peer(("203.0.113.7", 1)) and trusted.trusts_peer("")


def test_unix_entry_trusts_unix_socket_peers_only() -> None:
    trusted = TrustedProxies(["unix:"])
    assert trusted.trusts_peer("") and trusted.trusts_peer("/run/proxy.sock")
    assert not trusted.trusts_peer(("127.0.0.1", 5)) and not trusted.trusts_peer(None)
    assert not TrustedProxies(["127.0.0.1"]).trusts_peer("")


def test_bad_trusted_proxy_is_refused() -> None:
    with pytest.raises(ValueError, match="got 'localhost'"):
        TrustedProxies(["localhost"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.1, 10.1.0.0/16", ("10.0.0.1", "10.1.0.0/16")),
        (["*"], ("*",)),
        ((), ()),
    ],
)
def test_forwarded_allow_ips_takes_a_sequence_or_a_comma_separated_string(
    value: Any, expected: tuple[str, ...]
) -> None:
    assert ConnectionOptions(forwarded_allow_ips=value).forwarded_allow_ips == expected


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"forwarded_allow_ips": "10.0.0.256"}, ValueError, "forwarded_allow_ips: "),
        ({"forwarded_allow_ips": ["10.0.0.1/33"]}, ValueError, "forwarded_allow_ips: "),
        ({"forwarded_allow_ips": 10}, TypeError, "forwarded_allow_ips must be a sequence"),
        ({"forwarded_allow_ips": [10]}, TypeError, "forwarded_allow_ips must be a sequence"),
        ({"proxy_headers": "yes"}, TypeError, "proxy_headers must be True or False"),
    ],
)
def test_bad_proxy_options_are_refused(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ConnectionOptions(**kwargs)


def test_proxy_headers_are_off_and_trust_localhost_by_default() -> None:
    options = ConnectionOptions()
    assert options.proxy_headers is False
    assert options.forwarded_allow_ips == ("127.0.0.1", "::1", "unix:")


# Resolving the client -----------------------------------------------------------------


def resolve(headers: list[tuple[str, str]], peer: Any = PROXY, scheme: str = "ws") -> Any:
    return client_from_headers(peer, Headers(headers), LOCAL, scheme)


def test_untrusted_peer_is_never_believed() -> None:
    peer = ("203.0.113.9", 5555)
    headers = [("Forwarded", "for=192.0.2.1;proto=https"), ("X-Forwarded-For", "192.0.2.1")]
    assert resolve(headers, peer=peer) == (peer, "ws")


def test_forwarded_for_and_proto_from_a_trusted_peer() -> None:
    assert resolve([("Forwarded", 'for="[2001:db8::17]:4711";proto=https')]) == (
        ("2001:db8::17", 4711), "wss"
    )


def test_the_client_is_the_right_most_untrusted_hop() -> None:
    # The client made up the first hop; 198.51.100.7 connected to our proxy.
    headers = [("Forwarded", "for=192.0.2.66, for=198.51.100.7;proto=https, for=127.0.0.1")]
    assert resolve(headers) == (("198.51.100.7", 0), "wss")
    xff = [("X-Forwarded-For", "192.0.2.66, 198.51.100.7, ::1")]
    assert resolve(xff) == (("198.51.100.7", 0), "ws")


def test_hops_that_are_all_trusted_give_the_left_most() -> None:
    assert resolve([("X-Forwarded-For", "127.0.0.1, ::1")]) == (("127.0.0.1", 0), "ws")


def test_obfuscated_and_unknown_clients_are_reported_as_such() -> None:
    assert resolve([("Forwarded", "for=_hidden:_p")]) == (("_hidden", 0), "ws")
    assert resolve([("Forwarded", "for=unknown")]) == (("unknown", 0), "ws")


def test_malformed_hop_keeps_the_peer_address() -> None:
    # Nothing left of a hop that cannot be read can be believed.
    assert resolve([("Forwarded", 'for=192.0.2.1, for="10.0.0.1')]) == (PROXY, "ws")
    assert resolve([("X-Forwarded-For", "192.0.2.1, not-an-address")]) == (PROXY, "ws")


def test_malformed_hop_left_of_the_client_does_not_matter() -> None:
    headers = [("Forwarded", 'for="junk'), ("Forwarded", "for=192.0.2.1")]
    assert resolve(headers) == (("192.0.2.1", 0), "ws")


def test_forwarded_wins_over_x_forwarded_headers() -> None:
    headers = [
        ("X-Forwarded-For", "192.0.2.99"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=192.0.2.1"),
    ]
    assert resolve(headers) == (("192.0.2.1", 0), "ws")
    # Even a malformed Forwarded: the client may have sent the X- headers.
    headers[2] = ("Forwarded", "for=")
    assert resolve(headers) == (PROXY, "ws")


def test_element_without_for_keeps_the_peer_and_gives_the_scheme() -> None:
    assert resolve([("Forwarded", "proto=https")]) == (PROXY, "wss")


def test_x_forwarded_proto_follows_its_hop_or_the_nearest_proxy() -> None:
    in_step = [("X-Forwarded-For", "192.0.2.1, 127.0.0.1"), ("X-Forwarded-Proto", "https, http")]
    assert resolve(in_step) == (("192.0.2.1", 0), "wss")
    alone = [("X-Forwarded-For", "192.0.2.1, 127.0.0.1"), ("X-Forwarded-Proto", "https")]
    assert resolve(alone) == (("192.0.2.1", 0), "wss")
    assert resolve([("X-Forwarded-Proto", "wss")]) == (PROXY, "wss")


def test_unknown_proto_is_ignored_and_tls_is_kept() -> None:
    assert resolve([("Forwarded", "for=192.0.2.1;proto=gopher")], scheme="wss") == (
        ("192.0.2.1", 0), "wss"
    )
    assert resolve([("X-Forwarded-Proto", "http")], scheme="wss") == (PROXY, "ws")


def test_unix_socket_peer_is_trusted_with_unix_or_star_only() -> None:
    headers = Headers([("X-Forwarded-For", "192.0.2.1")])
    assert client_from_headers("", headers, LOCAL, "ws") == ("", "ws")
    for entry in ["unix:", "*"]:
        assert client_from_headers("", headers, TrustedProxies([entry]), "ws") == (
            ("192.0.2.1", 0), "ws"
        )


# End to end -----------------------------------------------------------------------------


async def seen_by_handler(headers: list[tuple[str, str]], **options: Any) -> tuple[Any, str]:
    """Connect with ``headers``; return the handler's ``remote_address`` and ``scheme``."""
    seen: list[tuple[Any, str]] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        seen.append((ws.remote_address, ws.scheme))

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, **options) as (_, uri):
            client = await open_client(uri, additional_headers=headers)
            await in_thread(client.close)
    return seen[0]


@pytest.mark.anyio
async def test_headers_are_ignored_unless_proxy_headers_is_on() -> None:
    address, scheme = await seen_by_handler([("X-Forwarded-For", "192.0.2.1")])
    assert address[0] == "127.0.0.1" and address[1] > 0
    assert scheme == "ws"


@pytest.mark.anyio
async def test_trusted_proxy_gives_the_client_address_and_scheme() -> None:
    headers = [("Forwarded", 'for="[2001:db8::17]:4711";proto=https')]
    assert await seen_by_handler(headers, proxy_headers=True) == (("2001:db8::17", 4711), "wss")
    headers = [("X-Forwarded-For", "192.0.2.1"), ("X-Forwarded-Proto", "https")]
    assert await seen_by_handler(headers, proxy_headers=True) == (("192.0.2.1", 0), "wss")


@pytest.mark.anyio
async def test_peer_outside_forwarded_allow_ips_is_not_believed() -> None:
    address, scheme = await seen_by_handler(
        [("X-Forwarded-For", "192.0.2.1"), ("X-Forwarded-Proto", "https")],
        proxy_headers=True,
        forwarded_allow_ips=["10.0.0.0/8"],
    )
    assert address[0] == "127.0.0.1" and (scheme == "ws")


@pytest.mark.anyio
async def test_forged_hop_before_the_proxy_is_skipped() -> None:
    # The client claims 192.0.2.66; the proxy (10.1.2.3, trusted) saw 198.51.100.7.
    headers = [("X-Forwarded-For", "192.0.2.66, 198.51.100.7, 10.1.2.3")]
    address, _ = await seen_by_handler(
        headers, proxy_headers=True, forwarded_allow_ips="127.0.0.1, 10.0.0.0/8"
    )
    assert address == ("198.51.100.7", 0)


@pytest.mark.anyio
async def test_proxy_on_a_unix_socket_is_trusted_by_default(tmp_path: Path) -> None:
    seen: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        seen.append(ws.remote_address)

    def client(path: str) -> None:
        headers = {"X-Forwarded-For": "192.0.2.1"}
        with unix_connect(path, "ws://localhost/", additional_headers=headers, proxy=None):
            pass

    path = str(tmp_path / "ws.sock")
    with anyio.fail_after(TIMEOUT):
        for proxy_headers in (True, False):
            async with anyio.create_task_group() as task_group:
                server = await task_group.start(
                    functools.partial(
                        wsserver.unix_serve, handler, path=path, proxy_headers=proxy_headers
                    )
                )
                await in_thread(client, path)
                server.close()
    assert seen == [("192.0.2.1", 0), ""]


@pytest.mark.anyio
async def test_open_log_names_the_forwarded_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="wsserver")
    await seen_by_handler([("X-Forwarded-For", "192.0.2.1")], proxy_headers=True)
    opened = [r.getMessage() for r in caplog.records if "connection open" in r.getMessage()]
    assert len(opened) == 1 and "192.0.2.1:0" in opened[0]


@pytest.mark.anyio
async def test_scheme_is_wss_over_tls_unless_a_trusted_proxy_says_http() -> None:
    authority = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_ssl)
    server_ssl.num_tickets = 0  # see tests/io/test_tls_unix.py: a client-side race
    client_ssl = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    authority.configure_trust(client_ssl)
    seen: list[str] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        seen.append(ws.scheme)

    headers = [("X-Forwarded-Proto", "http")]
    with anyio.fail_after(TIMEOUT):
        for proxy_headers in (False, True):
            async with running_server(handler, ssl=server_ssl, proxy_headers=proxy_headers) as (
                _, uri
            ):
                client = await open_client(
                    uri.replace("ws://", "wss://"), ssl=client_ssl, additional_headers=headers
                )
                await in_thread(client.close)
    assert seen == ["wss", "ws"]
