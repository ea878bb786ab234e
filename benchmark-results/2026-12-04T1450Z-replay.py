# replay.py PORT N BATCH: publishes N events to one topic in batches, prints events/s
import http.client, json, sys, time, socket, threading
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# a subscriber so the topic is live
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /v1/stream?topic=replay HTTP/1.1\r\nHost: x\r\n\r\n")
got = [0]
def read():
    buf = b""
    while got[0] < n:
        d = s.recv(65536)
        if not d: break
        got[0] += d.count(b"\nid: ") + d.count(b"\r\nid: ") * 0
threading.Thread(target=read, daemon=True).start()
time.sleep(0.5)
c = http.client.HTTPConnection("127.0.0.1", port)
tag = str(time.time_ns())
start = time.time()
for b in range(0, n, size):
    events = [{"topics": ["replay"], "id": f"{tag}-{i}", "data": "x" * 256} for i in range(b, min(n, b + size))]
    c.request("POST", "/v1/publish/batch", json.dumps({"events": events}), {"Authorization": "Bearer bench-key", "Content-Type": "application/json"})
    r = c.getresponse(); body = json.loads(r.read())
    assert body["accepted"] == len(events), body
took = time.time() - start
print(f"{n/took:.0f} events/s published ({n} in batches of {size}, {took:.2f} s)")
