"""The reconnect, token and retry rules against a scripted HTTP server on a real socket,
with a fake clock: every wait is recorded instead of slept. Sync and asyncio alike."""

from __future__ import annotations

import asyncio
import email.utils
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tideway_client import (
    AsyncClient,
    Client,
    ConnectionState,
    Event,
    GatewayError,
    SystemMessage,
    backoff_delay,
    retry_after,
)

Handler = Callable[[BaseHTTPRequestHandler], None]


class Scripted:
    """A server answering its n-th request with ``handlers[n]`` (the last one repeats)."""

    def __init__(self, handlers: list[Handler]) -> None:
        self.requests: list[dict[str, str]] = []
        scripted = self

        class Handle(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                n = len(scripted.requests)
                scripted.requests.append({k.lower(): v for k, v in self.headers.items()})
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                handlers[min(n, len(handlers) - 1)](self)

            do_GET = handle_one
            do_POST = handle_one

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Handler]], Scripted]]:
    made: list[Scripted] = []

    def make(handlers: list[Handler]) -> Scripted:
        made.append(Scripted(handlers))
        return made[-1]

    yield make
    for server in made:
        server.close()


def stream(body: str, end: bool = True) -> Handler:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("connection", "close")
        h.end_headers()
        h.wfile.write(body.encode())
        h.wfile.flush()
        if not end:
            threading.Event().wait(2)

    return handle


def refuse(status: int, code: str, retry: str | None = None) -> Handler:
    def handle(h: BaseHTTPRequestHandler) -> None:
        body = json.dumps({"error": {"code": code, "message": code}}).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(body)))
        if retry is not None:
            h.send_header("retry-after", retry)
        h.end_headers()
        h.wfile.write(body)

    return handle


def accepted(h: BaseHTTPRequestHandler) -> None:
    body = b'{"status":"accepted","topics":[{"topic":"a","seq":1}]}'
    h.send_response(200)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def test_backoff_stays_below_its_ceiling_from_zero_up() -> None:
    assert backoff_delay(0, 1.0, 30.0, lambda: 0.0) == 0.0
    assert backoff_delay(3, 1.0, 30.0, lambda: 0.5) == 4.0
    assert backoff_delay(500, 1.0, 30.0, lambda: 0.5) == 15.0
    delays = [backoff_delay(0, 2.0, 30.0) for _ in range(1000)]
    assert 0 <= min(delays) and max(delays) < 2.0
    assert len(set(delays)) > 500


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("2", 60.0) == 2.0
    assert retry_after("3600", 60.0) == 60.0
    assert retry_after(email.utils.formatdate(10.0, usegmt=True), 60.0, now=4.0) == 6.0
    assert retry_after("soon", 60.0) is None
    assert retry_after(None, 60.0) is None


def test_first_connect_retried_then_resumed_with_the_gateways_retry(
    scripted: Callable[[list[Handler]], Scripted],
) -> None:
    server = scripted(
        [
            refuse(503, "unavailable"),
            refuse(429, "rate_limited", "7"),
            stream("retry: 5000\n\nid: e1\ntopic: a\ndata: one\n\n"),
            stream("id: e2\ntopic: a\ndata: two\n\n", end=False),
        ]
    )
    waits: list[float] = []
    states: list[ConnectionState] = []
    client = Client(server.url, sleep=waits.append, rand=lambda: 0.5)
    subscription = client.subscribe(["a"], on_state=states.append)
    ids = []
    for message in subscription:
        if isinstance(message, Event):
            ids.append(message.id)
        if len(ids) == 2:
            break
    subscription.close()
    assert ids == ["e1", "e2"]
    assert waits == [0.5, 7.0, 2.5]
    assert server.requests[3]["last-event-id"] == "e1"
    assert states == ["open", "reconnecting", "open", "closed"]


def test_a_refusal_raises_at_once(scripted: Callable[[list[Handler]], Scripted]) -> None:
    server = scripted([refuse(400, "invalid_topic")])
    states: list[ConnectionState] = []
    with pytest.raises(GatewayError) as refused:
        Client(server.url, sleep=lambda _: None).subscribe(["a"], on_state=states.append)
    assert refused.value.code == "invalid_topic"
    assert states == ["closed"]


def test_token_provider_called_again_after_revoked_and_401(
    scripted: Callable[[list[Handler]], Scripted],
) -> None:
    server = scripted(
        [
            stream('event: tideway.revoked\ndata: {"reason":"token_expired"}\n\n'),
            refuse(401, "token_expired"),
            stream("id: e1\ntopic: a\ndata: one\n\n", end=False),
        ]
    )
    issued = iter(["t1", "t2", "t3"])
    client = Client(server.url, sleep=lambda _: None)
    subscription = client.subscribe(["a"], token_provider=lambda: next(issued))
    seen = []
    for message in subscription:
        seen.append(message.id if isinstance(message, Event) else message.event)
        if isinstance(message, Event):
            break
    subscription.close()
    assert seen == ["tideway.revoked", "e1"]
    assert [r["authorization"] for r in server.requests] == ["Bearer t1", "Bearer t2", "Bearer t3"]

    refusing = scripted([refuse(401, "invalid_token")])
    with pytest.raises(GatewayError):
        Client(refusing.url, sleep=lambda _: None).subscribe(["a"], token_provider=lambda: "bad")
    assert len(refusing.requests) == 2


def test_gaps_are_surfaced_with_their_topics(
    scripted: Callable[[list[Handler]], Scripted],
) -> None:
    gap = '{"reason":"history_evicted","topics":["a"],"lastEventId":"e0"}'
    server = scripted([stream(f"event: tideway.gap\ndata: {gap}\n\n", end=False)])
    subscription = Client(server.url).subscribe(["a"], last_event_id="e0")
    message = next(iter(subscription))
    subscription.close()
    assert isinstance(message, SystemMessage) and message.gap is not None
    assert (message.gap.reason, message.gap.topics) == ("history_evicted", ("a",))


def test_a_silent_stream_is_abandoned_and_resumed(
    scripted: Callable[[list[Handler]], Scripted],
) -> None:
    server = scripted(
        [stream(": hi\n\n", end=False), stream("id: e1\ntopic: a\ndata: one\n\n", end=False)]
    )
    client = Client(server.url, sleep=lambda _: None)
    subscription = client.subscribe(["a"], heartbeat_timeout=0.2)
    message = next(iter(subscription))
    subscription.close()
    assert isinstance(message, Event) and message.id == "e1"


def test_publish_retries_5xx_with_the_same_id(
    scripted: Callable[[list[Handler]], Scripted],
) -> None:
    server = scripted([refuse(503, "unavailable", "2"), accepted])
    waits: list[float] = []
    client = Client(server.url, "key", sleep=waits.append)
    assert client.publish(["a"], "evt-1", "hi").accepted
    assert waits == [2.0]
    assert [r["x-sse-id"] for r in server.requests] == ["evt-1", "evt-1"]

    refusing = scripted([refuse(403, "topic_not_allowed")])
    with pytest.raises(GatewayError):
        Client(refusing.url, "key", sleep=waits.append).publish(["a"], "e", "x")
    assert len(refusing.requests) == 1


def test_publish_times_out_and_gives_up_after_its_retries(
    scripted: Callable[[list[Handler]], Scripted],
) -> None:
    def never(_: BaseHTTPRequestHandler) -> None:
        threading.Event().wait(2)

    server = scripted([never])
    waits: list[float] = []
    client = Client(server.url, "key", timeout=0.1, retries=2, sleep=waits.append, rand=lambda: 0)
    with pytest.raises(httpx.TimeoutException):
        client.publish(["a"], "e", "x")
    assert len(server.requests) == 3
    assert waits == [0, 0]


def test_async_client_resumes_refreshes_tokens_and_retries_publishes(
    scripted: Callable[[list[Handler]], Scripted],
) -> None:
    server = scripted(
        [
            refuse(503, "unavailable"),
            stream(
                "retry: 4000\n\nid: e1\ntopic: a\ndata: one\n\nevent: tideway.revoked\ndata: {}\n\n"
            ),
            stream("id: e2\ntopic: a\ndata: two\n\n", end=False),
        ]
    )
    publisher = scripted([refuse(502, "bad_gateway"), accepted])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def provider() -> str:
        return f"t{len(server.requests)}"

    async def run() -> list[str]:
        client = AsyncClient(server.url, sleep=sleep, rand=lambda: 0.5)
        subscription = await client.subscribe(["a"], token_provider=provider)
        ids = []
        async for message in subscription:
            if isinstance(message, Event):
                ids.append(message.id)
            if len(ids) == 2:
                break
        await subscription.aclose()
        published = await AsyncClient(publisher.url, "k", sleep=sleep, rand=lambda: 0.5).publish(
            ["a"], "evt-9", "x"
        )
        assert published.accepted
        return ids

    assert asyncio.run(run()) == ["e1", "e2"]
    assert waits == [0.5, 2.0, 0.05]
    assert server.requests[2]["last-event-id"] == "e1"
    assert [r["authorization"] for r in server.requests] == ["Bearer t0", "Bearer t0", "Bearer t2"]
    assert [r["x-sse-id"] for r in publisher.requests] == ["evt-9", "evt-9"]
