// A TypeScript client for Tideway, on fetch: it runs in browsers and in Node 20+.
//
// `publish` sends one event and says whether it was accepted or dropped; `publishBatch`
// sends many in one request, each with its outcome. Both give up on an exchange after a
// timeout and send it again, with the same ids, after a failure that may pass. `subscribe`
// reads a Server-Sent Events stream and keeps it open: when it drops, or stays silent past
// the heartbeat timeout, it reconnects with jittered backoff and resumes after the last
// event it saw (`Last-Event-ID`). It uses fetch rather than EventSource so it can send a
// token header and receive every event type; `eventSourceUrl` builds a URL for
// EventSource. The behaviour is written down once, for every Tideway client, in
// docs/clients.md.

import { backoffDelay, retryAfterMs, sleep as realSleep } from "./backoff.js";
import { parseBlocks } from "./sse.js";

export { backoffDelay, retryAfterMs } from "./backoff.js";
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
  /** For `tideway.gap`: why, and the topics that may be missing events. */
  gap?: Gap;
}

/** What a `tideway.gap` says: events of `topics` may be missing here (docs/delivery.md). */
export interface Gap {
  reason: string;
  topics: string[];
  lastEventId: string | null;
}

/** Where a subscription stands. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** Gives a subscriber token: called before the first connect, and again after the gateway
 * revoked or refused the last one (`tideway.revoked`, 401). */
export type TokenProvider = () => string | Promise<string>;

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
    /** The wait the gateway asked for (`Retry-After`), in milliseconds. */
    readonly retryAfterMs: number | null = null,
  ) {
    super(`${status} ${code}: ${message}`);
  }

  /** Whether the same request may succeed later: 408, 429 or 5xx. */
  get retryable(): boolean {
    return this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/** No answer within the client's timeout. */
export class TimeoutError extends Error {
  constructor(readonly timeoutMs: number) {
    super(`no answer from the gateway within ${timeoutMs} ms`);
  }
}

async function gatewayError(response: Response): Promise<GatewayError> {
  const text = await response.text();
  const wait = retryAfterMs(response.headers.get("retry-after"), 60_000);
  try {
    const body = JSON.parse(text) as { error: { code: string; message: string } };
    return new GatewayError(response.status, body.error.code, body.error.message, wait);
  } catch {
    return new GatewayError(response.status, "unknown", text, wait);
  }
}

/** How a client publishes; every field has a default. */
export interface ClientOptions {
  /** How long one exchange may take; default 10 s. */
  timeoutMs?: number;
  /** How many times a publish is sent again after a failure that may pass; default 3. */
  retries?: number;
  /** The fetch to use; default the global one. */
  fetch?: typeof fetch;
  /** Waits; tests pass a fake clock. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** A number in [0, 1) for jitter; tests pass a fixed one. */
  random?: () => number;
}

export interface SubscribeOptions {
  /** Resume after this id from the first connection on. */
  lastEventId?: string;
  /** Reconnect when nothing (not even a heartbeat) came for this long; default 45 s. */
  heartbeatTimeoutMs?: number;
  /** The backoff's first ceiling until the gateway says otherwise with `retry:`; default 1 s. */
  minBackoffMs?: number;
  /** The backoff's cap; default 30 s. */
  maxBackoffMs?: number;
  /** A fixed subscriber token, for private topics. */
  token?: string;
  /** Or one fetched when needed (first connect, revoked, refused). */
  tokenProvider?: TokenProvider;
  /** The tenant whose public topics to receive. */
  tenant?: string;
  /** Told every change of state. */
  onState?: (state: ConnectionState) => void;
  /** Stops the subscription. */
  signal?: AbortSignal;
}

const PUBLISH_BACKOFF_BASE_MS = 100;
const PUBLISH_BACKOFF_CAP_MS = 5_000;

export class Client {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly retries: number;
  /** @internal */ readonly fetch: typeof fetch;
  /** @internal */ readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** @internal */ readonly random: () => number;

  constructor(
    baseUrl: string,
    private readonly apiKey?: string,
    options: ClientOptions = {},
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.retries = options.retries ?? 3;
    this.fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.sleep = options.sleep ?? realSleep;
    this.random = options.random ?? Math.random;
  }

  /** Publishes `data` with `id` (and SSE type `event`) to `topics`. */
  async publish(topics: string[], id: string, data: string, event?: string): Promise<Published> {
    const headers: Record<string, string> = { "x-sse-topic": topics.join(","), "x-sse-id": id };
    if (event) headers["x-sse-event"] = event;
    return (await this.send("/v1/publish", headers, data)) as Published;
  }

  /**
   * Publishes `events` in one request, in order (events on one topic arrive in this order),
   * and returns each one's outcome. With `atomic`, every event is published or none is,
   * and a refusal rejects with the GatewayError. A store error stops the batch: that event
   * and every later one come back with status `error`, code `store_unavailable`; send them
   * again, in order, from the first (those that did land are answered as retries).
   */
  async publishBatch(events: BatchEvent[], atomic = false): Promise<BatchOutcome[]> {
    const body = JSON.stringify({ events, atomic });
    const reply = (await this.send("/v1/publish/batch", { "content-type": "application/json" }, body)) as {
      results: BatchOutcome[];
    };
    return reply.results;
  }

  /**
   * POSTs `body`, retrying network errors, timeouts, 408, 429 and 5xx up to `retries`
   * times. The request is the same each time (same ids), so the gateway delivers it once.
   */
  private async send(path: string, headers: Record<string, string>, body: string): Promise<unknown> {
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    for (let attempt = 0; ; attempt++) {
      let failure: unknown;
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(new TimeoutError(this.timeoutMs)), this.timeoutMs);
      try {
        const response = await this.fetch(`${this.baseUrl}${path}`, { method: "POST", headers, body, signal: controller.signal });
        if (response.ok) return await response.json();
        failure = await gatewayError(response);
      } catch (err) {
        failure = controller.signal.aborted ? controller.signal.reason : err;
      } finally {
        clearTimeout(timer);
      }
      const retryable = failure instanceof GatewayError ? failure.retryable : !(failure instanceof SyntaxError);
      if (!retryable || attempt >= this.retries) throw failure;
      const asked = failure instanceof GatewayError ? failure.retryAfterMs : null;
      await this.sleep(asked ?? backoffDelay(attempt, PUBLISH_BACKOFF_BASE_MS, PUBLISH_BACKOFF_CAP_MS, this.random));
    }
  }

  /** The URL an EventSource subscribes with (it cannot send headers, so all in the query). */
  eventSourceUrl(topics: string[], token?: string): string {
    const query = new URLSearchParams(topics.map((t) => ["topic", t]));
    if (token) query.set("token", token);
    return `${this.baseUrl}/v1/stream?${query}`;
  }

  /**
   * Subscribes to `topics`. Resolves once the stream is open, retrying while the gateway
   * is unreachable or busy; rejects with a GatewayError if it refuses (a bad topic, a
   * missing token). Iterate the subscription for messages; it reconnects and resumes by itself.
   */
  async subscribe(topics: string[], options: SubscribeOptions = {}): Promise<Subscription> {
    const subscription = new Subscription(this, topics, options);
    await subscription.connect(false);
    return subscription;
  }
}

/** An open subscription: iterate it for events and the gateway's own messages. */
export class Subscription implements AsyncIterable<TidewayEvent | SystemMessage> {
  /** The id a reconnect resumes after. */
  lastEventId: string | null;
  /** Where the subscription stands. */
  state: ConnectionState = "connecting";
  private response: Response | null = null;
  private stream: AbortController | null = null;
  private attempt = 0;
  private baseMs: number;
  private token: string | undefined;
  private needToken: boolean;
  private refusedTokens = 0;

  /** @internal */
  constructor(
    private readonly client: Client,
    private readonly topics: string[],
    private readonly options: SubscribeOptions,
  ) {
    this.lastEventId = options.lastEventId ?? null;
    this.baseMs = options.minBackoffMs ?? 1_000;
    this.token = options.token;
    this.needToken = options.tokenProvider !== undefined;
  }

  /** Ends the subscription. */
  close(): void {
    this.stream?.abort();
    this.setState("closed");
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    this.options.onState?.(state);
  }

  private get closed(): boolean {
    return this.state === "closed" || this.options.signal?.aborted === true;
  }

  /**
   * Opens a stream, trying until one opens (waiting first if `wait`), the gateway refuses,
   * or the subscription is closed.
   * @internal
   */
  async connect(wait: boolean): Promise<void> {
    let asked: number | null = null;
    for (;;) {
      if (this.closed) throw new Error("the subscription is closed");
      if (wait) {
        const delay = asked ?? backoffDelay(this.attempt++, this.baseMs, this.options.maxBackoffMs ?? 30_000, this.client.random);
        try {
          await this.client.sleep(delay, this.options.signal);
        } catch {
          this.setState("closed");
          throw new Error("the subscription is closed");
        }
      }
      wait = true;
      asked = null;
      if (this.needToken && this.options.tokenProvider) {
        this.token = await this.options.tokenProvider();
        this.needToken = false;
      }
      let failure: unknown;
      const controller = new AbortController();
      const onAbort = () => controller.abort();
      this.options.signal?.addEventListener("abort", onAbort, { once: true });
      // The answer's head must come within the client's timeout. (Node 20's fetch can
      // also lose a request whose connection closed before it was written: only this
      // timer then settles it.)
      const timer = setTimeout(() => controller.abort(new TimeoutError(this.client.timeoutMs)), this.client.timeoutMs);
      try {
        const response = await this.client.fetch(this.url(), { headers: this.headers(), signal: controller.signal });
        clearTimeout(timer);
        if (response.ok && response.body) {
          this.response = response;
          this.stream = controller;
          this.attempt = 0;
          this.refusedTokens = 0;
          this.setState("open");
          return;
        }
        failure = await gatewayError(response);
      } catch (err) {
        failure = err;
      } finally {
        clearTimeout(timer);
      }
      this.options.signal?.removeEventListener("abort", onAbort);
      if (this.closed) {
        this.setState("closed");
        throw failure;
      }
      if (failure instanceof GatewayError) {
        // A refused token is fetched again, once; a second refusal in a row is final.
        const tokenRefused = failure.status === 401 && this.options.tokenProvider !== undefined;
        if (tokenRefused && this.refusedTokens++ === 0) {
          this.needToken = true;
          wait = false;
          continue;
        }
        if (!failure.retryable) {
          this.setState("closed");
          throw failure;
        }
        asked = failure.retryAfterMs;
      }
    }
  }

  private url(): string {
    const query = new URLSearchParams(this.topics.map((t) => ["topic", t]));
    if (this.options.tenant) query.set("tenant", this.options.tenant);
    return `${this.client.baseUrl}/v1/stream?${query}`;
  }

  private headers(): Record<string, string> {
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (this.lastEventId) headers["last-event-id"] = this.lastEventId;
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    return headers;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TidewayEvent | SystemMessage> {
    const heartbeat = this.options.heartbeatTimeoutMs ?? 45_000;
    try {
      for (;;) {
        if (this.response === null) {
          this.setState("reconnecting");
          try {
            await this.connect(true);
          } catch (err) {
            if (this.closed) return;
            throw err;
          }
        }
        const reader = this.response!.body!.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        try {
          for (;;) {
            let timer: ReturnType<typeof setTimeout> | undefined;
            const silence = new Promise<"silent">((resolve) => {
              timer = setTimeout(() => resolve("silent"), heartbeat);
            });
            const read = await Promise.race([reader.read(), silence]).finally(() => clearTimeout(timer));
            if (read === "silent" || read.done) break;
            buffer += decoder.decode(read.value, { stream: true });
            const parsed = parseBlocks(buffer);
            buffer = parsed.rest;
            for (const block of parsed.blocks) {
              const retry = block.fields.retry;
              if (retry !== undefined && /^\d+$/.test(retry)) this.baseMs = Number(retry);
              if (block.data === null) continue;
              if (block.event?.startsWith("tideway.")) {
                if (block.event === "tideway.revoked" && this.options.tokenProvider) this.needToken = true;
                yield systemMessage(block.event, block.data);
                continue;
              }
              this.lastEventId = block.id;
              yield { topic: block.fields.topic ?? "", id: block.id ?? "", event: block.event, data: block.data };
            }
          }
        } catch {
          // the stream broke: reconnect below
        } finally {
          // A stalled or finished stream is cancelled, so its connection is given back.
          this.stream?.abort();
          reader.cancel().catch(() => {});
          this.response = null;
        }
        if (this.closed) return;
      }
    } finally {
      this.stream?.abort();
      this.setState("closed");
    }
  }
}

function systemMessage(system: string, data: string): SystemMessage {
  if (system !== "tideway.gap") return { system, data };
  try {
    const body = JSON.parse(data) as { reason?: string; topics?: string[]; lastEventId?: string };
    const gap = { reason: body.reason ?? "", topics: body.topics ?? [], lastEventId: body.lastEventId ?? null };
    return { system, data, gap };
  } catch {
    return { system, data };
  }
}
