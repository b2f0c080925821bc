"""The interface every WebSocket extension implements.

A server negotiates extensions from the client's ``Sec-WebSocket-Extensions``
offers: for each offer, in the client's order, each
:class:`ServerExtensionFactory` whose :attr:`~ServerExtensionFactory.name`
matches may accept it and return the :class:`Extension` that then transforms
every frame of the connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..frames import Frame

__all__ = ["Extension", "ExtensionParameter", "ServerExtensionFactory"]

ExtensionParameter = tuple[str, "str | None"]
"""One ``name`` or ``name=value`` parameter of an extension offer."""


class Extension(Protocol):
    """A negotiated extension, applied to every frame of one connection."""

    @property
    def name(self) -> str:
        """The extension's registered name, e.g. ``permessage-deflate``."""
        ...

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        """Transform a frame received from the client.

        :param max_size: the most bytes the decoded payload may have.
        :raises PayloadTooBig: if the decoded payload would exceed ``max_size``.
        :raises ProtocolError: if the frame is invalid for this extension.
        """
        ...

    def encode(self, frame: Frame) -> Frame:
        """Transform a frame about to be sent to the client."""
        ...


class ServerExtensionFactory(Protocol):
    """Negotiates one extension on the server side."""

    @property
    def name(self) -> str:
        """The extension's registered name, matched against the client's offers."""
        ...

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> tuple[list[ExtensionParameter], Extension]:
        """Accept one offer from the client.

        :param params: the offer's parameters.
        :param accepted_extensions: the extensions accepted so far.
        :returns: the parameters to send back and the extension to apply.
        :raises NegotiationError: to decline this offer.
        """
        ...
