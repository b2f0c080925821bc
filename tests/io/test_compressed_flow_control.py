"""max_queue holds for compressed traffic too, whatever one socket read inflates to."""

from __future__ import annotations

import zlib
from typing import Any

import anyio
import pytest

from wsserver._receiving import INFLATE_SLICE_BYTES

from ..conformance.rawclient import RawClient, frame_bytes
from ..serving import running_server
from .clients import port_of

pytestmark = pytest.mark.anyio

MAX_QUEUE = 2
MESSAGE_BYTES = 256 * 1024


def compressed_message(size: int) -> bytes:
    """A permessage-deflate payload of ``size`` zero bytes, as a client sends it."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(bytes(size)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


async def test_compressed_burst_cannot_queue_more_than_max_queue_messages() -> None:
    # One burst, a few hundred bytes on the wire, that would inflate to 40
    # messages of 256 KiB (10 MiB) if parsed in one go.
    payload = compressed_message(MESSAGE_BYTES)
    burst = b"".join(frame_bytes(0x2, payload, rsv1=True) for _ in range(40))
    assert len(burst) < 64 * 1024
    # Feeding stops once max_queue messages wait; the slice being fed when
    # that happens may still hold a few more frames, and no more.
    frame_size = len(frame_bytes(0x2, payload, rsv1=True))
    bound = MAX_QUEUE + INFLATE_SLICE_BYTES // frame_size + 1
    assert bound < 10
    queued: list[int] = []
    release = anyio.Event()

    async def slow_reader(websocket: Any) -> None:
        await release.wait()
        received = 0
        while received < 40:
            queued.append(len(websocket._inbox._messages))  # what waits unread
            message = await websocket.recv()
            assert message == bytes(MESSAGE_BYTES)
            received += 1
        await websocket.send("done")

    with anyio.fail_after(8):
        async with running_server(
            slow_reader, max_queue=MAX_QUEUE, ping_interval=None
        ) as (server, uri), RawClient.connect(
            port_of(uri), extensions="permessage-deflate"
        ) as client:
            assert client.extensions, "permessage-deflate not negotiated"
            await client.send_raw(burst)
            await anyio.sleep(0.3)  # let the background reader do its worst
            (websocket,) = server.websockets
            try:
                assert len(websocket._inbox._messages) <= bound
            finally:
                release.set()
            frame = await client.recv_frame()
            assert frame is not None
    assert max(queued) <= bound
