// A topic's recent events, followed live over the admin API's streaming tail, and
// followed again after the stream ends (the node drained) or the network fails.
import { useEffect, useState } from "react";

import { apiError, apiUrl, tailPath, type TailEvent } from "@/lib/api";
import { readSse } from "@/lib/sse";

/** Where the follow stands: opening, streaming, or waiting to open again. */
export type Following = "connecting" | "following" | "reconnecting";

export interface TailState {
  events: TailEvent[];
  /** Whether the topic has subscribers; null until the gateway says. */
  live: boolean | null;
  following: Following;
  error: string | null;
}

/** Keeps at most this many events on screen. */
const KEEP = 500;
/** The wait before following again: doubling from the first to the last. */
const RETRY_MS = [500, 1000, 2000, 4000];

/** An event's identity: a tail opened again repeats what the last one showed. */
function identity(event: TailEvent): string {
  return `${event.seq}\u0000${event.id}\u0000${event.publishedAt}`;
}

export function useTail(key: string, topic: string | null, onUnauthorized: () => void): TailState {
  const [state, setState] = useState<TailState>({ events: [], live: null, following: "connecting", error: null });

  useEffect(() => {
    setState({ events: [], live: null, following: "connecting", error: null });
    if (!topic) return;
    const abort = new AbortController();
    const shown = new Set<string>();
    const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    (async () => {
      for (let attempt = 0; !abort.signal.aborted; attempt++) {
        try {
          const response = await fetch(apiUrl(tailPath(topic, 100, true)), {
            headers: { Authorization: `Bearer ${key}` },
            signal: abort.signal,
          });
          if (!response.ok || !response.body) {
            const err = await apiError(response);
            if (err.status === 401) {
              onUnauthorized();
              return;
            }
            // Another refusal (the topic is gone, the node drains): shown, tried again.
            setState((s) => ({ ...s, following: "reconnecting", error: err.message }));
          } else {
            attempt = 0;
            // Whether the topic is live is this stream's to say: what the last one said
            // may be stale (the node restarted, the topic went and came back).
            setState((s) => ({ ...s, live: null, following: "following", error: null }));
            await readSse(response.body, (message) => {
              if (message.event === "tideway.topic_state") {
                const { live } = JSON.parse(message.data) as { live: boolean };
                setState((s) => ({ ...s, live }));
              } else if (message.event === "message") {
                const event = JSON.parse(message.data) as TailEvent;
                if (shown.has(identity(event))) return;
                shown.add(identity(event));
                setState((s) => ({ ...s, events: [...s.events, event].slice(-KEEP) }));
              }
            });
            if (abort.signal.aborted) return;
            setState((s) => ({ ...s, following: "reconnecting", error: "the stream ended (the node may be draining)" }));
          }
        } catch (err: unknown) {
          if (abort.signal.aborted) return;
          setState((s) => ({ ...s, following: "reconnecting", error: String(err) }));
        }
        await wait(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
      }
    })();
    return () => abort.abort();
  }, [key, topic, onUnauthorized]);

  return state;
}
