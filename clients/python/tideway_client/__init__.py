"""A Python client for Tideway, blocking (``Client``) or asyncio (``AsyncClient``).

``publish`` sends one event and says whether it was accepted or dropped (no topic had a
subscriber); ``publish_batch`` sends many in one request, each with its outcome; both retry
failures that may pass with the same ids, so an event is delivered once. ``subscribe``
yields events from a Server-Sent Events stream and keeps it open: when the connection
drops, or stays silent past the heartbeat timeout, it reconnects with jittered backoff and
resumes after the last event it saw (``Last-Event-ID``). The rules are those of every
Tideway client, written down in docs/clients.md.
"""

from tideway_client._core import (
    BatchEvent,
    BatchOutcome,
    ConnectionState,
    Event,
    Gap,
    GatewayError,
    Published,
    SystemMessage,
    backoff_delay,
    retry_after,
)
from tideway_client.aio import AsyncClient, AsyncSubscription
from tideway_client.client import Client, Subscription
from tideway_client.sse import Block, parse_blocks

__all__ = [
    "AsyncClient",
    "AsyncSubscription",
    "BatchEvent",
    "BatchOutcome",
    "Block",
    "Client",
    "ConnectionState",
    "Event",
    "Gap",
    "GatewayError",
    "Published",
    "Subscription",
    "SystemMessage",
    "backoff_delay",
    "parse_blocks",
    "retry_after",
]
