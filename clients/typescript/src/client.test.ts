// The client's reconnect, token and retry rules against a scripted HTTP server on a real
// socket, with a fake clock: every wait is recorded instead of slept.

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import { afterEach, describe, expect, it } from "vitest";

import { backoffDelay, Client, type ConnectionState, GatewayError, retryAfterMs, TimeoutError } from "./index.js";

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

const servers: { close(): void }[] = [];
afterEach(() => servers.splice(0).forEach((s) => s.close()));

/** A server answering its n-th request with `handlers[n]` (the last one repeats). */
async function script(handlers: Handler[]): Promise<{ url: string; requests: IncomingMessage[] }> {
  const requests: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    const n = requests.length;
    requests.push(req);
    handlers[Math.min(n, handlers.length - 1)](req, res, n);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push({ close: () => server.closeAllConnections() || server.close() });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

const stream =
  (body: string, end = true): Handler =>
  (_req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write(body);
    if (end) res.end();
  };
const refuse =
  (status: number, code: string, headers: Record<string, string> = {}): Handler =>
  (_req, res) => {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify({ error: { code, message: code } }));
  };

/** A fake clock: records each wait and returns at once. */
function fakeClock(): { waits: number[]; sleep: (ms: number) => Promise<void> } {
  const waits: number[] = [];
  return { waits, sleep: async (ms: number) => void waits.push(ms) };
}

describe("backoffDelay", () => {
  it("stays below min(cap, base * 2^attempt), from 0 up", () => {
    expect(backoffDelay(0, 1000, 30_000, () => 0)).toBe(0);
    expect(backoffDelay(0, 1000, 30_000, () => 0.999999)).toBe(999);
    expect(backoffDelay(3, 1000, 30_000, () => 0.5)).toBe(4000);
    expect(backoffDelay(10, 1000, 30_000, () => 0.999999)).toBe(29_999);
    expect(backoffDelay(500, 1000, 30_000, () => 0.5)).toBe(15_000);
  });

  it("spreads clients cut off together", () => {
    const delays = Array.from({ length: 1000 }, () => backoffDelay(0, 2000, 30_000));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...delays)).toBeLessThan(2000);
    expect(new Set(delays).size).toBeGreaterThan(500);
  });
});

describe("retryAfterMs", () => {
  it("reads seconds and HTTP dates, caps them, and ignores the unreadable", () => {
    expect(retryAfterMs("2", 60_000)).toBe(2000);
    expect(retryAfterMs("3600", 60_000)).toBe(60_000);
    expect(retryAfterMs(new Date(10_000).toUTCString(), 60_000, 4_000)).toBe(6000);
    expect(retryAfterMs("soon", 60_000)).toBeNull();
    expect(retryAfterMs(null, 60_000)).toBeNull();
  });
});

describe("subscribe", () => {
  it("retries the first connect, resumes after a drop with the gateway's retry: as base", async () => {
    const server = await script([
      refuse(503, "unavailable"),
      refuse(429, "rate_limited", { "retry-after": "7" }),
      stream("retry: 5000\n\nid: e1\ntopic: a\ndata: one\n\n"),
      stream("id: e2\ntopic: a\ndata: two\n\n", false),
    ]);
    const clock = fakeClock();
    const states: ConnectionState[] = [];
    const client = new Client(server.url, undefined, { sleep: clock.sleep, random: () => 0.5 });
    const subscription = await client.subscribe(["a"], { onState: (s) => states.push(s) });
    const ids: string[] = [];
    for await (const message of subscription) {
      if ("topic" in message) ids.push(message.id);
      if (ids.length === 2) break;
    }
    expect(ids).toEqual(["e1", "e2"]);
    // 503: half of the first ceiling (1 s); 429: what Retry-After asked; the drop: half
    // of the gateway's retry: 5000, the attempts counted afresh after the stream opened.
    expect(clock.waits).toEqual([500, 7000, 2500]);
    expect(server.requests[3].headers["last-event-id"]).toBe("e1");
    expect(states).toEqual(["open", "reconnecting", "open", "closed"]);
  });

  it("rejects a refusal at once and is closed", async () => {
    const server = await script([refuse(400, "invalid_topic")]);
    const states: ConnectionState[] = [];
    const client = new Client(server.url, undefined, { sleep: fakeClock().sleep });
    await expect(client.subscribe(["a"], { onState: (s) => states.push(s) })).rejects.toMatchObject({
      status: 400,
      code: "invalid_topic",
    });
    expect(states).toEqual(["closed"]);
  });

  it("asks the token provider again after tideway.revoked and after a 401, and gives up on a second 401", async () => {
    const server = await script([
      stream('event: tideway.revoked\ndata: {"reason":"token_expired"}\n\n'),
      refuse(401, "token_expired"),
      stream("id: e1\ntopic: a\ndata: one\n\n", false),
    ]);
    let issued = 0;
    const client = new Client(server.url, undefined, { sleep: fakeClock().sleep, random: () => 0 });
    const subscription = await client.subscribe(["a"], { tokenProvider: async () => `t${++issued}` });
    const seen: string[] = [];
    for await (const message of subscription) {
      seen.push("topic" in message ? message.id : message.system);
      if ("topic" in message) break;
    }
    expect(seen).toEqual(["tideway.revoked", "e1"]);
    expect(server.requests.map((r) => r.headers.authorization)).toEqual(["Bearer t1", "Bearer t2", "Bearer t3"]);

    const refusing = await script([refuse(401, "invalid_token")]);
    const again = new Client(refusing.url, undefined, { sleep: fakeClock().sleep });
    await expect(again.subscribe(["a"], { tokenProvider: () => "bad" })).rejects.toBeInstanceOf(GatewayError);
    expect(refusing.requests).toHaveLength(2);
  });

  it("surfaces gaps with their topics", async () => {
    const gap = '{"reason":"history_evicted","topics":["a"],"lastEventId":"e0"}';
    const server = await script([stream(`event: tideway.gap\ndata: ${gap}\n\n`, false)]);
    const subscription = await new Client(server.url).subscribe(["a"], { lastEventId: "e0" });
    for await (const message of subscription) {
      expect(message).toMatchObject({ system: "tideway.gap", gap: { reason: "history_evicted", topics: ["a"], lastEventId: "e0" } });
      break;
    }
  });

  it("abandons a silent stream, cancelling it, and resumes", async () => {
    const server = await script([stream(": hi\n\n", false), stream("id: e1\ntopic: a\ndata: one\n\n", false)]);
    const client = new Client(server.url, undefined, { sleep: fakeClock().sleep });
    const subscription = await client.subscribe(["a"], { heartbeatTimeoutMs: 50 });
    for await (const message of subscription) {
      expect(message).toMatchObject({ id: "e1" });
      break;
    }
    // The first stream's socket was closed by the client.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(server.requests[0].socket.destroyed).toBe(true);
  });
});

describe("publish", () => {
  it("retries 5xx with the same id, honouring Retry-After", async () => {
    const server = await script([
      refuse(503, "unavailable", { "retry-after": "2" }),
      (_req, res) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end('{"status":"accepted","topics":[{"topic":"a","seq":1}]}');
      },
    ]);
    const clock = fakeClock();
    const client = new Client(server.url, "key", { sleep: clock.sleep });
    expect(await client.publish(["a"], "evt-1", "hi")).toEqual({ status: "accepted", topics: [{ topic: "a", seq: 1 }] });
    expect(clock.waits).toEqual([2000]);
    expect(server.requests.map((r) => r.headers["x-sse-id"])).toEqual(["evt-1", "evt-1"]);
  });

  it("does not retry a refusal, and times out an exchange that never answers", async () => {
    const refusing = await script([refuse(403, "topic_not_allowed")]);
    await expect(new Client(refusing.url, "key").publish(["a"], "e", "x")).rejects.toMatchObject({ status: 403 });
    expect(refusing.requests).toHaveLength(1);

    const silent = await script([() => {}]);
    const clock = fakeClock();
    const client = new Client(silent.url, "key", { timeoutMs: 50, retries: 2, sleep: clock.sleep, random: () => 0 });
    await expect(client.publish(["a"], "e", "x")).rejects.toBeInstanceOf(TimeoutError);
    expect(silent.requests).toHaveLength(3);
    expect(clock.waits).toEqual([0, 0]);
  });
});
