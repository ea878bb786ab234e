"""Subscribes and prints each event as one JSON line: {"topic","id","event","data"}.

    TIDEWAY_URL=http://127.0.0.1:8080 python subscriber.py TOPICS [COUNT]

TOPICS is comma-separated. With COUNT it exits after that many events. It reconnects by
itself and resumes where it left off; system messages go to stderr.
"""

import json
import os
import sys

from tideway_client import Client, Event, GatewayError


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: subscriber.py TOPICS [COUNT]", file=sys.stderr)
        return 2
    topics = sys.argv[1].split(",")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else None
    client = Client(os.environ.get("TIDEWAY_URL", "http://127.0.0.1:8080"))
    seen = 0
    try:
        subscription = client.subscribe(topics)
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
                print(f"gateway: {message.event} {message.data}", file=sys.stderr, flush=True)
    except GatewayError as error:
        print(f"subscriber: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
