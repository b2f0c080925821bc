"""HTTP Basic authentication for the opening handshake (RFC 7235, RFC 7617).

Pass ``create_protocol=basic_auth_protocol_factory(...)`` to
:func:`wsserver.serve` (or to the asyncio and Trio front doors) and every
connection must present valid credentials before the WebSocket handshake
proceeds; the handler then finds the authenticated user in
:attr:`BasicAuthWebSocketServerProtocol.username`::

    create_protocol = basic_auth_protocol_factory(
        realm="chat", credentials=("alice", "s3cret")
    )

How each request is answered:

- no ``Authorization`` header: ``401 Unauthorized`` with the challenge
  ``WWW-Authenticate: Basic realm="...", charset="UTF-8"``;
- a well-formed header for another scheme (``Bearer ...``): ``401`` with the
  same challenge, because RFC 7235 section 3.1 tells a server to answer
  credentials it cannot accept with the challenges it supports, so that the
  client may retry with ``Basic``;
- a header that cannot be parsed (several ``Authorization`` headers, no valid
  scheme token, or ``Basic`` credentials that are not base64, lack the colon,
  are not UTF-8 or hold control characters): ``400 Bad Request``, since
  retrying the same bytes cannot succeed;
- wrong credentials: ``401`` with the challenge.

Each refusal is logged once, at INFO level; passwords are never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Any, TypeAlias

from .connection import HTTPResponse, WebSocketServerProtocol
from .sansio import Headers, InvalidHandshake

__all__ = [
    "BasicAuthWebSocketServerProtocol",
    "CheckCredentials",
    "Credentials",
    "InvalidCredentials",
    "basic_auth_protocol_factory",
]

Credentials: TypeAlias = tuple[str, str]
"""A ``(username, password)`` pair."""

CheckCredentials: TypeAlias = Callable[[str, str], "bool | Awaitable[bool]"]
"""``check_credentials(username, password)``, sync or async, returning whether they are valid."""

# RFC 9110 section 5.6.2 (token) and RFC 7235 section 2.1 (token68).
_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_CREDENTIALS_RE = re.compile(rf"({_TOKEN})(?: +(.*))?")
_TOKEN68_RE = re.compile(r"[-._~+/0-9A-Za-z]+=*")
# RFC 7617 section 2: user-id and password contain no control characters.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# RFC 9110 section 5.6.4: what a quoted-string can carry (obs-text left out
# because its meaning depends on a charset the header cannot name).
_REALM_RE = re.compile(r"[\t\x20-\x7e]*")


class InvalidCredentials(InvalidHandshake):
    """The client's credentials were missing, malformed or wrong.

    :attr:`status` is 401 or 400, the status the request was answered with.
    """

    def __init__(self, message: str, status: HTTPStatus) -> None:
        super().__init__(message)
        self.status = status


def _quote(value: str) -> str:
    """Return ``value`` as an HTTP quoted-string (RFC 9110 section 5.6.4)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _check_realm(realm: str) -> str:
    if not isinstance(realm, str):
        raise TypeError(f"realm must be a str, not {type(realm).__name__}")
    if not _REALM_RE.fullmatch(realm):
        raise ValueError("realm must hold printable ASCII characters only")
    return realm


def _digest(password: str) -> bytes:
    # Comparing fixed-size digests hides the expected password's length too.
    return hashlib.sha256(password.encode()).digest()


class BasicAuthWebSocketServerProtocol(WebSocketServerProtocol):
    """A connection that requires HTTP Basic authentication before the handshake.

    Build it through :func:`basic_auth_protocol_factory`, or subclass it and
    override :meth:`check_credentials` (and set :attr:`realm`), then pass the
    subclass as ``create_protocol``.

    :param realm: the protection space named in the challenge; defaults to
        the class attribute :attr:`realm`.
    :param check_credentials: ``check_credentials(username, password)``, sync
        or async; when ``None``, :meth:`check_credentials` refuses everyone
        unless a subclass overrides it.
    :raises TypeError: if ``realm`` is not a :class:`str`.
    :raises ValueError: if ``realm`` holds characters other than printable ASCII.

    Every other argument goes to
    :class:`~wsserver.connection.WebSocketServerProtocol`.
    """

    realm: str = ""
    """The realm sent in the ``WWW-Authenticate`` challenge."""

    username: str | None = None
    """The authenticated username, once the credentials were accepted; ``None`` before."""

    def __init__(
        self,
        *args: Any,
        realm: str | None = None,
        check_credentials: CheckCredentials | None = None,
        **kwargs: Any,
    ) -> None:
        self.realm = _check_realm(self.realm if realm is None else realm)
        self._check_credentials = check_credentials
        super().__init__(*args, **kwargs)

    async def check_credentials(self, username: str, password: str) -> bool:
        """Tell whether ``username`` and ``password`` are valid.

        The default calls the ``check_credentials`` given to the constructor,
        awaiting it if it is a coroutine function, and refuses everything when
        none was given. Override it in a subclass to look credentials up
        elsewhere.

        :param username: the username the client sent.
        :param password: the password the client sent.
        :returns: whether to let the client in.
        """
        if self._check_credentials is None:
            return False
        result = self._check_credentials(username, password)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    async def process_request(
        self, path: str, request_headers: Headers
    ) -> HTTPResponse | None:
        """Answer the request unless it carries valid Basic credentials.

        The parent's :meth:`process_request` runs first: a response it returns
        (a health check, say) is sent as is, without authentication. Then the
        ``Authorization`` header is checked; on success :attr:`username` is set
        and the handshake carries on.

        :param path: the request path and query string.
        :param request_headers: the request's headers.
        :returns: ``None`` to accept; a 401 or 400 response to refuse.
        """
        response = await super().process_request(path, request_headers)
        if response is not None:
            return response

        values = request_headers.get_all("Authorization")
        if not values:
            return self._refuse(HTTPStatus.UNAUTHORIZED, "missing credentials")
        if len(values) > 1:
            return self._refuse(HTTPStatus.BAD_REQUEST, "several Authorization headers")
        match = _CREDENTIALS_RE.fullmatch(values[0])
        if match is None:
            return self._refuse(HTTPStatus.BAD_REQUEST, "malformed Authorization header")
        scheme, token = match.groups()
        if scheme.lower() != "basic":
            # Well-formed, just not a scheme we speak: offer ours (RFC 7235 3.1).
            return self._refuse(
                HTTPStatus.UNAUTHORIZED, f"unsupported authorization scheme {scheme[:20]!r}"
            )
        credentials = _decode_basic(token)
        if isinstance(credentials, str):
            return self._refuse(HTTPStatus.BAD_REQUEST, credentials)
        username, password = credentials
        if not await self.check_credentials(username, password):
            return self._refuse(
                HTTPStatus.UNAUTHORIZED, f"invalid credentials for user {username[:64]!r}"
            )
        self.username = username
        return None

    def _refuse(self, status: HTTPStatus, reason: str) -> HTTPResponse:
        """Log the refusal once and build the response for it."""
        self.logger.info("authentication failed (%d): %s", status.value, reason)
        # Recording why the handshake failed also tells the connection that
        # this refusal has been logged already.
        self.protocol.handshake_exc = InvalidCredentials(reason, status)
        headers = Headers()
        if status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = f'Basic realm={_quote(self.realm)}, charset="UTF-8"'
            body = b"Missing or invalid credentials.\n"
        else:
            body = b"Malformed Authorization header.\n"
        headers["Content-Type"] = "text/plain; charset=utf-8"
        headers["Connection"] = "close"
        return status, headers, body


def _decode_basic(token: str | None) -> tuple[str, str] | str:
    """Decode Basic credentials (RFC 7617 section 2): ``(username, password)``.

    :returns: the pair, or a string saying why ``token`` is malformed.
    """
    if token is None or not _TOKEN68_RE.fullmatch(token):
        return "malformed Basic credentials"
    try:
        user_pass = base64.b64decode(token.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        return "Basic credentials are not valid base64"
    try:
        decoded = user_pass.decode("utf-8")
    except UnicodeDecodeError:
        return "Basic credentials are not valid UTF-8"
    username, colon, password = decoded.partition(":")
    if not colon:
        return "Basic credentials lack the colon between username and password"
    if _CONTROL_RE.search(decoded):
        return "Basic credentials contain control characters"
    return username, password


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(item, str) for item in value)
    )


def _credentials_checker(credentials: object) -> Callable[[str, str], bool]:
    """Turn a pair or an iterable of pairs into a constant-time checker.

    :raises TypeError: if ``credentials`` is not a pair of strings or an
        iterable of such pairs.
    :raises ValueError: if it is empty or names a user twice.
    """
    if _is_pair(credentials):
        pairs: list[Any] = [credentials]
    elif isinstance(credentials, Iterable) and not isinstance(credentials, (str, bytes)):
        pairs = list(credentials)
        if not all(_is_pair(pair) for pair in pairs):
            raise TypeError(
                "credentials must be a (username, password) pair of str "
                "or an iterable of such pairs"
            )
    else:
        raise TypeError(
            "credentials must be a (username, password) pair of str "
            f"or an iterable of such pairs, not {type(credentials).__name__}"
        )
    if not pairs:
        raise ValueError("credentials is empty: nobody could log in")
    digests: dict[str, bytes] = {}
    for username, password in pairs:
        if username in digests:
            raise ValueError(f"credentials name user {username!r} twice")
        digests[username] = _digest(password)
    # Compared when the username is unknown, so that an unknown user costs
    # the same work as a wrong password and does not reveal who exists.
    dummy = _digest("\x00 no such user \x00")

    def check(username: str, password: str) -> bool:
        expected = digests.get(username)
        matches = hmac.compare_digest(_digest(password), dummy if expected is None else expected)
        return matches and expected is not None

    return check


def basic_auth_protocol_factory(
    realm: str | None = None,
    credentials: Credentials | Iterable[Credentials] | None = None,
    check_credentials: CheckCredentials | None = None,
    create_protocol: type[WebSocketServerProtocol] | None = None,
) -> Callable[..., BasicAuthWebSocketServerProtocol]:
    """Build a ``create_protocol`` factory that enforces HTTP Basic authentication.

    Give exactly one of ``credentials`` and ``check_credentials``.
    Passwords in ``credentials`` are compared in constant time.

    :param realm: the realm named in the ``WWW-Authenticate`` challenge;
        defaults to the class's :attr:`~BasicAuthWebSocketServerProtocol.realm`.
    :param credentials: one ``(username, password)`` pair, or an iterable of them.
    :param check_credentials: ``check_credentials(username, password)``, a
        function or a coroutine function returning whether they are valid.
    :param create_protocol: your own
        :class:`~wsserver.connection.WebSocketServerProtocol` subclass, if
        any. The connections are instances of a class deriving from it and
        from :class:`BasicAuthWebSocketServerProtocol`, so your
        ``process_request`` still runs, before authentication.
    :returns: a callable to pass as ``create_protocol=`` to :func:`wsserver.serve`,
        :func:`wsserver.asyncio_io.serve` or :func:`wsserver.trio_io.serve`.
    :raises TypeError: if both or neither of ``credentials`` and
        ``check_credentials`` are given, if ``credentials`` is malformed, if
        ``check_credentials`` is not callable, or if ``create_protocol`` is
        not a :class:`~wsserver.connection.WebSocketServerProtocol` subclass.
    :raises ValueError: if ``credentials`` is empty or names a user twice, or
        if ``realm`` holds characters other than printable ASCII.
    """
    if (credentials is None) == (check_credentials is None):
        raise TypeError("provide either credentials or check_credentials, not both or neither")
    if credentials is not None:
        checker: CheckCredentials = _credentials_checker(credentials)
    else:
        assert check_credentials is not None
        if not callable(check_credentials):
            raise TypeError("check_credentials must be callable")
        checker = check_credentials

    protocol_class: type[BasicAuthWebSocketServerProtocol]
    if create_protocol is None:
        protocol_class = BasicAuthWebSocketServerProtocol
    elif not (
        isinstance(create_protocol, type) and issubclass(create_protocol, WebSocketServerProtocol)
    ):
        raise TypeError("create_protocol must be a WebSocketServerProtocol subclass")
    elif issubclass(create_protocol, BasicAuthWebSocketServerProtocol):
        protocol_class = create_protocol
    else:
        # Authentication first in the MRO: its process_request defers to the
        # user's class (super()) and checks credentials only if that returns None.
        protocol_class = type(
            f"BasicAuth{create_protocol.__name__}",
            (BasicAuthWebSocketServerProtocol, create_protocol),
            {"__module__": create_protocol.__module__},
        )
    if realm is not None:
        _check_realm(realm)
    return functools.partial(protocol_class, realm=realm, check_credentials=checker)
