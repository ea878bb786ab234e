// @vitest-environment jsdom
// useTopics in a real React tree (react-dom, StrictMode) against scripted servers on real
// sockets: its state, gaps, reset on a change of topics, and one stream under StrictMode.

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import { createElement, StrictMode } from "react";
import { act } from "react";
import { createRoot, type Root } from "react-dom/client";
import { afterEach, describe, expect, it } from "vitest";

import { type TopicsState, useTopics } from "./react.js";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));

/** A gateway stand-in: `answer` decides each request's reply; open streams stay open. */
async function gateway(answer: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; requests: IncomingMessage[] }> {
  const requests: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    requests.push(req);
    answer(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

function sse(res: ServerResponse, body: string): void {
  res.writeHead(200, { "content-type": "text/event-stream", "access-control-allow-origin": "*" });
  res.write(body);
}

/** Renders a component showing useTopics' state; returns what it saw last. */
function mount(url: string, topics: string[]): { latest: () => TopicsState; root: Root; rerender: (topics: string[]) => void } {
  let latest: TopicsState | null = null;
  const Probe = ({ topics }: { topics: string[] }) => {
    latest = useTopics(url, topics);
    return null;
  };
  const container = document.createElement("div");
  const root = createRoot(container);
  const render = (t: string[]) => root.render(createElement(StrictMode, null, createElement(Probe, { topics: t })));
  act(() => render(topics));
  cleanups.push(() => act(() => root.unmount()));
  return { latest: () => latest!, root, rerender: (t) => act(() => render(t)) };
}

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await act(() => new Promise((resolve) => setTimeout(resolve, 10)));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("useTopics", () => {
  it("exposes state, events and gaps, and holds one stream under StrictMode", async () => {
    const gap = '{"reason":"history_evicted","topics":["a"]}';
    const gw = await gateway((_req, res) => sse(res, `retry: 2000\n\nid: e1\ntopic: a\ndata: one\n\nevent: tideway.gap\ndata: ${gap}\n\n`));
    const view = mount(gw.url, ["a"]);
    expect(view.latest().state).toBe("connecting");
    await until("the event and the gap", () => view.latest().events.length === 1 && view.latest().gaps.length === 1);
    expect(view.latest()).toMatchObject({ state: "open", error: null, events: [{ id: "e1", data: "one" }], gaps: [{ reason: "history_evicted", topics: ["a"] }] });
    // StrictMode mounted, cleaned up and mounted again: the first stream was aborted.
    await until("one stream left open", () => gw.requests.filter((r) => !r.socket.destroyed).length === 1);
  });

  it("starts afresh when the topics change", async () => {
    const gw = await gateway((req, res) => {
      const topic = new URL(req.url!, "http://x").searchParams.get("topic");
      sse(res, `id: ${topic}1\ntopic: ${topic}\ndata: x\n\n`);
    });
    const view = mount(gw.url, ["a"]);
    await until("a's event", () => view.latest().events.length === 1);
    view.rerender(["b"]);
    await until("b's event alone", () => view.latest().events.length === 1 && view.latest().events[0].topic === "b");
    expect(view.latest().events.map((e) => e.id)).toEqual(["b1"]);
  });

  it("reports a refusal as error and closed", async () => {
    const gw = await gateway((_req, res) => {
      res.writeHead(400, { "content-type": "application/json", "access-control-allow-origin": "*" });
      res.end('{"error":{"code":"invalid_topic","message":"bad"}}');
    });
    const view = mount(gw.url, ["a"]);
    await until("the refusal", () => view.latest().error !== null);
    expect(view.latest().state).toBe("closed");
    expect(view.latest().error).toContain("invalid_topic");
  });
});
