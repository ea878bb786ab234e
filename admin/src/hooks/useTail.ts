// A topic's recent events, followed live over the admin API's streaming tail.
import { useEffect, useState } from "react";

import { apiError, tailPath, type TailEvent } from "@/lib/api";
import { readSse } from "@/lib/sse";

export interface TailState {
  events: TailEvent[];
  /** Whether the topic has subscribers; null until the gateway says. */
  live: boolean | null;
  error: string | null;
}

/** Keeps at most this many events on screen. */
const KEEP = 500;

export function useTail(key: string, topic: string | null, onUnauthorized: () => void): TailState {
  const [state, setState] = useState<TailState>({ events: [], live: null, error: null });

  useEffect(() => {
    setState({ events: [], live: null, error: null });
    if (!topic) return;
    const abort = new AbortController();
    (async () => {
      const response = await fetch(tailPath(topic, 100, true), {
        headers: { Authorization: `Bearer ${key}` },
        signal: abort.signal,
      });
      if (!response.ok || !response.body) {
        const err = await apiError(response);
        if (err.status === 401) onUnauthorized();
        setState((s) => ({ ...s, error: err.message }));
        return;
      }
      await readSse(response.body, (message) => {
        if (message.event === "tideway.topic_state") {
          const { live } = JSON.parse(message.data) as { live: boolean };
          setState((s) => ({ ...s, live }));
        } else if (message.event === "message") {
          const event = JSON.parse(message.data) as TailEvent;
          setState((s) => ({ ...s, events: [...s.events, event].slice(-KEEP) }));
        }
      });
    })().catch((err: unknown) => {
      if (!abort.signal.aborted) setState((s) => ({ ...s, error: String(err) }));
    });
    return () => abort.abort();
  }, [key, topic, onUnauthorized]);

  return state;
}
