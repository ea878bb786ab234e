"""A Python client for Tideway.

``Client.publish`` sends one event and says whether it was accepted or dropped (no topic had
a subscriber); ``Client.publish_batch`` sends many in one request, each with its outcome. ``Client.subscribe`` yields events from a Server-Sent Events stream and keeps
it open: when the connection drops, or stays silent past the heartbeat timeout, it
reconnects with backoff and resumes after the last event it saw (``Last-Event-ID``).
"""

from tideway_client.client import (
    BatchEvent,
    BatchOutcome,
    Client,
    Event,
    GatewayError,
    Published,
    Subscription,
    SystemMessage,
)
from tideway_client.sse import Block, parse_blocks

__all__ = [
    "BatchEvent",
    "BatchOutcome",
    "Block",
    "Client",
    "Event",
    "GatewayError",
    "Published",
    "Subscription",
    "SystemMessage",
    "parse_blocks",
]
