import { describe, expect, it } from "vitest";

import { Client } from "./index.js";
import { parseBlocks } from "./sse.js";

describe("parseBlocks", () => {
  it("reads fields, joins data lines and keeps an unfinished block", () => {
    const { blocks, rest } = parseBlocks("retry: 10\n\nid: 7\nevent: update\ntopic: a\ndata: one\ndata: two\n\ndata: par");
    expect(blocks[0].data).toBeNull();
    expect(blocks[1]).toEqual({ id: "7", event: "update", data: "one\ntwo", fields: { topic: "a" } });
    expect(rest).toBe("data: par");
  });

  it("accepts CRLF and CR, and waits on a trailing CR", () => {
    const { blocks, rest } = parseBlocks("data: a\r\n\r\ndata: b\r\rdata: c\r");
    expect(blocks.map((b) => b.data)).toEqual(["a", "b"]);
    expect(rest).toBe("data: c\r");
  });
});

describe("Client", () => {
  it("builds EventSource URLs with every topic and the token in the query", () => {
    const client = new Client("http://gw.example:8080/");
    expect(client.eventSourceUrl(["a", "b/c"], "tok")).toBe("http://gw.example:8080/v1/stream?topic=a&topic=b%2Fc&token=tok");
  });
});
