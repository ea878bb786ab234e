"""The asyncio client: the same calls as ``tideway_client.Client``, awaited."""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Self

import httpx

from tideway_client._core import (
    BatchEvent,
    BatchOutcome,
    ConnectionState,
    Event,
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

AsyncTokenProvider = Callable[[], "Awaitable[str] | str"]


class AsyncClient:
    """A Tideway gateway at ``base_url``, for asyncio. See ``tideway_client.Client``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.retries = retries
        self._sleep = sleep
        self._rand = rand
        self._http = httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        """Closes the kept-alive publishing connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _post(self, path: str, headers: dict[str, str], **body: Any) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.post(f"{self.base_url}{path}", headers=headers, **body)
                if not response.is_error:
                    return response.json()
                error: Exception = gateway_error(response)
            except httpx.TransportError as transport:
                error = transport
            wait = publish_wait(attempt, error, self._rand)
            if wait is None or attempt >= self.retries:
                raise error
            await self._sleep(wait)
            attempt += 1

    async def publish(
        self, topics: Sequence[str], event_id: str, data: str, event: str | None = None
    ) -> Published:
        """Publishes ``data`` with ``event_id`` (and SSE type ``event``) to ``topics``."""
        headers = publish_request(topics, event_id, event, self.api_key)
        reply = await self._post("/v1/publish", headers, content=data.encode("utf-8"))
        return published(reply)

    async def publish_batch(
        self, events: Sequence[BatchEvent], *, atomic: bool = False
    ) -> list[BatchOutcome]:
        """Publishes ``events`` in one request; see ``Client.publish_batch``."""
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        reply = await self._post("/v1/publish/batch", headers, json=batch_body(events, atomic))
        return batch_outcomes(reply)

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        last_event_id: str | None = None,
        heartbeat_timeout: float = 45.0,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        token: str | None = None,
        token_provider: AsyncTokenProvider | None = None,
        tenant: str | None = None,
        on_state: Callable[[ConnectionState], None] | None = None,
    ) -> AsyncSubscription:
        """Subscribes to ``topics``; see ``Client.subscribe``. ``token_provider`` may be
        a coroutine function."""
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
        subscription = AsyncSubscription(self, session, heartbeat_timeout, token_provider)
        await subscription._connect(wait=False)
        return subscription


class AsyncSubscription:
    """An open SSE subscription; ``async for`` yields events and the gateway's messages."""

    def __init__(
        self,
        client: AsyncClient,
        session: Session,
        heartbeat_timeout: float,
        token_provider: AsyncTokenProvider | None,
    ) -> None:
        self._client = client
        self._session = session
        self._provider = token_provider
        self._url = f"{client.base_url}/v1/stream"
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=heartbeat_timeout))
        self._response: httpx.Response | None = None

    @property
    def last_event_id(self) -> str | None:
        """The id a reconnect resumes after."""
        return self._session.last_event_id

    @property
    def state(self) -> ConnectionState:
        """Where the subscription stands."""
        return self._session.state

    async def _connect(self, *, wait: bool) -> None:
        session = self._session
        asked: float | None = None
        while True:
            if wait:
                await self._client._sleep(session.wait(asked))
            wait, asked = True, None
            if session.need_token and self._provider is not None:
                token = self._provider()
                session.token = await token if inspect.isawaitable(token) else token
                session.need_token = False
            try:
                request = self._http.build_request(
                    "GET", self._url, params=session.params, headers=session.headers()
                )
                response = await self._http.send(request, stream=True)
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                self._response = response
                session.opened()
                return
            await response.aread()
            await response.aclose()
            wait, asked = session.refused(gateway_error(response))

    async def aclose(self) -> None:
        """Closes the stream."""
        if self._response is not None:
            await self._response.aclose()
            self._response = None
        await self._http.aclose()
        self._session.set_state("closed")

    async def __aiter__(self) -> AsyncIterator[Event | SystemMessage]:
        try:
            while True:
                if self._response is None:
                    self._session.set_state("reconnecting")
                    await self._connect(wait=True)
                response = self._response
                assert response is not None
                try:
                    async for chunk in response.aiter_text():
                        for message in self._session.feed(chunk):
                            yield message
                except httpx.TransportError:
                    pass  # dropped or silent too long: back off and resume
                finally:
                    await response.aclose()
                    self._response = None
        finally:
            await self.aclose()
