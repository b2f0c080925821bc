"""A small byte buffer that generator-based parsers read from.

A parser is a generator: it calls ``yield from reader.read_exact(n)`` (or
another ``read_*`` method) and is suspended with a bare ``yield`` whenever the
bytes it needs have not arrived yet. The owner feeds more bytes with
:meth:`StreamReader.feed_data` and resumes the parser with ``next()``. Any
split of the input gives the same result.
"""

from __future__ import annotations

from collections.abc import Generator

from .masking import apply_mask

__all__ = ["StreamReader"]


class StreamReader:
    """Buffer of received bytes for generator-based parsers."""

    __slots__ = ("_buffer", "_eof", "_offset")

    def __init__(self) -> None:
        self._buffer = bytearray()
        # Bytes before _offset are consumed; compacting lazily avoids a memmove
        # per small read when many frames arrive in one chunk.
        self._offset = 0
        self._eof = False

    def __len__(self) -> int:
        return len(self._buffer) - self._offset

    @property
    def at_eof(self) -> bool:
        """True once :meth:`feed_eof` was called."""
        return self._eof

    def feed_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes.

        :raises EOFError: after :meth:`feed_eof`.
        """
        if self._eof:
            raise EOFError("stream ended")
        if self._offset and self._offset == len(self._buffer):
            self._buffer.clear()
            self._offset = 0
        self._buffer += data

    def feed_eof(self) -> None:
        """Record that no more bytes will arrive."""
        self._eof = True

    def discard(self) -> None:
        """Drop every buffered byte."""
        self._buffer.clear()
        self._offset = 0

    def _take(self, n: int) -> bytes:
        start = self._offset
        end = start + n
        if n > 4096:
            # One copy: slicing the bytearray first would copy twice.
            data = bytes(memoryview(self._buffer)[start:end])
        else:
            data = bytes(self._buffer[start:end])
        self._consume_to(end)
        return data

    def _consume_to(self, end: int) -> None:
        """Mark the bytes before ``end`` (an index into the buffer) consumed."""
        if end == len(self._buffer):
            self._buffer.clear()
            self._offset = 0
        else:
            self._offset = end
            if end > 65536 and end * 2 > len(self._buffer):
                del self._buffer[:end]
                self._offset = 0

    def peek_head(self) -> tuple[int, int]:
        """Return the next two bytes as integers without consuming them.

        The caller checks first that at least two bytes are buffered.
        """
        buffer, offset = self._buffer, self._offset
        return buffer[offset], buffer[offset + 1]

    def peek(self, n: int, skip: int = 0) -> bytes:
        """Return ``n`` buffered bytes without consuming them (fewer if absent).

        Args:
            n: how many bytes to return.
            skip: how many buffered bytes come before them.
        """
        start = self._offset + skip
        return bytes(self._buffer[start : start + n])

    def find(self, sub: bytes, limit: int) -> int:
        """Find ``sub`` within the first ``limit`` buffered bytes; never waits.

        Returns:
            Where ``sub`` starts, counted from the first buffered byte, or -1
            when it is not wholly among those bytes.
        """
        start = self._offset
        position = self._buffer.find(sub, start, start + limit)
        return position if position < 0 else position - start

    def skip(self, n: int) -> None:
        """Drop the next ``n`` bytes; the caller checks first that they are buffered."""
        self._consume_to(self._offset + n)

    def wait_for(self, n: int) -> Generator[None, None, None]:
        """Wait until at least ``n`` bytes are buffered.

        :raises EOFError: if the stream ends first.
        """
        while len(self._buffer) - self._offset < n:
            if self._eof:
                raise EOFError(f"stream ended after {len(self)} of {n} bytes")
            yield

    def read_now(self, n: int) -> bytes | None:
        """Take exactly ``n`` bytes if they are buffered, else ``None``; never waits."""
        if len(self._buffer) - self._offset < n:
            return None
        return self._take(n)

    def read_unmasked(self, n: int, mask: bytes, skip: int = 0) -> bytes:
        """Drop ``skip`` bytes, then take the next ``n`` unmasked; never waits.

        Unmasking (:rfc:`6455#section-5.3`) reads the buffer in place: the
        payload is copied once, into the result. The caller checks first that
        ``skip + n`` bytes are buffered.

        Args:
            n: how many bytes to take.
            mask: the 4-byte mask, as it stands at the first byte taken.
            skip: how many bytes to drop first (a frame's header).

        Returns:
            The ``n`` bytes, XORed with ``mask`` repeated.
        """
        start = self._offset + skip
        end = start + n
        # The view is gone once apply_mask() returns, so the buffer may resize.
        data = apply_mask(memoryview(self._buffer)[start:end], mask)
        self._consume_to(end)
        return data

    def read_exact(self, n: int) -> Generator[None, None, bytes]:
        """Read exactly ``n`` bytes.

        :raises EOFError: if the stream ends first.
        """
        while len(self._buffer) - self._offset < n:
            if self._eof:
                raise EOFError(f"stream ended after {len(self)} of {n} bytes")
            yield
        return self._take(n)

    def read_line(self, limit: int) -> Generator[None, None, bytes]:
        """Read up to and including the next ``\\n``.

        :param limit: most bytes a line may have, terminator included.
        :raises EOFError: if the stream ends first.
        :raises OverflowError: if the line is longer than ``limit``.
        """
        searched = 0
        while True:
            position = self._buffer.find(b"\n", self._offset + searched)
            if position >= 0:
                length = position + 1 - self._offset
                if length > limit:
                    raise OverflowError(f"line longer than {limit} bytes")
                return self._take(length)
            searched = len(self)
            if searched > limit:
                raise OverflowError(f"line longer than {limit} bytes")
            if self._eof:
                raise EOFError(f"stream ended after {searched} bytes without a line end")
            yield
