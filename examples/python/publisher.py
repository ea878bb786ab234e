"""Publishes one event, or a batch of them.

    TIDEWAY_URL=http://127.0.0.1:8080 TIDEWAY_API_KEY=... python publisher.py TOPIC ID DATA [EVENT]
    ... python publisher.py --batch TOPIC < events.jsonl

Prints ``accepted`` or ``dropped`` (no topic had a subscriber); exits 1 on an error. With
``--batch``, reads one JSON object ``{"id", "data", "event"?}`` per line of stdin, publishes
them all to TOPIC in one request, and prints each one's outcome on its own line (``accepted``,
``dropped``, or the error code).
"""

import json
import os
import sys

from tideway_client import BatchEvent, Client, GatewayError


def main() -> int:
    client = Client(
        os.environ.get("TIDEWAY_URL", "http://127.0.0.1:8080"), os.environ.get("TIDEWAY_API_KEY")
    )
    if len(sys.argv) == 3 and sys.argv[1] == "--batch":
        topic = sys.argv[2]
        events = [
            BatchEvent(topics=[topic], id=e["id"], data=e["data"], event=e.get("event"))
            for e in (json.loads(line) for line in sys.stdin if line.strip())
        ]
        try:
            outcomes = client.publish_batch(events)
        except (GatewayError, OSError) as error:
            print(f"publisher: {error}", file=sys.stderr)
            return 1
        for outcome in outcomes:
            print(outcome.code or outcome.status)
        return 0
    if len(sys.argv) < 4:
        print("usage: publisher.py TOPIC ID DATA [EVENT] | --batch TOPIC", file=sys.stderr)
        return 2
    topic, event_id, data = sys.argv[1:4]
    event = sys.argv[4] if len(sys.argv) > 4 else None
    try:
        published = client.publish([topic], event_id, data, event)
    except (GatewayError, OSError) as error:
        print(f"publisher: {error}", file=sys.stderr)
        return 1
    print("accepted" if published.accepted else "dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
