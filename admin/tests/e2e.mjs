// The admin UI in a real headless Chromium against a real gateway: log in (a wrong key
// first), see a subscriber in Connections and its topic in Topics, the node and its
// connection count in Nodes, a new topic appear by auto-refresh, publish and watch the
// event arrive in Tail Events, restart the gateway and watch the tail follow again, log
// out; then the whole app through a proxy that serves the gateway under a path prefix.
// Screenshots go to test-results/admin/.
//
//   node tests/e2e.mjs            (TIDEWAY_BIN defaults to ../target/debug/tideway)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { request as httpRequest, createServer as createHttpServer } from "node:http";
import { join } from "node:path";

import { TIMEOUT, bin, freePort, launchChromium, shots, waitFor } from "./lib.mjs";

const KEY = "e2e-admin-key";

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const startGateway = () =>
  spawn(bin, ["--listen", `127.0.0.1:${port}`, "--api-keys", KEY, "--drain-timeout", "1s"], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
let gateway = startGateway();
// A proxy that serves the gateway under /edge/, as an ingress with a path prefix does.
const proxyPort = await freePort();
const proxy = createHttpServer((req, res) => {
  if (!req.url.startsWith("/edge/")) {
    res.writeHead(404).end();
    return;
  }
  const upstream = httpRequest(
    { host: "127.0.0.1", port, path: req.url.slice("/edge".length), method: req.method, headers: req.headers },
    (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    },
  );
  upstream.on("error", () => res.destroy());
  req.pipe(upstream);
});
await new Promise((resolve) => proxy.listen(proxyPort, "127.0.0.1", resolve));
const subscribe = (topic, signal) =>
  fetch(`${base}/v1/stream?topic=${topic}`, { headers: { "x-sse-id": "browser-test-subscriber" }, signal });
const browser = await launchChromium();
const subscriber = new AbortController();

try {
  await waitFor("the gateway", async () => (await fetch(`${base}/healthz`)).ok);
  mkdirSync(shots, { recursive: true });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(TIMEOUT);

  // /admin redirects to the app, which asks for a key.
  await page.goto(`${base}/admin`);
  await page.getByLabel("API key").fill("not-the-key");
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("alert").filter({ hasText: "That key is not valid" }).waitFor();
  await page.screenshot({ path: join(shots, "login-refused.png") });

  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("tab", { name: "Topics" }).waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem("tideway.apiKey")), KEY);

  // A subscriber connects.
  const stream = await fetch(`${base}/v1/stream?topic=e2e-news`, {
    headers: { "x-sse-id": "browser-test-subscriber" },
    signal: subscriber.signal,
  });
  assert.equal(stream.status, 200);

  await page.getByRole("tab", { name: "Connections" }).click();
  await waitFor("the subscriber in Connections", async () => {
    await page.getByRole("button", { name: "Refresh" }).click();
    return (await page.getByText("browser-test-subscriber").count()) > 0;
  });
  await page.screenshot({ path: join(shots, "connections.png") });

  await page.getByRole("tab", { name: "Topics" }).click();
  await waitFor("the topic in Topics", async () => {
    await page.getByRole("button", { name: "Refresh" }).click();
    return (await page.getByRole("button", { name: "e2e-news" }).count()) > 0;
  });
  await page.screenshot({ path: join(shots, "topics.png") });

  // Nodes: this node, with the subscriber's connection counted and charted.
  await page.getByRole("tab", { name: "Nodes" }).click();
  await page.getByTestId("nodes").locator("tr").first().waitFor();
  await waitFor("the connection counted in Nodes", async () => (await page.getByTestId("sparkline-value").textContent()) === "1");
  assert.equal(await page.getByRole("img", { name: "Connections over time" }).count(), 1);
  // One node on its own store: its topics are counted, it has no heartbeat to show.
  await page.getByTestId("nodes").getByText("— (one node)").waitFor();
  await page.getByText(/Auto-refresh every 5 s/).waitFor();
  await page.screenshot({ path: join(shots, "nodes.png") });

  // Auto-refresh: a topic that appears is listed without a click.
  const second = new AbortController();
  await subscribe("e2e-auto", second.signal);
  await page.getByRole("tab", { name: "Topics" }).click();
  await page.getByRole("button", { name: "e2e-auto" }).waitFor({ timeout: 12_000 });
  await page.getByText(/updated \d/).first().waitFor();
  second.abort();
  await page.screenshot({ path: join(shots, "topics-auto-refresh.png") });

  // Open its tail, publish, and watch the event arrive.
  await page.getByRole("button", { name: "e2e-news" }).click();
  await page.getByText("live, following").waitFor();
  const published = await fetch(`${base}/v1/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${KEY}`, "x-sse-topic": "e2e-news", "x-sse-id": "evt-42", "x-sse-event": "headline" },
    body: "Tideway admin sees this live",
  });
  assert.equal(published.status, 202);
  await page.getByTestId("tail-events").getByText("Tideway admin sees this live").waitFor();
  await page.getByTestId("tail-events").getByText("evt-42").waitFor();
  await page.screenshot({ path: join(shots, "tail.png") });

  // The gateway restarts (a drain, then a new process): the tail says so and follows
  // again once the topic is back.
  const drained = new Promise((resolve) => gateway.once("exit", resolve));
  gateway.kill("SIGTERM");
  await drained;
  await page.getByText("reconnecting…").waitFor();
  await page.screenshot({ path: join(shots, "tail-reconnecting.png") });
  gateway = startGateway();
  await waitFor("the new gateway", async () => (await fetch(`${base}/healthz`)).ok);
  const again = new AbortController();
  const resubscribed = await subscribe("e2e-news", again.signal);
  assert.equal(resubscribed.status, 200, "the subscriber is back");
  // The new process lists the topic with its subscriber before the tail is looked at:
  // "live" on the tail is then the new stream's word, not the last one's.
  await waitFor("e2e-news live on the new gateway", async () => {
    const listed = await fetch(`${base}/v1/admin/topics`, { headers: { Authorization: `Bearer ${KEY}` } });
    const { items } = await listed.json();
    return items.some((t) => t.name === "e2e-news" && t.connections > 0);
  });
  await page.getByText("live, following").waitFor({ timeout: 15_000 });
  const after = await fetch(`${base}/v1/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${KEY}`, "x-sse-topic": "e2e-news", "x-sse-id": "evt-43" },
    body: "followed again after the restart",
  });
  assert.equal(after.status, 202, `the publish after the restart: ${await after.clone().text()}`);
  await page.getByTestId("tail-events").getByText("followed again after the restart").waitFor();
  await page.screenshot({ path: join(shots, "tail-resumed.png") });
  again.abort();

  // Log out: the key is gone and the login form is back.
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByLabel("API key").waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem("tideway.apiKey")), null);
  await page.screenshot({ path: join(shots, "logged-out.png") });

  // Under a path prefix: every URL of the app is relative, so it works as it is.
  await page.goto(`http://127.0.0.1:${proxyPort}/edge/admin`);
  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("tab", { name: "Nodes" }).click();
  await page.getByTestId("nodes").locator("tr").first().waitFor();
  assert.ok(page.url().endsWith("/edge/admin/"), page.url());
  await page.screenshot({ path: join(shots, "path-prefix.png") });
  console.error(`admin e2e passed; screenshots in ${shots}`);
} finally {
  subscriber.abort();
  await browser.close();
  proxy.close();
  gateway.kill("SIGTERM");
}
