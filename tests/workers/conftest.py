"""The Redis fixture, shared with tests/pubsub."""

from tests.pubsub.support import redis_server

__all__ = ["redis_server"]
