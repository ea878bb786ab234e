// The TypeScript client package in a real headless Chromium: its built ESM (clients/
// typescript/dist, as the npm tarball ships it) loaded by a page of another origin,
// subscribing to a real gateway with fetch streaming (CORS preflight included, for
// Last-Event-ID and Authorization), beside a plain EventSource on eventSourceUrl. Then
// the gateway is stopped and started again: the client reports reconnecting, then open,
// surfaces the gap, and receives what is published after.
//
//   node tests/client.mjs        (TIDEWAY_BIN defaults to ../target/debug/tideway)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";

import { TIMEOUT, bin, freePort, launchChromium, repo, waitFor } from "./lib.mjs";

const KEY = "client-test-key";
const dist = join(repo, "clients", "typescript", "dist");
const gatewayPort = await freePort();
const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;

function startGateway() {
  return spawn(bin, ["--listen", `127.0.0.1:${gatewayPort}`, "--api-keys", KEY, "--drain-timeout", "1s"], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
}

async function healthy() {
  await waitFor("the gateway", async () => (await fetch(`${gatewayUrl}/healthz`)).ok);
}

async function publish(id) {
  const response = await fetch(`${gatewayUrl}/v1/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "x-sse-topic": "browser", "x-sse-id": id },
    body: `data of ${id}`,
  });
  assert.equal(response.status, 202, await response.text());
}

// The page's own origin: a different port from the gateway's.
const site = createServer((req, res) => {
  if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>client</title>");
    return;
  }
  const name = req.url.replace(/^\/dist\//, "");
  if (!/^[a-z]+\.js$/.test(name)) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "content-type": "text/javascript" });
  res.end(readFileSync(join(dist, name)));
});
const sitePort = await freePort();
await new Promise((resolve) => site.listen(sitePort, "127.0.0.1", resolve));

let gateway = startGateway();
const browser = await launchChromium();
try {
  await healthy();
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(`http://127.0.0.1:${sitePort}/`);
  await page.evaluate(async (url) => {
    const { Client } = await import("/dist/index.js");
    const client = new Client(url);
    Object.assign(window, { states: [], got: [], gaps: [], es: [] });
    const sub = await client.subscribe(["browser"], { onState: (s) => window.states.push(s), minBackoffMs: 200 });
    (async () => {
      for await (const m of sub) {
        if ("topic" in m) window.got.push(m.id);
        else if (m.gap) window.gaps.push(m.gap.reason);
      }
    })();
    const source = new EventSource(client.eventSourceUrl(["browser"]));
    source.onmessage = (e) => window.es.push(e.lastEventId);
    await new Promise((resolve) => (source.onopen = resolve));
  }, gatewayUrl);

  for (const id of ["e1", "e2", "e3"]) await publish(id);
  await waitFor("three events on both streams", () => page.evaluate(() => window.got.length === 3 && window.es.length === 3));
  assert.deepEqual(await page.evaluate(() => window.got), ["e1", "e2", "e3"]);
  assert.deepEqual(await page.evaluate(() => window.es), ["e1", "e2", "e3"]);

  // A restart: the in-memory store forgets e1..e3, so the resume after e3 is a gap.
  gateway.kill("SIGTERM");
  await new Promise((resolve) => gateway.once("exit", resolve));
  gateway = startGateway();
  await healthy();
  await waitFor("the client to reconnect", () => page.evaluate(() => window.states.filter((s) => s === "open").length === 2));
  await publish("e4");
  await waitFor("e4 after the restart", () => page.evaluate(() => window.got.includes("e4")));
  const seen = await page.evaluate(() => ({ got: window.got, gaps: window.gaps, states: window.states }));
  assert.deepEqual(seen.got, ["e1", "e2", "e3", "e4"]);
  assert.ok(seen.gaps.length >= 1, `the restart's gap surfaced: ${JSON.stringify(seen)}`);
  assert.deepEqual(seen.states, ["open", "reconnecting", "open"]);
  console.log("client.mjs: the TypeScript client passed in Chromium:", JSON.stringify(seen));
} finally {
  await browser.close();
  gateway.kill("SIGKILL");
  site.close();
}
