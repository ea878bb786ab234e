# wrep.py PORT N BATCH TOPICS: publishes N events over TOPICS topics (one subscriber each) in batches; events/s and received
import http.client, json, sys, time, socket, threading
port, n, size, k = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
got = [0]; lock = threading.Lock()
def sub(t):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /v1/stream?topic=rp{t} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    def read():
        while True:
            d = s.recv(65536)
            if not d: break
            with lock: got[0] += d.count(b"\nid: ")
    threading.Thread(target=read, daemon=True).start()
for t in range(k): sub(t)
time.sleep(3)  # the Worker learns of the joins in batched messages
c = http.client.HTTPConnection("127.0.0.1", port)
tag = str(time.time_ns())
start = time.time(); accepted = 0
for b in range(0, n, size):
    events = [{"topics": [f"rp{i % k}"], "id": f"{tag}-{i}", "data": "x" * 256} for i in range(b, min(n, b + size))]
    c.request("POST", "/v1/publish/batch", json.dumps({"events": events}), {"Authorization": "Bearer bench-key", "Content-Type": "application/json"})
    r = c.getresponse(); body = json.loads(r.read())
    accepted += body["accepted"]
took = time.time() - start
deadline = time.time() + 10
while got[0] < accepted and time.time() < deadline: time.sleep(0.05)
print(f"{n/took:.0f} events/s published ({accepted} of {n} accepted, {got[0]} received, batches of {size}, {k} topics, {took:.2f} s)")
