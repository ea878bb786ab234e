// `useTopics`: a React hook that keeps the latest events of some topics.

import { useEffect, useState } from "react";

import { Client, type ConnectionState, type Gap, type SubscribeOptions, type TidewayEvent } from "./index.js";

export interface TopicsState {
  /** The latest events of the current topics, oldest first (at most `keep`). */
  events: TidewayEvent[];
  /** Where the subscription stands. */
  state: ConnectionState;
  /** Gaps the gateway reported since the topics were set: refetch what you derive from their topics. */
  gaps: Gap[];
  /** Why the subscription was refused, if it was; cleared when a stream opens. */
  error: string | null;
}

export interface UseTopicsOptions {
  /** How many events to keep; default 100. */
  keep?: number;
  /** A fixed subscriber token. */
  token?: string;
  /** Or one fetched when needed; keep its identity stable (useCallback). */
  tokenProvider?: SubscribeOptions["tokenProvider"];
}

const initial: TopicsState = { events: [], state: "connecting", gaps: [], error: null };

/**
 * Subscribes to `topics` on the gateway at `baseUrl` while the component is mounted. A
 * change of topics starts afresh (events and gaps of the old topics are dropped). Each
 * effect run owns its own subscription and aborts it on cleanup, so StrictMode's double
 * run leaves one stream open.
 */
export function useTopics(baseUrl: string, topics: string[], options: UseTopicsOptions = {}): TopicsState {
  const [state, setState] = useState<TopicsState>(initial);
  const key = topics.join(",");
  const keep = options.keep ?? 100;
  const { token, tokenProvider } = options;
  useEffect(() => {
    const abort = new AbortController();
    const update = (change: (s: TopicsState) => TopicsState) => {
      if (!abort.signal.aborted) setState(change);
    };
    setState(initial);
    const client = new Client(baseUrl);
    (async () => {
      const subscription = await client.subscribe(key.split(","), {
        token,
        tokenProvider,
        signal: abort.signal,
        onState: (connection) =>
          update((s) => ({ ...s, state: connection, error: connection === "open" ? null : s.error })),
      });
      for await (const message of subscription) {
        if ("topic" in message) {
          update((s) => ({ ...s, events: [...s.events, message].slice(-keep) }));
        } else if (message.gap) {
          const gap = message.gap;
          update((s) => ({ ...s, gaps: [...s.gaps, gap] }));
        }
      }
    })().catch((err: unknown) => update((s) => ({ ...s, state: "closed", error: String(err) })));
    return () => abort.abort();
  }, [baseUrl, key, keep, token, tokenProvider]);
  return state;
}
