"""wsserver: a Trio-first, structured-concurrency WebSocket server."""

__version__ = "0.1.0"
