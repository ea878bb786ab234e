// Ten EventSources on one page over HTTPS, in a real headless Chromium against a real
// gateway serving TLS (--tls-cert/--tls-key, a certificate made by openssl here): over
// HTTP/1.1 a browser holds six connections per origin and the seventh stream would wait;
// over HTTP/2 they share one connection and every one of them gets its event. A WebSocket
// over the same listener (wss://, on HTTP/1.1) gets its event too.
//
//   node tests/h2.mjs            (TIDEWAY_BIN defaults to ../target/debug/tideway)
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { TIMEOUT, bin, freePort, launchChromium, shots } from "./lib.mjs";

const KEY = "h2-test-key";
const STREAMS = 10;

const dir = mkdtempSync(join(tmpdir(), "tideway-h2-"));
const cert = join(dir, "cert.pem");
const key = join(dir, "key.pem");
execFileSync("openssl", [
  "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
  "-keyout", key, "-out", cert, "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
], { stdio: "ignore" });

const port = await freePort();
const base = `https://localhost:${port}`;
const gateway = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--api-keys", KEY, "--tls-cert", cert, "--tls-key", key], {
  stdio: ["ignore", "ignore", "inherit"],
  env: { ...process.env, RUST_LOG: "warn" },
});
const browser = await launchChromium();

try {
  // The certificate is this test's own: the browser context trusts it, nothing else does.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1000, height: 600 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    try {
      const health = await page.goto(`${base}/healthz`);
      if (health?.ok()) break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  // Ten streams from the page, each on its own topic.
  await page.evaluate((count) => {
    window.received = {};
    window.streams = [];
    for (let i = 0; i < count; i++) {
      const source = new EventSource(`/v1/stream?topic=h2-${i}`);
      source.onmessage = (event) => {
        window.received[i] = event.data;
      };
      window.streams.push(source);
    }
  }, STREAMS);
  await page.waitForFunction((count) => window.streams.every((s) => s.readyState === EventSource.OPEN) && window.streams.length === count, STREAMS);

  // One publish per topic, from the page (same origin), then every stream has its event.
  const statuses = await page.evaluate(async ({ count, key }) => {
    const out = [];
    for (let i = 0; i < count; i++) {
      const answer = await fetch(`/v1/publish`, {
        method: "POST",
        headers: { Authorization: `Bearer ${key}`, "x-sse-topic": `h2-${i}`, "x-sse-id": `e${i}` },
        body: `event for stream ${i}`,
      });
      out.push(answer.status);
    }
    return out;
  }, { count: STREAMS, key: KEY });
  assert.deepEqual(statuses, Array(STREAMS).fill(202));
  await page.waitForFunction((count) => Object.keys(window.received).length === count, STREAMS);
  const received = await page.evaluate(() => window.received);
  for (let i = 0; i < STREAMS; i++) assert.equal(received[i], `event for stream ${i}`);

  // WebSocket over the same TLS listener (browsers open it on an HTTP/1.1 connection).
  const viaWebSocket = await page.evaluate(async (key) => {
    const socket = new WebSocket(`wss://${location.host}/v1/ws?topic=h2-ws`);
    const first = new Promise((resolve, reject) => {
      socket.onmessage = (message) => resolve(JSON.parse(message.data));
      socket.onerror = () => reject(new Error("the WebSocket failed"));
    });
    await new Promise((resolve) => (socket.onopen = resolve));
    // The subscription is registered once the socket is open; publish until accepted.
    for (let i = 0; i < 50; i++) {
      const answer = await fetch(`/v1/publish`, {
        method: "POST",
        headers: { Authorization: `Bearer ${key}`, "x-sse-topic": "h2-ws", "x-sse-id": "ws-1" },
        body: "over wss",
      });
      if ((await answer.json()).status === "accepted") break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const message = await first;
    socket.close();
    return message;
  }, KEY);
  assert.deepEqual([viaWebSocket.id, viaWebSocket.data], ["ws-1", "over wss"]);

  // All of it went over HTTP/2, on a handful of connections rather than one per stream.
  const protocol = await page.evaluate(async () => {
    const answer = await fetch("/healthz");
    await answer.text();
    const entries = performance.getEntriesByType("resource").filter((e) => e.name.endsWith("/healthz"));
    return entries.at(-1)?.nextHopProtocol;
  });
  assert.equal(protocol, "h2");
  const metrics = await page.evaluate(async () => (await fetch("/metrics")).text());
  const accepted = (label) => Number(metrics.split("\n").find((l) => l.startsWith("tideway_connections_accepted_total") && l.includes(`protocol="${label}"`))?.split(" ").at(-1));
  assert.ok(accepted("h2") >= 1 && accepted("h2") < STREAMS, `streams shared connections: ${accepted("h2")} h2 connections`);
  assert.equal(accepted("http1"), 0);
  assert.ok(accepted("http1-tls") >= 1, "the WebSocket came over HTTP/1.1 on TLS");

  mkdirSync(shots, { recursive: true });
  await page.setContent(`<pre>${STREAMS} EventSources over ${protocol}, ${accepted("h2")} connection(s):\n${JSON.stringify(received, null, 2)}</pre>`);
  await page.screenshot({ path: join(shots, "h2-ten-eventsources.png") });
  console.error(`h2 e2e passed: ${STREAMS} EventSources over ${protocol} on ${accepted("h2")} connection(s)`);
} finally {
  await browser.close();
  gateway.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
}
