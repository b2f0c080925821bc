"""Sans-I/O WebSocket server protocol: bytes in, events and bytes out."""
