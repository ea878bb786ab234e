import { describe, expect, it } from "vitest";

import { parseSse } from "./sse";

describe("parseSse", () => {
  it("splits messages, joins data lines and keeps an unfinished block", () => {
    const { messages, rest } = parseSse(
      "event: tideway.topic_state\ndata: {\"live\":true}\n\n: heartbeat\n\nid: 7\ndata: a\ndata: b\n\nid: 8\ndata: par",
    );
    expect(messages).toEqual([
      { event: "tideway.topic_state", id: null, data: '{"live":true}' },
      { event: "message", id: "7", data: "a\nb" },
    ]);
    expect(rest).toBe("id: 8\ndata: par");
  });

  it("accepts CRLF line ends", () => {
    expect(parseSse("data: x\r\n\r\n").messages).toEqual([{ event: "message", id: null, data: "x" }]);
  });
});
