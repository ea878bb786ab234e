"""Publish and subscribe over HTTP with httpx."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import httpx

from tideway_client.sse import parse_blocks


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
class SystemMessage:
    """A message of the gateway's own (``tideway.gap``, ``tideway.drain``, ...)."""

    event: str
    data: str


class GatewayError(Exception):
    """The gateway answered with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _error(response: httpx.Response) -> GatewayError:
    try:
        body = response.json()["error"]
        return GatewayError(response.status_code, str(body["code"]), str(body["message"]))
    except (ValueError, KeyError, TypeError):
        return GatewayError(response.status_code, "unknown", response.text)


class Client:
    """A Tideway gateway at ``base_url``; publishers need an API key, subscribers do not."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key

    def publish(
        self, topics: Sequence[str], event_id: str, data: str, event: str | None = None
    ) -> Published:
        """Publishes ``data`` with ``event_id`` (and SSE type ``event``) to ``topics``."""
        headers = {"x-sse-topic": ",".join(topics), "x-sse-id": event_id}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        if event:
            headers["x-sse-event"] = event
        response = httpx.post(
            f"{self.base_url}/v1/publish", headers=headers, content=data.encode("utf-8")
        )
        if response.is_error:
            raise _error(response)
        reply = response.json()
        if reply["status"] == "dropped":
            return Published(accepted=False)
        topics_seq = tuple((str(t["topic"]), int(t["seq"])) for t in reply["topics"])
        return Published(accepted=True, topics=topics_seq)

    def publish_batch(
        self, events: Sequence[BatchEvent], *, atomic: bool = False
    ) -> list[BatchOutcome]:
        """Publishes ``events`` in one request, in order (events on one topic arrive in
        this order), and returns each one's outcome. With ``atomic``, every event is
        published or none is, and a refusal raises ``GatewayError``."""
        body = {
            "events": [
                {"topics": list(e.topics), "id": e.id, "data": e.data}
                | ({"event": e.event} if e.event else {})
                for e in events
            ],
            "atomic": atomic,
        }
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        response = httpx.post(f"{self.base_url}/v1/publish/batch", headers=headers, json=body)
        if response.is_error:
            raise _error(response)
        outcomes = []
        for result in response.json()["results"]:
            error = result.get("error") or {}
            outcomes.append(
                BatchOutcome(
                    status=str(result["status"]),
                    topics=tuple(
                        (str(t["topic"]), int(t["seq"])) for t in result.get("topics", [])
                    ),
                    code=str(error["code"]) if "code" in error else None,
                    message=str(error["message"]) if "message" in error else None,
                )
            )
        return outcomes

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        last_event_id: str | None = None,
        heartbeat_timeout: float = 45.0,
        max_backoff: float = 10.0,
        token: str | None = None,
    ) -> Subscription:
        """Opens a subscription to ``topics`` now (raising ``GatewayError`` if the gateway
        refuses it); iterate it for events. It reconnects and resumes by itself."""
        return Subscription(
            self.base_url, topics, last_event_id, heartbeat_timeout, max_backoff, token
        )


class Subscription:
    """An open SSE subscription; iterating yields events and the gateway's own messages."""

    def __init__(
        self,
        base_url: str,
        topics: Sequence[str],
        last_event_id: str | None,
        heartbeat_timeout: float,
        max_backoff: float,
        token: str | None,
    ) -> None:
        self.last_event_id = last_event_id
        self._url = f"{base_url}/v1/stream"
        self._params: list[tuple[str, str | int | float | bool | None]] = [
            ("topic", t) for t in topics
        ]
        self._token = token
        self._max_backoff = max_backoff
        self._http = httpx.Client(timeout=httpx.Timeout(10.0, read=heartbeat_timeout))
        self._response: httpx.Response | None = self._open()

    def _open(self) -> httpx.Response:
        headers = {"accept": "text/event-stream"}
        if self.last_event_id:
            headers["last-event-id"] = self.last_event_id
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        request = self._http.build_request("GET", self._url, params=self._params, headers=headers)
        response = self._http.send(request, stream=True)
        if response.status_code != 200:
            response.read()
            response.close()
            raise _error(response)
        return response

    def close(self) -> None:
        """Closes the stream."""
        if self._response is not None:
            self._response.close()
        self._http.close()

    def __iter__(self) -> Iterator[Event | SystemMessage]:
        delay = 0.25
        while True:
            try:
                response = self._response or self._open()
                self._response = response
                delay = 0.25
                buffer = ""
                for chunk in response.iter_text():
                    buffer += chunk
                    blocks, buffer = parse_blocks(buffer)
                    for block in blocks:
                        if block.data is None:
                            continue
                        if block.event and block.event.startswith("tideway."):
                            yield SystemMessage(block.event, block.data)
                            continue
                        self.last_event_id = block.id
                        yield Event(
                            topic=block.fields.get("topic", ""),
                            id=block.id or "",
                            event=block.event,
                            data=block.data,
                        )
            except GatewayError as error:
                if 400 <= error.status < 500 and error.status != 429:
                    raise
            except httpx.TransportError:
                pass  # dropped or silent too long: back off and resume
            if self._response is not None:
                self._response.close()
                self._response = None
            time.sleep(delay)
            delay = min(delay * 2, self._max_backoff)
