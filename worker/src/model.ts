// What the gateway nodes and the objects exchange. Epochs are decimal strings: they are
// random 64-bit numbers, past what a JavaScript number holds exactly.

/** One published event, as a publisher sent it. */
export interface Event {
  id: string;
  type: string | null;
  data: string;
  publishedAt: number;
}

/** One topic's copy of an event: its place in the topic and in the store's order. */
export interface TopicEvent {
  topic: string;
  seq: number;
  position: number;
  event: Event;
}

/** A connection as the directory lists it; the gateway owns its shape. */
export interface ConnectionRecord {
  id: string;
  node: string;
  topics: string[];
  [field: string]: unknown;
}

/** A node as it registers itself; the directory adds its heartbeat and counts. */
export interface NodeRecord {
  id: string;
  hostname: string;
  advertiseHost: string;
  startedAt: number;
  [field: string]: unknown;
}

/** What one topic's history says about a resume or a repair (see tideway-core's resume.rs). */
export interface TopicHistory {
  topic: string;
  createdAfter: number;
  evictedThrough: number;
  head: number;
  matches: number[];
  events: TopicEvent[];
}

/** A message on a node's channel: a publish's copies for that node, or a marker (no copies). */
export interface Delivery {
  epoch: string;
  position: number;
  number: number;
  copies: TopicEvent[] | null;
}

/**
 * One message at a time. A Durable Object runs one event at a time only until it awaits
 * something outside its storage: another object's answer lets the next request in. The
 * objects whose messages must not interleave (the sequencer's publishes, a topic coming
 * into being) take their turn here.
 */
export class Turn {
  private last: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const next = this.last.then(work, work);
    this.last = next.catch(() => undefined);
    return next;
  }
}

/** A 64-bit random epoch as a decimal string. */
export function newEpoch(): string {
  const words = new Uint32Array(2);
  crypto.getRandomValues(words);
  const value = (BigInt(words[0] ?? 0) << 32n) | BigInt(words[1] ?? 0);
  return (value === 0n ? 1n : value).toString();
}

/** Keys that sort as their numbers do. */
/**
 * A digest of a set of connection ids that does not depend on their order: the sum mod
 * 2^32 of each id's FNV-1a (32-bit, over its UTF-8 bytes). The gateway computes the same
 * (`tideway_core::connection_digest`) over the connections it holds, so a heartbeat sees
 * a difference a count would miss (one connection lost, another left behind).
 */
export function digest(ids: Iterable<string>): number {
  const utf8 = new TextEncoder();
  let sum = 0;
  for (const id of ids) {
    let hash = 0x811c9dc5;
    for (const byte of utf8.encode(id)) {
      hash = Math.imul(hash ^ byte, 16777619) >>> 0;
    }
    sum = (sum + hash) >>> 0;
  }
  return sum;
}

export function padded(n: number): string {
  return n.toString().padStart(16, "0");
}

/** The most keys one storage call takes. */
const KEYS_PER_CALL = 128;

/** `items` (keys, or entries to write) in slices one storage call each takes. */
export function perCall<T>(items: T[]): T[][] {
  const calls: T[][] = [];
  for (let at = 0; at < items.length; at += KEYS_PER_CALL) {
    calls.push(items.slice(at, at + KEYS_PER_CALL));
  }
  return calls;
}

/** Deletes `keys`, however many, in calls of at most 128 keys. */
export async function deleteKeys(storage: DurableObjectStorage, keys: string[]): Promise<void> {
  for (const some of perCall(keys)) {
    await storage.delete(some);
  }
}

/** A join or a leave of one connection of a node, as the node sent it. */
export interface Membership {
  op: "join" | "leave";
  node: string;
  connection: string;
}

/** A connection a node added or removed, as the node sent it. */
export type ConnectionChange =
  | { op: "add"; connection: ConnectionRecord }
  | { op: "remove"; id: string };
