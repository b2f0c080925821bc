"""The Redis fixture."""

from tests.pubsub.support import redis_server

__all__ = ["redis_server"]
