// The admin UI in a real headless Chromium against a real gateway: log in (a wrong key
// first), see a subscriber in Connections and its topic in Topics, publish and watch the
// event arrive in Tail Events, log out. Screenshots go to test-results/admin/.
//
//   node tests/e2e.mjs            (TIDEWAY_BIN defaults to ../target/debug/tideway)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..");
const bin = process.env.TIDEWAY_BIN ?? join(repo, "target", "debug", "tideway");
const shots = join(repo, "test-results", "admin");
const KEY = "e2e-admin-key";
const TIMEOUT = 10_000;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

async function waitFor(what, check) {
  const deadline = Date.now() + TIMEOUT;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const gateway = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--api-keys", KEY], {
  stdio: ["ignore", "ignore", "inherit"],
  env: { ...process.env, RUST_LOG: "warn" },
});
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--disable-dev-shm-usage"],
});
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

  // Log out: the key is gone and the login form is back.
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByLabel("API key").waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem("tideway.apiKey")), null);
  await page.screenshot({ path: join(shots, "logged-out.png") });
  console.error(`admin e2e passed; screenshots in ${shots}`);
} finally {
  subscriber.abort();
  await browser.close();
  gateway.kill("SIGTERM");
}
