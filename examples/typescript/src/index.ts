// A TypeScript client for Tideway, on fetch: it runs in browsers and in Node 18+.
//
// `publish` sends one event and says whether it was accepted or dropped; `publishBatch`
// sends many in one request, each with its outcome. `subscribe`
// reads a Server-Sent Events stream and keeps it open: when it drops, or stays silent past
// the heartbeat timeout, it reconnects with backoff and resumes after the last event it
// saw (`Last-Event-ID`). It uses fetch rather than EventSource so it can send a token
// header and receive every event type; `eventSourceUrl` builds a URL for EventSource.

import { parseBlocks } from "./sse.js";

export { parseBlocks, type Block } from "./sse.js";

/** An event a publisher sent. */
export interface TidewayEvent {
  topic: string;
  id: string;
  event: string | null;
  data: string;
}

/** A message of the gateway's own: tideway.gap, tideway.drain, tideway.revoked, ... */
export interface SystemMessage {
  system: string;
  data: string;
}

/** What became of a publish. */
export type Published = { status: "accepted"; topics: { topic: string; seq: number }[] } | { status: "dropped" };

/** One event of a batch. */
export interface BatchEvent {
  topics: string[];
  id: string;
  data: string;
  event?: string;
}

/**
 * What became of one event of a batch: published or dropped as a single publish, refused
 * with its own error, or skipped (another event of an atomic batch was refused).
 */
export type BatchOutcome =
  | (Published & { id: string })
  | { status: "error"; id: string; error: { code: string; message: string } }
  | { status: "skipped"; id: string };

/** An error answer of the gateway. */
export class GatewayError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(`${status} ${code}: ${message}`);
  }
}

async function gatewayError(response: Response): Promise<GatewayError> {
  const text = await response.text();
  try {
    const body = JSON.parse(text) as { error: { code: string; message: string } };
    return new GatewayError(response.status, body.error.code, body.error.message);
  } catch {
    return new GatewayError(response.status, "unknown", text);
  }
}

export interface SubscribeOptions {
  /** Resume after this id from the first connection on. */
  lastEventId?: string;
  /** Reconnect when nothing (not even a heartbeat) came for this long; default 45 s. */
  heartbeatTimeoutMs?: number;
  /** The longest wait between reconnects; default 10 s. */
  maxBackoffMs?: number;
  /** A subscriber token, for private topics. */
  token?: string;
  /** Stops the subscription. */
  signal?: AbortSignal;
}

export class Client {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly apiKey?: string,
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
  }

  /** Publishes `data` with `id` (and SSE type `event`) to `topics`. */
  async publish(topics: string[], id: string, data: string, event?: string): Promise<Published> {
    const headers: Record<string, string> = { "x-sse-topic": topics.join(","), "x-sse-id": id };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    if (event) headers["x-sse-event"] = event;
    const response = await fetch(`${this.baseUrl}/v1/publish`, { method: "POST", headers, body: data });
    if (!response.ok) throw await gatewayError(response);
    return (await response.json()) as Published;
  }

  /**
   * Publishes `events` in one request, in order (events on one topic arrive in this order),
   * and returns each one's outcome. With `atomic`, every event is published or none is,
   * and a refusal rejects with the GatewayError.
   */
  async publishBatch(events: BatchEvent[], atomic = false): Promise<BatchOutcome[]> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    const body = JSON.stringify({ events, atomic });
    const response = await fetch(`${this.baseUrl}/v1/publish/batch`, { method: "POST", headers, body });
    if (!response.ok) throw await gatewayError(response);
    return ((await response.json()) as { results: BatchOutcome[] }).results;
  }

  /** The URL an EventSource subscribes with (it cannot send headers, so all in the query). */
  eventSourceUrl(topics: string[], token?: string): string {
    const query = new URLSearchParams(topics.map((t) => ["topic", t]));
    if (token) query.set("token", token);
    return `${this.baseUrl}/v1/stream?${query}`;
  }

  /**
   * Opens a subscription to `topics` (rejecting with a GatewayError if refused) and yields
   * its messages, reconnecting and resuming by itself.
   */
  async subscribe(topics: string[], options: SubscribeOptions = {}): Promise<AsyncGenerator<TidewayEvent | SystemMessage>> {
    const state = { lastEventId: options.lastEventId ?? null };
    const first = await this.open(topics, state.lastEventId, options);
    return this.messages(topics, first, state, options);
  }

  private async open(topics: string[], lastEventId: string | null, options: SubscribeOptions): Promise<Response> {
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (lastEventId) headers["last-event-id"] = lastEventId;
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    const query = new URLSearchParams(topics.map((t) => ["topic", t]));
    const response = await fetch(`${this.baseUrl}/v1/stream?${query}`, { headers, signal: options.signal });
    if (!response.ok || !response.body) throw await gatewayError(response);
    return response;
  }

  private async *messages(
    topics: string[],
    first: Response,
    state: { lastEventId: string | null },
    options: SubscribeOptions,
  ): AsyncGenerator<TidewayEvent | SystemMessage> {
    let response: Response | null = first;
    let delay = 250;
    const heartbeat = options.heartbeatTimeoutMs ?? 45_000;
    for (;;) {
      if (options.signal?.aborted) return;
      try {
        response ??= await this.open(topics, state.lastEventId, options);
        delay = 250;
        const reader = response.body!.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const silence = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error("no heartbeat")), heartbeat);
          });
          const { value, done } = await Promise.race([reader.read(), silence]).finally(() => clearTimeout(timer));
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          const parsed = parseBlocks(buffer);
          buffer = parsed.rest;
          for (const block of parsed.blocks) {
            if (block.data === null) continue;
            if (block.event?.startsWith("tideway.")) {
              yield { system: block.event, data: block.data };
              continue;
            }
            state.lastEventId = block.id;
            yield { topic: block.fields.topic ?? "", id: block.id ?? "", event: block.event, data: block.data };
          }
        }
        reader.cancel().catch(() => {});
      } catch (err) {
        if (err instanceof GatewayError && err.status >= 400 && err.status < 500 && err.status !== 429) throw err;
        if (options.signal?.aborted) return;
      }
      response = null;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, options.maxBackoffMs ?? 10_000);
    }
  }
}
