"""Publishes one event.

    TIDEWAY_URL=http://127.0.0.1:8080 TIDEWAY_API_KEY=... python publisher.py TOPIC ID DATA [EVENT]

Prints ``accepted`` or ``dropped`` (no topic had a subscriber); exits 1 on an error.
"""

import os
import sys

from tideway_client import Client, GatewayError


def main() -> int:
    if len(sys.argv) < 4:
        print("usage: publisher.py TOPIC ID DATA [EVENT]", file=sys.stderr)
        return 2
    topic, event_id, data = sys.argv[1:4]
    event = sys.argv[4] if len(sys.argv) > 4 else None
    client = Client(
        os.environ.get("TIDEWAY_URL", "http://127.0.0.1:8080"), os.environ.get("TIDEWAY_API_KEY")
    )
    try:
        published = client.publish([topic], event_id, data, event)
    except (GatewayError, OSError) as error:
        print(f"publisher: {error}", file=sys.stderr)
        return 1
    print("accepted" if published.accepted else "dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
