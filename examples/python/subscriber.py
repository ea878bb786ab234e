"""Subscribes and prints each event as one JSON line: {"topic","id","event","data"}.

    TIDEWAY_URL=http://127.0.0.1:8080 python subscriber.py TOPICS [COUNT]

TOPICS is comma-separated. With COUNT it exits after that many events. It reconnects by
itself and resumes where it left off. A gap (events of some topics may be missing) is
printed on stdout too, as {"gap":{"reason","topics"}}; the gateway's other messages and
the connection's state go to stderr.

For private topics, set TIDEWAY_TOKEN_KEY to an API key with the ``sign`` scope: the
example then plays its own backend, asking the gateway for a token (valid
TIDEWAY_TOKEN_TTL seconds, default 300) whenever the client needs a new one.
"""

import json
import os
import sys
from collections.abc import Callable

import httpx
from tideway_client import Client, Event, GatewayError


def token_provider(url: str, topics: list[str]) -> Callable[[], str] | None:
    key = os.environ.get("TIDEWAY_TOKEN_KEY")
    if not key:
        return None
    ttl = int(os.environ.get("TIDEWAY_TOKEN_TTL", "300"))

    def fetch() -> str:
        response = httpx.post(
            f"{url}/v1/tokens",
            headers={"authorization": f"Bearer {key}"},
            json={"subject": "example-subscriber", "topics": topics, "ttlSeconds": ttl},
        )
        response.raise_for_status()
        print("token: fetched a new one", file=sys.stderr, flush=True)
        return str(response.json()["token"])

    return fetch


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: subscriber.py TOPICS [COUNT]", file=sys.stderr)
        return 2
    topics = sys.argv[1].split(",")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else None
    url = os.environ.get("TIDEWAY_URL", "http://127.0.0.1:8080")
    client = Client(url)
    seen = 0
    try:
        subscription = client.subscribe(
            topics,
            token_provider=token_provider(url, topics),
            on_state=lambda state: print(f"state: {state}", file=sys.stderr, flush=True),
        )
        print(f"subscribed to {','.join(topics)}", file=sys.stderr, flush=True)
        for message in subscription:
            if isinstance(message, Event):
                line = {
                    "topic": message.topic,
                    "id": message.id,
                    "event": message.event,
                    "data": message.data,
                }
                print(json.dumps(line, ensure_ascii=False), flush=True)
                seen += 1
                if count is not None and seen >= count:
                    return 0
            else:
                if message.gap is not None:
                    gap = {"reason": message.gap.reason, "topics": list(message.gap.topics)}
                    print(json.dumps({"gap": gap}), flush=True)
                print(f"gateway: {message.event} {message.data}", file=sys.stderr, flush=True)
    except GatewayError as error:
        print(f"subscriber: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
