import { DurableObject } from "cloudflare:workers";

import type { Env } from "./env";
import {
  type ConnectionChange,
  type ConnectionRecord,
  type NodeRecord,
  deleteKeys,
  digest,
  padded,
} from "./model";

/** A registered node: what it said of itself, and when it must beat again by. */
interface NodeEntry {
  record: NodeRecord;
  lastHeartbeat: number;
  expiresAt: number;
  /** The topic grace its gateway runs with: its topics' grace when it is reaped. */
  graceMs: number;
}

/**
 * The directory, one object for the whole store: nodes and their heartbeats, connections
 * in arrival order, the index of live topic names (an object cannot list its siblings)
 * and revoked tokens. Storage: `n:<node>`, `c:<arrival>`, `a:<connection>`, `next`,
 * `t:<topic>`, `r:<token id>`. Its alarm reaps the nodes whose heartbeat lapsed, with
 * their connections and memberships.
 */
export class Directory extends DurableObject<Env> {
  private nodes = new Map<string, NodeEntry>();
  private connections = new Map<number, ConnectionRecord>();
  private arrivals = new Map<string, number>();
  private next = 0;
  private topics = new Set<string>();
  private revoked = new Map<string, number>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    void ctx.blockConcurrencyWhile(async () => {
      const storage = this.ctx.storage;
      for (const [key, entry] of await storage.list<NodeEntry>({ prefix: "n:" })) {
        this.nodes.set(key.slice(2), entry);
      }
      for (const [key, record] of await storage.list<ConnectionRecord>({ prefix: "c:" })) {
        const arrival = Number(key.slice(2));
        this.connections.set(arrival, record);
        this.arrivals.set(record.id, arrival);
      }
      this.next = (await storage.get<number>("next")) ?? 0;
      for (const key of (await storage.list({ prefix: "t:" })).keys()) {
        this.topics.add(key.slice(2));
      }
      for (const [key, until] of await storage.list<number>({ prefix: "r:" })) {
        this.revoked.set(key.slice(2), until);
      }
    });
  }

  /**
   * Registers or refreshes `node` for `ttlMs`. Returns whether the directory knew it, how
   * many connections it holds for it and their ids' digest.
   */
  async beat(
    record: NodeRecord,
    ttlMs: number,
    graceMs: number,
  ): Promise<{ existed: boolean; held: number; digest: number }> {
    const now = Date.now();
    const existed = this.nodes.has(record.id);
    const entry: NodeEntry = { record, lastHeartbeat: now, expiresAt: now + ttlMs, graceMs };
    this.nodes.set(record.id, entry);
    await this.ctx.storage.put(`n:${record.id}`, entry);
    await this.schedule();
    const ids: string[] = [];
    for (const connection of this.connections.values()) {
      if (connection.node === record.id) {
        ids.push(connection.id);
      }
    }
    return { existed, held: ids.length, digest: digest(ids) };
  }

  private async schedule(): Promise<void> {
    let earliest = Number.POSITIVE_INFINITY;
    for (const entry of this.nodes.values()) {
      earliest = Math.min(earliest, entry.expiresAt);
    }
    if (Number.isFinite(earliest)) {
      await this.ctx.storage.setAlarm(earliest);
    }
  }

  /** Every node, in id order, with its counts and last heartbeat. */
  async list(): Promise<NodeRecord[]> {
    const counts = new Map<string, { connections: number; topics: Set<string> }>();
    for (const connection of this.connections.values()) {
      let count = counts.get(connection.node);
      if (count === undefined) {
        count = { connections: 0, topics: new Set() };
        counts.set(connection.node, count);
      }
      count.connections += 1;
      for (const topic of connection.topics) {
        count.topics.add(topic);
      }
    }
    return [...this.nodes.values()]
      .sort((a, b) => (a.record.id < b.record.id ? -1 : a.record.id > b.record.id ? 1 : 0))
      .map((entry) => ({
        ...entry.record,
        connections: counts.get(entry.record.id)?.connections ?? 0,
        topics: counts.get(entry.record.id)?.topics.size ?? 0,
        lastHeartbeat: entry.lastHeartbeat,
      }));
  }

  /** Node ids, for a revocation sent to every node's channel. */
  async nodeIds(): Promise<string[]> {
    return [...this.nodes.keys()];
  }

  /** Applies a node's additions and removals of connections, in their order. */
  async applyConnections(changes: ConnectionChange[]): Promise<void> {
    for (const change of changes) {
      if (change.op === "add") {
        await this.addConnection(change.connection);
      } else {
        await this.removeConnection(change.id);
      }
    }
  }

  /** Adds a connection after every one before it (again: its place is kept). */
  private async addConnection(record: ConnectionRecord): Promise<void> {
    let arrival = this.arrivals.get(record.id);
    const writes: Record<string, unknown> = {};
    if (arrival === undefined) {
      this.next += 1;
      arrival = this.next;
      this.arrivals.set(record.id, arrival);
      writes.next = this.next;
      writes[`a:${record.id}`] = arrival;
    }
    this.connections.set(arrival, record);
    writes[`c:${padded(arrival)}`] = record;
    await this.ctx.storage.put(writes);
  }

  /** Forgets connection `id`. */
  private async removeConnection(id: string): Promise<void> {
    const arrival = this.arrivals.get(id);
    if (arrival === undefined) {
      return;
    }
    this.arrivals.delete(id);
    this.connections.delete(arrival);
    await this.ctx.storage.delete([`a:${id}`, `c:${padded(arrival)}`]);
  }

  /** Every connection in arrival order (the gateway pages and filters them). */
  async listConnections(): Promise<ConnectionRecord[]> {
    return [...this.connections.entries()].sort((a, b) => a[0] - b[0]).map((entry) => entry[1]);
  }

  /** The ids of `node`'s connections. */
  async connectionsOf(node: string): Promise<string[]> {
    return [...this.connections.values()].filter((c) => c.node === node).map((c) => c.id);
  }

  /** Puts a topic in the index of live topics, or takes it out. */
  async track(topic: string, live: boolean): Promise<void> {
    if (live) {
      this.topics.add(topic);
      await this.ctx.storage.put(`t:${topic}`, 1);
    } else {
      this.topics.delete(topic);
      await this.ctx.storage.delete(`t:${topic}`);
    }
  }

  /** The names of the live topics, sorted. */
  async topicNames(): Promise<string[]> {
    return [...this.topics].sort();
  }

  /** Revokes token `id` until `until` (ms since the Unix epoch); forgets lapsed ones. */
  async revoke(id: string, until: number): Promise<void> {
    const now = Date.now();
    const lapsed = [...this.revoked].filter(([, u]) => u <= now).map(([k]) => k);
    for (const key of lapsed) {
      this.revoked.delete(key);
    }
    this.revoked.set(id, until);
    await deleteKeys(
      this.ctx.storage,
      lapsed.map((k) => `r:${k}`),
    );
    await this.ctx.storage.put(`r:${id}`, until);
  }

  /** Which of `ids` are revoked now. */
  async revokedAmong(ids: string[]): Promise<string[]> {
    const now = Date.now();
    return ids.filter((id) => (this.revoked.get(id) ?? 0) > now);
  }

  /** Reaps the nodes whose heartbeat lapsed: their connections and their memberships. */
  override async alarm(): Promise<void> {
    const now = Date.now();
    for (const [id, entry] of [...this.nodes]) {
      if (entry.expiresAt <= now) {
        await this.reap(id, entry.graceMs);
      }
    }
    await this.schedule();
  }

  /**
   * Forgets node `id` with its connections and memberships: a node starting under an
   * id an earlier process used clears what that process left.
   */
  async forget(id: string, graceMs: number): Promise<void> {
    await this.reap(id, this.nodes.get(id)?.graceMs ?? graceMs);
  }

  private async reap(id: string, graceMs: number): Promise<void> {
    this.nodes.delete(id);
    await this.ctx.storage.delete(`n:${id}`);
    const topics = new Set<string>();
    for (const [arrival, connection] of [...this.connections]) {
      if (connection.node !== id) {
        continue;
      }
      for (const topic of connection.topics) {
        topics.add(topic);
      }
      this.connections.delete(arrival);
      this.arrivals.delete(connection.id);
      await this.ctx.storage.delete([`a:${connection.id}`, `c:${padded(arrival)}`]);
    }
    for (const topic of topics) {
      const stub = this.env.TOPIC.get(this.env.TOPIC.idFromName(topic));
      if (await stub.leave(id, null, graceMs)) {
        await this.track(topic, false);
      }
    }
  }
}
