import { DurableObject } from "cloudflare:workers";

import type { Env } from "./env";
import {
  type Event,
  type Membership,
  type TopicEvent,
  type TopicHistory,
  Turn,
  deleteKeys,
  padded,
  perCall,
} from "./model";

/** What a topic keeps besides its members and history, under the key `meta`. */
interface Meta {
  name: string;
  /** The last position the sequencer had given out when the topic came into being. */
  createdAfter: number;
  createdAt: number;
  /** The last sequence number given out; also how many events it ever had. */
  seq: number;
  /** The position of the newest event the history evicted (0 if none). */
  evictedThrough: number;
  lastEventAt: number | null;
  /** When the grace of a topic without connections ends (ms since the Unix epoch). */
  graceUntil: number | null;
  /** Events kept. */
  capacity: number;
}

/** A topic's copy of a publish, and the nodes holding its subscribers. */
export interface Appended {
  event: TopicEvent | null;
  nodes: string[];
}

/** The key of a member: a connection of a node. */
function memberKey(node: string, connection: string): string {
  return `m:${JSON.stringify([node, connection])}`;
}

/**
 * One topic: its members (connections, by node), its bounded history and its grace.
 * Storage: `meta`, `m:<[node,connection]>` per member, `h:<seq>` per event held and
 * `i:<event id>` (the seq of the oldest event with that id still held). Everything is
 * also held in memory, read back from storage when the object starts.
 */
export class Topic extends DurableObject<Env> {
  private meta: Meta | null = null;
  private members = new Map<string, Set<string>>();
  private history: TopicEvent[] = [];
  private ids = new Map<string, number>();
  private turn = new Turn();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    void ctx.blockConcurrencyWhile(() => this.load());
  }

  private async load(): Promise<void> {
    this.meta = (await this.ctx.storage.get<Meta>("meta")) ?? null;
    if (this.meta === null) {
      return;
    }
    for (const key of (await this.ctx.storage.list({ prefix: "m:" })).keys()) {
      const [node, connection] = JSON.parse(key.slice(2)) as [string, string];
      this.member(node).add(connection);
    }
    this.history = [...(await this.ctx.storage.list<TopicEvent>({ prefix: "h:" })).values()];
    for (const event of this.history) {
      if (!this.ids.has(event.event.id)) {
        this.ids.set(event.event.id, event.seq);
      }
    }
  }

  private member(node: string): Set<string> {
    let set = this.members.get(node);
    if (set === undefined) {
      set = new Set();
      this.members.set(node, set);
    }
    return set;
  }

  private connections(): number {
    let n = 0;
    for (const set of this.members.values()) {
      n += set.size;
    }
    return n;
  }

  /** Live: a connection, or a grace still running. */
  private isLive(): boolean {
    if (this.meta === null) {
      return false;
    }
    if (this.connections() > 0) {
      return true;
    }
    return this.meta.graceUntil !== null && Date.now() < this.meta.graceUntil;
  }

  /** Whether the topic is live; one whose grace ran out is emptied first. */
  private async live(): Promise<boolean> {
    if (this.isLive()) {
      return true;
    }
    if (this.meta !== null) {
      await this.end();
    }
    return false;
  }

  /** Forgets everything: the topic is gone (its directory entry is the caller's). */
  private async end(): Promise<void> {
    await this.ctx.storage.deleteAll();
    await this.ctx.storage.deleteAlarm();
    this.meta = null;
    this.members.clear();
    this.history = [];
    this.ids.clear();
  }

  /**
   * Joins a connection of `node`; a topic that was not live comes into being after the
   * sequencer's last position, with room for `capacity` events. Returns whether it came
   * into being. Its turn is held while it asks the sequencer: a publish arriving then
   * waits, and finds the topic live.
   */
  private async join(
    name: string,
    node: string,
    connection: string,
    capacity: number,
  ): Promise<boolean> {
    const created = !(await this.live());
    if (created) {
      const sequencer = this.env.SEQUENCER.get(this.env.SEQUENCER.idFromName("sequencer"));
      const issued = await sequencer.issued();
      this.meta = {
        name,
        createdAfter: issued,
        createdAt: Date.now(),
        seq: 0,
        evictedThrough: 0,
        lastEventAt: null,
        graceUntil: null,
        capacity,
      };
    }
    // `meta` is written only when it changed: joins of a live topic, thousands at once
    // when a crowd subscribes, each write their member alone.
    let changed = created;
    if (this.meta !== null && this.meta.graceUntil !== null) {
      this.meta.graceUntil = null;
      changed = true;
      await this.ctx.storage.deleteAlarm();
    }
    this.member(node).add(connection);
    const writes: Record<string, unknown> = { [memberKey(node, connection)]: 1 };
    if (changed) {
      writes.meta = this.meta;
    }
    await this.ctx.storage.put(writes);
    return created;
  }

  /**
   * Leaves connections of `node` (all of them when `connections` is null: the node is
   * gone). The last one to leave starts the grace, or with none ends the topic at once;
   * returns whether it ended.
   */
  async leave(node: string, connections: string[] | null, graceMs: number): Promise<boolean> {
    return this.turn.run(() => this.leaveNow(node, connections, graceMs));
  }

  /**
   * Applies a node's joins and leaves of this topic in their order, in one turn: what a
   * crowd subscribing or going away at once costs is one message per topic, not one per
   * connection. Returns what the directory's index must learn: `true` if the topic came
   * into being (and is live), `false` if it ended (and is not), `null` if neither.
   */
  async apply(name: string, changes: Membership[], capacity: number, graceMs: number) {
    return this.turn.run(async (): Promise<boolean | null> => {
      let tell: boolean | null = null;
      for (const change of changes) {
        if (change.op === "join") {
          if (await this.join(name, change.node, change.connection, capacity)) {
            tell = true;
          }
        } else if (await this.leaveNow(change.node, [change.connection], graceMs)) {
          tell = false;
        }
      }
      return tell;
    });
  }

  private async leaveNow(
    node: string,
    connections: string[] | null,
    graceMs: number,
  ): Promise<boolean> {
    if (this.meta === null) {
      return false;
    }
    const set = this.members.get(node);
    const leaving = connections ?? [...(set ?? [])];
    for (const connection of leaving) {
      set?.delete(connection);
    }
    if (set !== undefined && set.size === 0) {
      this.members.delete(node);
    }
    await deleteKeys(this.ctx.storage, leaving.map((c) => memberKey(node, c)));
    if (this.connections() > 0) {
      return false;
    }
    if (graceMs <= 0) {
      await this.end();
      return true;
    }
    if (this.meta.graceUntil === null) {
      this.meta.graceUntil = Date.now() + graceMs;
      await this.ctx.storage.put("meta", this.meta);
      await this.ctx.storage.setAlarm(this.meta.graceUntil);
    }
    return false;
  }

  /** The grace ran out: the topic ends, and leaves the directory's index. */
  override async alarm(): Promise<void> {
    const ended = await this.turn.run(async () => {
      const name = this.meta?.name;
      if (await this.live()) {
        // Woken before the grace ran out (or a member came back): wake again at its end.
        if (this.meta !== null && this.meta.graceUntil !== null && this.connections() === 0) {
          await this.ctx.storage.setAlarm(this.meta.graceUntil);
        }
        return null;
      }
      return name;
    });
    if (ended !== null && ended !== undefined) {
      const directory = this.env.DIRECTORY.get(this.env.DIRECTORY.idFromName("directory"));
      await directory.track(ended, false);
    }
  }

  /** Whether the topic is live. */
  async isLiveNow(): Promise<boolean> {
    return this.turn.run(() => this.live());
  }

  /**
   * Whether it is live, and for each of `ids` the oldest event with that id it holds (a
   * retried publish) or null: one call for all of a batch's events to this topic. With
   * its last sequence number and its capacity, so the caller can tell which of them a
   * batch's own appends will have evicted by the time a later event of it comes.
   */
  async findAll(
    ids: string[],
  ): Promise<{ live: boolean; seq: number; capacity: number; firsts: (TopicEvent | null)[] }> {
    return this.turn.run(async () => {
      if (!(await this.live()) || this.meta === null) {
        return { live: false, seq: 0, capacity: 0, firsts: ids.map(() => null) };
      }
      const firsts = ids.map((id) => {
        const seq = this.ids.get(id);
        return seq === undefined ? null : this.bySeq(seq);
      });
      return { live: true, seq: this.meta.seq, capacity: this.meta.capacity, firsts };
    });
  }

  private bySeq(seq: number): TopicEvent | null {
    const oldest = this.history[0];
    if (oldest === undefined) {
      return null;
    }
    return this.history[seq - oldest.seq] ?? null;
  }

  /**
   * Records each of `entries` (positions rising) when the topic is live, in one turn and
   * one storage transaction: a publish, or a batch's run of publishes to this topic.
   * Taken again with a position it has (the sequencer finishing publishes after a
   * restart) it answers with what it recorded the first time. Answers each in order.
   */
  async appendAll(entries: { position: number; event: Event }[]): Promise<Appended[]> {
    return this.turn.run(async () => {
      if (!(await this.live()) || this.meta === null) {
        return entries.map(() => ({ event: null, nodes: [] }));
      }
      const meta = this.meta;
      const nodes = [...this.members.keys()];
      // What to write and what to delete, each key in one of the two as its last change
      // left it: an event may be appended and evicted within one call.
      const writes = new Map<string, unknown>();
      const deletes = new Set<string>();
      const write = (key: string, value: unknown) => {
        deletes.delete(key);
        writes.set(key, value);
      };
      const remove = (key: string) => {
        writes.delete(key);
        deletes.add(key);
      };
      const answers: Appended[] = [];
      for (const { position, event } of entries) {
        const newest = this.history[this.history.length - 1];
        if (position <= Math.max(newest?.position ?? 0, meta.evictedThrough)) {
          const same = this.history.find((e) => e.position === position) ?? null;
          answers.push({ event: same, nodes });
          continue;
        }
        meta.seq += 1;
        meta.lastEventAt = event.publishedAt;
        const appended: TopicEvent = { topic: meta.name, seq: meta.seq, position, event };
        write(`h:${padded(appended.seq)}`, appended);
        this.history.push(appended);
        if (!this.ids.has(event.id)) {
          this.ids.set(event.id, appended.seq);
          write(`i:${event.id}`, appended.seq);
        }
        while (this.history.length > meta.capacity) {
          const old = this.history.shift();
          if (old === undefined) {
            break;
          }
          meta.evictedThrough = old.position;
          remove(`h:${padded(old.seq)}`);
          if (this.ids.get(old.event.id) === old.seq) {
            this.ids.delete(old.event.id);
            remove(`i:${old.event.id}`);
          }
        }
        answers.push({ event: appended, nodes });
      }
      if (writes.size > 0 || deletes.size > 0) {
        write("meta", meta);
        await this.store(writes, deletes);
      }
      return answers;
    });
  }

  /**
   * Writes `writes` and deletes `deletes` as one transaction: a storage call takes at most
   * 128 keys, and calls made with no await between them are committed together, so the
   * history, the id index and `meta` never disagree after a restart.
   */
  private async store(writes: Map<string, unknown>, deletes: Set<string>): Promise<void> {
    const storage = this.ctx.storage;
    await Promise.all([
      ...perCall([...writes]).map((some) => storage.put(Object.fromEntries(some))),
      ...perCall([...deletes]).map((some) => storage.delete(some)),
    ]);
  }

  /** The last `limit` events, or null when the topic is not live. */
  async tail(limit: number): Promise<TopicEvent[] | null> {
    return this.turn.run(async () => {
      if (!(await this.live())) {
        return null;
      }
      return limit <= 0 ? [] : this.history.slice(-limit);
    });
  }

  /** A resume's first read: whether it is live and where `id` first appears. */
  async locate(id: string): Promise<{ live: boolean; match: number | null }> {
    return this.turn.run(async () => {
      if (!(await this.live())) {
        return { live: false, match: null };
      }
      const seq = this.ids.get(id);
      const first = seq === undefined ? null : this.bySeq(seq);
      return { live: true, match: first?.position ?? null };
    });
  }

  /**
   * The topic's history between positions `after` and `before` (exclusive), with where
   * it starts to be complete; null when it is not live.
   */
  async between(
    after: number,
    before: number,
    match: number | null,
    head: number,
  ): Promise<TopicHistory | null> {
    return this.turn.run(async () => {
      if (!(await this.live()) || this.meta === null) {
        return null;
      }
      return {
        topic: this.meta.name,
        createdAfter: this.meta.createdAfter,
        evictedThrough: this.meta.evictedThrough,
        head,
        matches: match === null ? [] : [match],
        events: this.history.filter((e) => e.position > after && e.position < before),
      };
    });
  }

  /** Its record for listings, or null when it is not live. */
  async record(): Promise<Record<string, unknown> | null> {
    return this.turn.run(async () => {
      if (!(await this.live()) || this.meta === null) {
        return null;
      }
      return {
        name: this.meta.name,
        connections: this.connections(),
        events: this.meta.seq,
        createdAt: this.meta.createdAt,
        lastEventAt: this.meta.lastEventAt,
      };
    });
  }
}
