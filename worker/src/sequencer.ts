import { DurableObject } from "cloudflare:workers";

import type { Env } from "./env";
import { type Delivery, type Event, type TopicEvent, type TopicHistory, Turn, newEpoch } from "./model";

/** A publish that took its position and is not yet with every node. */
interface Pending {
  position: number;
  topics: string[];
  event: Event;
  /** Once every topic took it: its copies, and the message for each node. */
  copies: TopicEvent[] | null;
  messages: { node: string; delivery: Delivery }[] | null;
}

/** One consistent read of the histories of some topics, at the sequencer's epoch. */
export interface HistoryRead {
  epoch: string;
  topics: TopicHistory[];
}

/** Past every position: a read that wants no events. */
const NONE = Number.MAX_SAFE_INTEGER;

/**
 * The sequencer, one object for the whole store: gives each publish its position, hands
 * it to each topic object, then each node's copies to that node's channel, numbered per
 * node so a node notices any message it did not get. One publish at a time (its turn),
 * so every topic and every node sees publishes in position order. A resume's read takes
 * the turn too: no publish lands between the reads of two topics.
 *
 * Storage: `epoch` (random, taken when its storage is empty), `issued` (the last
 * position), `n:<node>` (the last message number sent to each node) and `pending` (a
 * publish between taking its position and reaching every node). A publish cut off by a
 * restart is finished by the next message: topics and channels recognise a position or
 * a number they already took.
 */
export class Sequencer extends DurableObject<Env> {
  private epoch = "";
  private last = 0;
  private numbers = new Map<string, number>();
  private pending: Pending | null = null;
  private turn = new Turn();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    void ctx.blockConcurrencyWhile(async () => {
      const storage = this.ctx.storage;
      const epoch = await storage.get<string>("epoch");
      if (epoch === undefined) {
        this.epoch = newEpoch();
        await storage.put("epoch", this.epoch);
      } else {
        this.epoch = epoch;
      }
      this.last = (await storage.get<number>("issued")) ?? 0;
      for (const [key, n] of await storage.list<number>({ prefix: "n:" })) {
        this.numbers.set(key.slice(2), n);
      }
      this.pending = (await storage.get<Pending>("pending")) ?? null;
    });
  }

  private topic(name: string) {
    return this.env.TOPIC.get(this.env.TOPIC.idFromName(name));
  }

  private channel(node: string) {
    return this.env.CHANNEL.get(this.env.CHANNEL.idFromName(node));
  }

  /**
   * The last position given out. Outside the turn: a topic coming into being asks it
   * while a publish may be waiting for that topic.
   */
  async issued(): Promise<number> {
    return this.last;
  }

  /** The store's epoch. */
  async currentEpoch(): Promise<string> {
    return this.epoch;
  }

  /**
   * Publishes `event` to those of `topics` that are live: one new position, each topic's
   * copy, each node's copies. A retry (a live topic's history holds the id) is answered
   * as the first publish was, and sent nowhere again. Copies in the order of `topics`.
   */
  async append(topics: string[], event: Event): Promise<{ epoch: string; copies: TopicEvent[] }> {
    return this.turn.run(async () => {
      await this.finish();
      const found = await Promise.all(topics.map((t) => this.topic(t).find(event.id)));
      const retried = found.flatMap((f) => (f.live && f.first !== null ? [f.first] : []));
      if (retried.length > 0 || !found.some((f) => f.live)) {
        return { epoch: this.epoch, copies: retried };
      }
      this.last += 1;
      this.pending = { position: this.last, topics, event, copies: null, messages: null };
      await this.ctx.storage.put({ issued: this.last, pending: this.pending });
      return { epoch: this.epoch, copies: await this.finish() };
    });
  }

  /**
   * Publishes `events` one after another, each as `append` would (each its own turn), and
   * answers each in order. Stops at the first that fails: it is answered with its error
   * and the events after it are not attempted, so none lands ahead of it.
   */
  async appendAll(
    events: { topics: string[]; event: Event }[],
  ): Promise<({ epoch: string; copies: TopicEvent[] } | { error: string })[]> {
    const answers: ({ epoch: string; copies: TopicEvent[] } | { error: string })[] = [];
    for (const { topics, event } of events) {
      try {
        answers.push(await this.append(topics, event));
      } catch (err) {
        answers.push({ error: String(err) });
        break;
      }
    }
    return answers;
  }

  /** Takes the pending publish to every topic, then to every node; returns its copies. */
  private async finish(): Promise<TopicEvent[]> {
    const pending = this.pending;
    if (pending === null) {
      return [];
    }
    if (pending.copies === null || pending.messages === null) {
      const appended = await Promise.all(
        pending.topics.map((t) => this.topic(t).append(pending.position, pending.event)),
      );
      const byNode = new Map<string, TopicEvent[]>();
      const copies: TopicEvent[] = [];
      for (const { event, nodes } of appended) {
        if (event === null) {
          continue;
        }
        copies.push(event);
        for (const node of nodes) {
          const list = byNode.get(node) ?? [];
          list.push(event);
          byNode.set(node, list);
        }
      }
      const writes: Record<string, unknown> = {};
      const messages: { node: string; delivery: Delivery }[] = [];
      for (const [node, nodeCopies] of byNode) {
        const number = (this.numbers.get(node) ?? 0) + 1;
        this.numbers.set(node, number);
        writes[`n:${node}`] = number;
        messages.push({
          node,
          delivery: { epoch: this.epoch, position: pending.position, number, copies: nodeCopies },
        });
      }
      pending.copies = copies;
      pending.messages = messages;
      writes.pending = pending;
      await this.ctx.storage.put(writes);
    }
    const messages = pending.messages;
    await Promise.all(messages.map((m) => this.channel(m.node).send(m.delivery)));
    this.pending = null;
    await this.ctx.storage.delete("pending");
    return pending.copies;
  }

  /**
   * Sends `node` a numbered marker with the last position: a node that missed a message
   * notices within one heartbeat, even when nothing more is published to it.
   */
  async marker(node: string): Promise<string> {
    return this.turn.run(async () => {
      await this.finish();
      const number = (this.numbers.get(node) ?? 0) + 1;
      this.numbers.set(node, number);
      await this.ctx.storage.put(`n:${node}`, number);
      await this.channel(node).send({
        epoch: this.epoch,
        position: this.last,
        number,
        copies: null,
      });
      return this.epoch;
    });
  }

  /**
   * A resume's read: for each live topic, where its history is complete, where `id`
   * first appears, and its events after the earliest appearance in any of them.
   */
  async readSince(topics: string[], id: string): Promise<HistoryRead> {
    return this.turn.run(async () => {
      await this.finish();
      const located = await Promise.all(topics.map((t) => this.topic(t).locate(id)));
      const matches = located.flatMap((l) => (l.match === null ? [] : [l.match]));
      const earliest = matches.length === 0 ? NONE : Math.min(...matches);
      const reads = await Promise.all(
        topics.map((t, i) =>
          located[i]?.live
            ? this.topic(t).between(earliest, NONE, located[i]?.match ?? null, this.last)
            : null,
        ),
      );
      return { epoch: this.epoch, topics: reads.filter((r) => r !== null) };
    });
  }

  /** A node's repair: the events of `topics` after `after` and before `before`. */
  async readBetween(topics: string[], after: number, before: number): Promise<HistoryRead> {
    return this.turn.run(async () => {
      await this.finish();
      const reads = await Promise.all(
        topics.map((t) => this.topic(t).between(after, before, null, this.last)),
      );
      return { epoch: this.epoch, topics: reads.filter((r) => r !== null) };
    });
  }
}
