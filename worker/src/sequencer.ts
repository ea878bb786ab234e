import { DurableObject } from "cloudflare:workers";

import type { Env } from "./env";
import { type Delivery, type Event, type TopicEvent, type TopicHistory, Turn, newEpoch } from "./model";
import type { Appended } from "./topic";

/** A publish that took its position. */
interface Publish {
  position: number;
  topics: string[];
  event: Event;
}

/**
 * Publishes that took their positions (one, or a batch's run of them) and are not yet
 * with every node.
 */
interface Pending {
  publishes: Publish[];
  /**
   * Once every topic took them: each publish's copy on each of its topics (null where the
   * topic was not live), and each node's messages.
   */
  copies: (TopicEvent | null)[][] | null;
  messages: { node: string; deliveries: Delivery[] }[] | null;
}

/** `pending` as a sequencer before batches stored it: one publish. */
interface PendingOne extends Publish {
  copies: TopicEvent[] | null;
  messages: { node: string; delivery: Delivery }[] | null;
}

/** The stored pending record, in either shape, as this sequencer holds it. */
function pendingOf(stored: Pending | PendingOne): Pending {
  if ("publishes" in stored) {
    return stored;
  }
  const { position, topics, event, copies, messages } = stored;
  return {
    publishes: [{ position, topics, event }],
    copies: copies === null ? null : [copies],
    messages:
      messages === null ? null : messages.map((m) => ({ node: m.node, deliveries: [m.delivery] })),
  };
}

/** What a publish of a batch is answered with. */
type Answer = { epoch: string; copies: TopicEvent[] };

/**
 * At most this many of a batch's events share one turn and one pending record, and at
 * most this much of their data (an event larger goes alone, as a single publish would):
 * the record holds each event, its copies and each node's messages, and a stored value
 * is bounded.
 */
const GROUP_EVENTS = 100;
const GROUP_DATA = 16 * 1024;

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
 * position), `n:<node>` (the last message number sent to each node) and `pending` (the
 * publishes between taking their positions and reaching every node: one, or a batch's
 * run). Publishes cut off by a restart are finished by the next message: topics and
 * channels recognise a position or a number they already took.
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
      const pending = await storage.get<Pending | PendingOne>("pending");
      this.pending = pending === undefined ? null : pendingOf(pending);
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
  async append(topics: string[], event: Event): Promise<Answer> {
    const [answer] = await this.turn.run(() => this.appendGroup([{ topics, event }]));
    if (answer === undefined) {
      throw new Error("the sequencer answered no event");
    }
    return answer;
  }

  /**
   * Publishes `events` one after another, each as `append` would, and answers each in
   * order. Runs of them (up to `GROUP_EVENTS`, `GROUP_DATA`) take one turn: one call per
   * topic to find retries, one per topic to append, one per node to deliver, and one
   * pending record. Stops at the first run that fails: its events are answered with the
   * error (some may have landed: their retries are answered as retries) and the events
   * after it are not attempted, so none lands ahead of them.
   */
  async appendAll(
    events: { topics: string[]; event: Event }[],
  ): Promise<(Answer | { error: string })[]> {
    const answers: (Answer | { error: string })[] = [];
    for (const group of groups(events)) {
      try {
        answers.push(...(await this.turn.run(() => this.appendGroup(group))));
      } catch (err) {
        for (const _ of group) {
          answers.push({ error: String(err) });
        }
        break;
      }
    }
    return answers;
  }

  /**
   * `events` in their order, within the turn: a retry (a live topic holds its id, or an
   * earlier event of the run took it to that topic) is answered as the first publish
   * was; an event with no live topic is dropped; the others take consecutive positions,
   * recorded as pending before any topic takes them.
   */
  private async appendGroup(events: { topics: string[]; event: Event }[]): Promise<Answer[]> {
    await this.finish();
    // Each topic's liveness and what it holds of the run's ids, in one call per topic.
    const idsOf = new Map<string, string[]>();
    for (const { topics, event } of events) {
      for (const topic of topics) {
        const ids = idsOf.get(topic) ?? [];
        ids.push(event.id);
        idsOf.set(topic, ids);
      }
    }
    const names = [...idsOf.keys()];
    const found = await Promise.all(names.map((t) => this.topic(t).findAll(idsOf.get(t) ?? [])));
    // Per live topic: its last sequence number and capacity when found, how many of the
    // run's events it takes, and where each id was first held or taken in it. An id is a
    // retry only while that event is still in the topic's history, as it would be were
    // the run's events appended one at a time: the run's own appends evict.
    interface Seen {
      seq: number;
      capacity: number;
      taken: number;
      held: Map<string, TopicEvent>;
      planned: Map<string, { publish: number; ordinal: number }>;
    }
    const seen = new Map<string, Seen>();
    names.forEach((topic, at) => {
      const answer = found[at];
      if (answer === undefined || !answer.live) {
        return;
      }
      const held = new Map<string, TopicEvent>();
      (idsOf.get(topic) ?? []).forEach((id, k) => {
        const first = answer.firsts[k];
        if (first !== null && first !== undefined && !held.has(id)) {
          held.set(id, first);
        }
      });
      seen.set(topic, {
        seq: answer.seq,
        capacity: answer.capacity,
        taken: 0,
        held,
        planned: new Map(),
      });
    });
    // Plan the run: which event takes a position, which is a retry of what.
    type Retried = TopicEvent | { publish: number; topic: string };
    const plans: ({ publish: number } | { retried: Retried[] })[] = [];
    const publishes: Publish[] = [];
    for (const { topics, event } of events) {
      const retried: Retried[] = [];
      const live = [...new Set(topics)].flatMap((topic) => {
        const state = seen.get(topic);
        return state === undefined ? [] : [{ topic, state }];
      });
      for (const { topic, state } of live) {
        const first = state.held.get(event.id);
        const earlier = state.planned.get(event.id);
        if (first !== undefined && state.seq + state.taken - first.seq < state.capacity) {
          retried.push(first);
        } else if (earlier !== undefined && state.taken - earlier.ordinal < state.capacity) {
          retried.push({ publish: earlier.publish, topic });
        }
      }
      if (retried.length > 0 || live.length === 0) {
        plans.push({ retried });
        continue;
      }
      this.last += 1;
      const publish = publishes.length;
      publishes.push({ position: this.last, topics, event });
      for (const { state } of live) {
        state.taken += 1;
        // The topic indexes an id by its oldest event held: this one, unless an older
        // one is still there (then this would have been a retry).
        state.planned.set(event.id, { publish, ordinal: state.taken });
        state.held.delete(event.id);
      }
      plans.push({ publish });
    }
    let copies: (TopicEvent | null)[][] = [];
    if (publishes.length > 0) {
      this.pending = { publishes, copies: null, messages: null };
      await this.ctx.storage.put({ issued: this.last, pending: this.pending });
      copies = await this.finish();
    }
    return plans.map((plan) => {
      if ("publish" in plan) {
        return { epoch: this.epoch, copies: present(copies[plan.publish] ?? []) };
      }
      const answered = plan.retried.flatMap((r) => {
        if (!("publish" in r)) {
          return [r];
        }
        const at = publishes[r.publish]?.topics.indexOf(r.topic) ?? -1;
        const copy = copies[r.publish]?.[at];
        return copy === null || copy === undefined ? [] : [copy];
      });
      return { epoch: this.epoch, copies: answered };
    });
  }

  /**
   * Takes the pending publishes to every topic (each topic its publishes in position
   * order, in one call), then to every node (each node its messages in order, in one
   * call); returns each publish's copies, aligned with its topics.
   */
  private async finish(): Promise<(TopicEvent | null)[][]> {
    const pending = this.pending;
    if (pending === null) {
      return [];
    }
    if (pending.copies === null || pending.messages === null) {
      const { publishes } = pending;
      const byTopic = new Map<string, number[]>();
      publishes.forEach((publish, at) => {
        for (const topic of publish.topics) {
          const list = byTopic.get(topic) ?? [];
          list.push(at);
          byTopic.set(topic, list);
        }
      });
      const names = [...byTopic.keys()];
      const appended = await Promise.all(
        names.map((t) =>
          this.topic(t).appendAll(
            (byTopic.get(t) ?? []).flatMap((at) => {
              const publish = publishes[at];
              return publish === undefined ? [] : [{ position: publish.position, event: publish.event }];
            }),
          ),
        ),
      );
      // Each publish's answer from each of its topics.
      const answers = publishes.map(() => new Map<string, Appended>());
      names.forEach((topic, k) => {
        (byTopic.get(topic) ?? []).forEach((at, i) => {
          const answer = appended[k]?.[i];
          if (answer !== undefined) {
            answers[at]?.set(topic, answer);
          }
        });
      });
      const writes: Record<string, unknown> = {};
      const byNode = new Map<string, Delivery[]>();
      const copies = publishes.map((publish, at) => {
        const nodeCopies = new Map<string, TopicEvent[]>();
        const aligned = publish.topics.map((topic) => {
          const answer = answers[at]?.get(topic);
          const event = answer?.event ?? null;
          if (event !== null) {
            for (const node of answer?.nodes ?? []) {
              const list = nodeCopies.get(node) ?? [];
              list.push(event);
              nodeCopies.set(node, list);
            }
          }
          return event;
        });
        for (const [node, list] of nodeCopies) {
          const number = (this.numbers.get(node) ?? 0) + 1;
          this.numbers.set(node, number);
          writes[`n:${node}`] = number;
          const deliveries = byNode.get(node) ?? [];
          deliveries.push({ epoch: this.epoch, position: publish.position, number, copies: list });
          byNode.set(node, deliveries);
        }
        return aligned;
      });
      pending.copies = copies;
      pending.messages = [...byNode].map(([node, deliveries]) => ({ node, deliveries }));
      writes.pending = pending;
      await this.ctx.storage.put(writes);
    }
    const messages = pending.messages;
    await Promise.all(messages.map((m) => this.channel(m.node).sendAll(m.deliveries)));
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

/** The copies that were taken, in order. */
function present(copies: (TopicEvent | null)[]): TopicEvent[] {
  return copies.filter((c): c is TopicEvent => c !== null);
}

/**
 * `events` in runs that share a turn: consecutive, at most `GROUP_EVENTS` of them and at
 * most `GROUP_DATA` of data, unless one event alone is larger.
 */
function groups<T extends { event: Event }>(events: T[]): T[][] {
  const runs: T[][] = [];
  let run: T[] = [];
  let data = 0;
  for (const item of events) {
    const size = item.event.data.length;
    if (run.length > 0 && (run.length >= GROUP_EVENTS || data + size > GROUP_DATA)) {
      runs.push(run);
      run = [];
      data = 0;
    }
    run.push(item);
    data += size;
  }
  if (run.length > 0) {
    runs.push(run);
  }
  return runs;
}
