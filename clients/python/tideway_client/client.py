"""The blocking client: publish and subscribe over HTTP with httpx."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import httpx

from tideway_client._core import (
    BatchEvent,
    BatchOutcome,
    ConnectionState,
    Event,
    GatewayError,
    Published,
    Session,
    SystemMessage,
    batch_body,
    batch_outcomes,
    gateway_error,
    publish_request,
    publish_wait,
    published,
)

TokenProvider = Callable[[], str]


class Client:
    """A Tideway gateway at ``base_url``; publishers need an API key, subscribers do not.

    Publishes give up on an exchange after ``timeout`` seconds and are sent again, with
    the same ids, after a failure that may pass (network errors, timeouts, 408, 429, 5xx)
    up to ``retries`` times. ``sleep`` and ``rand`` are for tests (a fake clock)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.retries = retries
        self._sleep = sleep
        self._rand = rand
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        """Closes the kept-alive publishing connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _post(self, path: str, headers: dict[str, str], **body: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.post(f"{self.base_url}{path}", headers=headers, **body)
                if not response.is_error:
                    return response.json()
                error: Exception = gateway_error(response)
            except httpx.TransportError as transport:
                error = transport
            wait = publish_wait(attempt, error, self._rand)
            if wait is None or attempt >= self.retries:
                raise error
            self._sleep(wait)
            attempt += 1

    def publish(
        self, topics: Sequence[str], event_id: str, data: str, event: str | None = None
    ) -> Published:
        """Publishes ``data`` with ``event_id`` (and SSE type ``event``) to ``topics``."""
        headers = publish_request(topics, event_id, event, self.api_key)
        return published(self._post("/v1/publish", headers, content=data.encode("utf-8")))

    def publish_batch(
        self, events: Sequence[BatchEvent], *, atomic: bool = False
    ) -> list[BatchOutcome]:
        """Publishes ``events`` in one request, in order (events on one topic arrive in
        this order), and returns each one's outcome. With ``atomic``, every event is
        published or none is, and a refusal raises ``GatewayError``. A store error stops
        the batch: that event and every later one come back with status ``error``, code
        ``store_unavailable``; send them again, in order, from the first (those that did
        land are answered as retries)."""
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        reply = self._post("/v1/publish/batch", headers, json=batch_body(events, atomic))
        return batch_outcomes(reply)

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        last_event_id: str | None = None,
        heartbeat_timeout: float = 45.0,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        tenant: str | None = None,
        on_state: Callable[[ConnectionState], None] | None = None,
    ) -> Subscription:
        """Subscribes to ``topics``: returns once the stream is open, retrying while the
        gateway is unreachable or busy, and raises ``GatewayError`` if it refuses (a bad
        topic, a missing token). Iterate it for messages; it reconnects and resumes by
        itself. ``token_provider`` is called for a token before the first connect and
        again after the gateway revoked or refused the last one."""
        session = Session(
            topics,
            last_event_id=last_event_id,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            token=token,
            has_provider=token_provider is not None,
            tenant=tenant,
            on_state=on_state,
            rand=self._rand,
        )
        return Subscription(self, session, heartbeat_timeout, token_provider)


class Subscription:
    """An open SSE subscription; iterating yields events and the gateway's own messages."""

    def __init__(
        self,
        client: Client,
        session: Session,
        heartbeat_timeout: float,
        token_provider: TokenProvider | None,
    ) -> None:
        self._client = client
        self._session = session
        self._provider = token_provider
        self._url = f"{client.base_url}/v1/stream"
        self._http = httpx.Client(timeout=httpx.Timeout(10.0, read=heartbeat_timeout))
        self._response: httpx.Response | None = None
        self._connect(wait=False)

    @property
    def last_event_id(self) -> str | None:
        """The id a reconnect resumes after."""
        return self._session.last_event_id

    @property
    def state(self) -> ConnectionState:
        """Where the subscription stands."""
        return self._session.state

    def _connect(self, *, wait: bool) -> None:
        session = self._session
        asked: float | None = None
        while True:
            if wait:
                self._client._sleep(session.wait(asked))
            wait, asked = True, None
            if session.need_token and self._provider is not None:
                session.token = self._provider()
                session.need_token = False
            try:
                request = self._http.build_request(
                    "GET", self._url, params=session.params, headers=session.headers()
                )
                response = self._http.send(request, stream=True)
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                self._response = response
                session.opened()
                return
            response.read()
            response.close()
            wait, asked = session.refused(gateway_error(response))

    def close(self) -> None:
        """Closes the stream."""
        if self._response is not None:
            self._response.close()
            self._response = None
        self._http.close()
        self._session.set_state("closed")

    def __iter__(self) -> Iterator[Event | SystemMessage]:
        try:
            while True:
                if self._response is None:
                    self._session.set_state("reconnecting")
                    self._connect(wait=True)
                response = self._response
                assert response is not None
                try:
                    for chunk in response.iter_text():
                        yield from self._session.feed(chunk)
                except httpx.TransportError:
                    pass  # dropped or silent too long: back off and resume
                finally:
                    response.close()
                    self._response = None
        finally:
            self.close()


__all__ = ["Client", "GatewayError", "Subscription"]
