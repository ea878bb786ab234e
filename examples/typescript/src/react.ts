// `useTopics`: a React hook that keeps the latest events of some topics.

import { useEffect, useState } from "react";

import { Client, type TidewayEvent } from "./index.js";

export interface TopicsState {
  /** The latest events, oldest first (at most `keep`). */
  events: TidewayEvent[];
  /** Why the subscription was refused, if it was. */
  error: string | null;
}

/** Subscribes to `topics` on the gateway at `baseUrl` while the component is mounted. */
export function useTopics(baseUrl: string, topics: string[], options: { keep?: number; token?: string } = {}): TopicsState {
  const [state, setState] = useState<TopicsState>({ events: [], error: null });
  const key = topics.join(",");
  const keep = options.keep ?? 100;
  useEffect(() => {
    const abort = new AbortController();
    const client = new Client(baseUrl);
    (async () => {
      const messages = await client.subscribe(key.split(","), { token: options.token, signal: abort.signal });
      for await (const message of messages) {
        if ("topic" in message) {
          setState((s) => ({ ...s, events: [...s.events, message].slice(-keep) }));
        }
      }
    })().catch((err: unknown) => {
      if (!abort.signal.aborted) setState((s) => ({ ...s, error: String(err) }));
    });
    return () => abort.abort();
  }, [baseUrl, key, keep, options.token]);
  return state;
}
