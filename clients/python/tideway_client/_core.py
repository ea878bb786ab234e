"""What the sync and asyncio clients share: the messages, the rules of docs/clients.md
(backoff, Retry-After, tokens, states) and the reading of answers. No I/O here."""

from __future__ import annotations

import email.utils
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from tideway_client.sse import parse_blocks

ConnectionState = Literal["connecting", "open", "reconnecting", "closed"]


@dataclass(frozen=True)
class Published:
    """What became of a publish: accepted on these topics (with sequence numbers), or
    dropped because no topic had a subscriber."""

    accepted: bool
    topics: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class BatchEvent:
    """One event of a batch: its topics, id, data and SSE type."""

    topics: Sequence[str]
    id: str
    data: str
    event: str | None = None


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one event of a batch: ``accepted`` (with its topics and sequence
    numbers), ``dropped``, ``error`` (with the gateway's code and message) or ``skipped``
    (another event of an atomic batch was refused)."""

    status: str
    topics: tuple[tuple[str, int], ...] = ()
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Event:
    """An event a publisher sent."""

    topic: str
    id: str
    event: str | None
    data: str


@dataclass(frozen=True)
class Gap:
    """Events of ``topics`` may be missing here (``tideway.gap``, see docs/delivery.md)."""

    reason: str
    topics: tuple[str, ...]
    last_event_id: str | None


@dataclass(frozen=True)
class SystemMessage:
    """A message of the gateway's own (``tideway.gap``, ``tideway.drain``, ...); ``gap``
    is filled for ``tideway.gap``."""

    event: str
    data: str
    gap: Gap | None = None


class GatewayError(Exception):
    """The gateway answered with an error."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        #: The wait the gateway asked for (``Retry-After``), in seconds.
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later: 408, 429 or 5xx."""
        return self.status in (408, 429) or self.status >= 500


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """The wait before try number ``attempt`` (0 for the first retry): uniformly random
    below ``min(cap, base * 2**attempt)``, so clients cut off together come back spread out."""
    ceiling: float = min(cap, base * 2.0 ** min(attempt, 30))
    return rand() * ceiling


def retry_after(value: str | None, cap: float, now: float | None = None) -> float | None:
    """The wait, in seconds, a ``Retry-After`` value asks for (seconds or an HTTP date),
    capped; ``None`` if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), cap)
    try:
        when = email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(when - (time.time() if now is None else now), 0.0), cap)


def gateway_error(response: httpx.Response) -> GatewayError:
    wait = retry_after(response.headers.get("retry-after"), 60.0)
    try:
        body = response.json()["error"]
        return GatewayError(response.status_code, str(body["code"]), str(body["message"]), wait)
    except (ValueError, KeyError, TypeError):
        return GatewayError(response.status_code, "unknown", response.text, wait)


PUBLISH_BASE = 0.1
PUBLISH_CAP = 5.0


def publish_wait(attempt: int, error: Exception, rand: Callable[[], float]) -> float | None:
    """How long to wait before sending a failed publish again, or ``None`` if it must
    not be: network errors, timeouts, 408, 429 and 5xx are retried."""
    if isinstance(error, GatewayError):
        if not error.retryable:
            return None
        if error.retry_after is not None:
            return error.retry_after
    elif not isinstance(error, httpx.TransportError):
        return None
    return backoff_delay(attempt, PUBLISH_BASE, PUBLISH_CAP, rand)


def publish_request(
    topics: Sequence[str], event_id: str, event: str | None, api_key: str | None
) -> dict[str, str]:
    headers = {"x-sse-topic": ",".join(topics), "x-sse-id": event_id}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    if event:
        headers["x-sse-event"] = event
    return headers


def published(reply: Any) -> Published:
    if reply["status"] == "dropped":
        return Published(accepted=False)
    return Published(accepted=True, topics=_seqs(reply["topics"]))


def batch_body(events: Sequence[BatchEvent], atomic: bool) -> dict[str, Any]:
    return {
        "events": [
            {"topics": list(e.topics), "id": e.id, "data": e.data}
            | ({"event": e.event} if e.event else {})
            for e in events
        ],
        "atomic": atomic,
    }


def batch_outcomes(reply: Any) -> list[BatchOutcome]:
    outcomes = []
    for result in reply["results"]:
        error = result.get("error") or {}
        outcomes.append(
            BatchOutcome(
                status=str(result["status"]),
                topics=_seqs(result.get("topics", [])),
                code=str(error["code"]) if "code" in error else None,
                message=str(error["message"]) if "message" in error else None,
            )
        )
    return outcomes


def _seqs(topics: Any) -> tuple[tuple[str, int], ...]:
    return tuple((str(t["topic"]), int(t["seq"])) for t in topics)


class Refused(Exception):
    """Internal: the gateway refused a connect in a way worth trying again."""


class Session:
    """One subscription's state between connects: where to resume, which token, how long
    to wait, which state it is in. The sync and asyncio subscriptions drive it."""

    def __init__(
        self,
        topics: Sequence[str],
        *,
        last_event_id: str | None,
        min_backoff: float,
        max_backoff: float,
        token: str | None,
        has_provider: bool,
        tenant: str | None,
        on_state: Callable[[ConnectionState], None] | None,
        rand: Callable[[], float],
    ) -> None:
        self.last_event_id = last_event_id
        self.state: ConnectionState = "connecting"
        self.params: list[tuple[str, str | int | float | bool | None]] = [
            ("topic", t) for t in topics
        ]
        if tenant:
            self.params.append(("tenant", tenant))
        self.token = token
        self.need_token = has_provider
        self._has_provider = has_provider
        self._refused_tokens = 0
        self._attempt = 0
        self._base = min_backoff
        self._cap = max_backoff
        self._on_state = on_state
        self._rand = rand
        self._buffer = ""

    def set_state(self, state: ConnectionState) -> None:
        if self.state != state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)

    def headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream"}
        if self.last_event_id:
            headers["last-event-id"] = self.last_event_id
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def wait(self, asked: float | None) -> float:
        """The wait before the next connect."""
        if asked is not None:
            return asked
        delay = backoff_delay(self._attempt, self._base, self._cap, self._rand)
        self._attempt += 1
        return delay

    def opened(self) -> None:
        self._attempt = 0
        self._refused_tokens = 0
        self._buffer = ""
        self.set_state("open")

    def refused(self, error: GatewayError) -> tuple[bool, float | None]:
        """After a refused connect: whether to wait before the next (``False`` when a
        fresh token is to be tried at once) and what the gateway asked; raises the error
        when it is final."""
        if error.status == 401 and self._has_provider:
            self._refused_tokens += 1
            if self._refused_tokens == 1:
                self.need_token = True
                return False, None
        if not error.retryable:
            self.set_state("closed")
            raise error
        return True, error.retry_after

    def feed(self, text: str) -> list[Event | SystemMessage]:
        """The messages ``text`` completes."""
        self._buffer += text
        blocks, self._buffer = parse_blocks(self._buffer)
        messages: list[Event | SystemMessage] = []
        for block in blocks:
            retry = block.fields.get("retry")
            if retry is not None and re.fullmatch(r"[0-9]+", retry):
                self._base = int(retry) / 1000
            if block.data is None:
                continue
            if block.event and block.event.startswith("tideway."):
                if block.event == "tideway.revoked" and self._has_provider:
                    self.need_token = True
                messages.append(_system(block.event, block.data))
                continue
            self.last_event_id = block.id
            messages.append(
                Event(
                    topic=block.fields.get("topic", ""),
                    id=block.id or "",
                    event=block.event,
                    data=block.data,
                )
            )
        return messages


def _system(event: str, data: str) -> SystemMessage:
    if event != "tideway.gap":
        return SystemMessage(event, data)
    try:
        body = json.loads(data)
        gap = Gap(
            reason=str(body.get("reason", "")),
            topics=tuple(str(t) for t in body.get("topics", [])),
            last_event_id=body.get("lastEventId"),
        )
    except (ValueError, AttributeError):
        return SystemMessage(event, data)
    return SystemMessage(event, data, gap)
