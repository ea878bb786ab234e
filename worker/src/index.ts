// Tideway's state store on Durable Objects: the Worker a gateway started with
// `--adapter do --do-url <this Worker>` sends its store messages to. Each route is one
// message of the store trait (crates/tideway-core/src/store.rs) to one object; delivery
// to a node goes over the WebSocket its channel object holds.
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";

import type { Env } from "./env";
import type { ConnectionChange, ConnectionRecord, Event, Membership, NodeRecord } from "./model";

export { Channel } from "./channel";
export { Directory } from "./directory";
export { Sequencer } from "./sequencer";
export { Topic } from "./topic";

type Body = Record<string, unknown>;

/** A field of a request's body, or a 400 naming it. */
function string(body: Body, name: string): string {
  const value = body[name];
  if (typeof value !== "string" || value.length === 0) {
    throw new HTTPException(400, { message: `"${name}" must be a non-empty string` });
  }
  return value;
}

function count(body: Body, name: string): number {
  const value = body[name];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new HTTPException(400, { message: `"${name}" must be a non-negative integer` });
  }
  return value;
}

function strings(body: Body, name: string): string[] {
  const value = body[name];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string" && v.length > 0)) {
    throw new HTTPException(400, { message: `"${name}" must be an array of non-empty strings` });
  }
  return value as string[];
}

function object(body: Body, name: string): Body {
  const value = body[name];
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HTTPException(400, { message: `"${name}" must be an object` });
  }
  return value as Body;
}

function event(body: Body): Event {
  const e = object(body, "event");
  const type = e.type;
  if (type !== null && typeof type !== "string") {
    throw new HTTPException(400, { message: `"event.type" must be a string or null` });
  }
  if (typeof e.data !== "string") {
    throw new HTTPException(400, { message: `"event.data" must be a string` });
  }
  return { id: string(e, "id"), type, data: e.data, publishedAt: count(e, "publishedAt") };
}

async function json(request: Request): Promise<Body> {
  let body: unknown;
  try {
    body = await request.json();
  } catch {
    throw new HTTPException(400, { message: "the body must be JSON" });
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HTTPException(400, { message: "the body must be a JSON object" });
  }
  return body as Body;
}

/** Compares in constant time, so the secret cannot be guessed byte by byte. */
function sameSecret(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  if (a.byteLength !== b.byteLength) {
    return false;
  }
  return crypto.subtle.timingSafeEqual(a, b);
}

const app = new Hono<{ Bindings: Env }>();

app.get("/healthz", (c) => c.text("ok\n"));

// Every other route is for gateway nodes only: they send the shared secret.
app.use("/v1/*", async (c, next) => {
  const secret = c.env.TIDEWAY_DO_SECRET;
  if (secret === undefined || secret.length < 16) {
    return c.text(
      "TIDEWAY_DO_SECRET is not set (or shorter than 16 characters): this Worker serves no store without it\n",
      503,
    );
  }
  const header = c.req.header("authorization") ?? "";
  if (!header.startsWith("Bearer ") || !sameSecret(header.slice(7), secret)) {
    return c.text("missing or wrong Authorization: Bearer <TIDEWAY_DO_SECRET>\n", 401);
  }
  await next();
});

app.use(
  "/v1/store/*",
  bodyLimit({
    maxSize: 8 * 1024 * 1024,
    onError: (c) => c.text("a store message is at most 8 MiB\n", 413),
  }),
);

const directory = (env: Env) => env.DIRECTORY.get(env.DIRECTORY.idFromName("directory"));
const sequencer = (env: Env) => env.SEQUENCER.get(env.SEQUENCER.idFromName("sequencer"));
const topic = (env: Env, name: string) => env.TOPIC.get(env.TOPIC.idFromName(name));

app.post("/v1/store/heartbeat", async (c) => {
  const body = await json(c.req.raw);
  const node = object(body, "node") as NodeRecord;
  const id = string(node, "id");
  const beat = await directory(c.env).beat(node, count(body, "ttlMs"), count(body, "graceMs"));
  const epoch = await sequencer(c.env).marker(id);
  return c.json({ ...beat, epoch });
});

app.get("/v1/store/nodes", async (c) => c.json(await directory(c.env).list()));

app.post("/v1/store/nodes/forget", async (c) => {
  const body = await json(c.req.raw);
  await directory(c.env).forget(string(body, "node"), count(body, "graceMs"));
  return c.json(null);
});

app.get("/v1/store/connections", async (c) => c.json(await directory(c.env).listConnections()));

app.post("/v1/store/connections/of", async (c) => {
  return c.json(await directory(c.env).connectionsOf(string(await json(c.req.raw), "node")));
});

app.get("/v1/store/topics", async (c) => c.json(await directory(c.env).topicNames()));

app.post("/v1/store/topics/records", async (c) => {
  const names = strings(await json(c.req.raw), "names");
  const records = await Promise.all(names.map((name) => topic(c.env, name).record()));
  // A topic whose grace ran out since it was listed leaves the index.
  await Promise.all(
    names.map((name, i) => (records[i] === null ? directory(c.env).track(name, false) : null)),
  );
  return c.json(records.filter((r) => r !== null));
});

// A node's connection and membership changes, in the order it made them, in one message:
// a crowd subscribing (or leaving) at once costs the objects one message per topic and
// one for the directory, not one per connection. Changes to one topic are applied in
// their order; different topics and the directory take theirs at once.
app.post("/v1/store/changes", async (c) => {
  const body = await json(c.req.raw);
  const capacity = count(body, "capacity");
  const graceMs = count(body, "graceMs");
  const list = body.changes;
  if (!Array.isArray(list) || list.length === 0) {
    throw new HTTPException(400, { message: `"changes" must be a non-empty array` });
  }
  const connections: ConnectionChange[] = [];
  const topics = new Map<string, Membership[]>();
  list.forEach((raw: unknown, at: number) => {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new HTTPException(400, { message: `"changes[${at}]" must be an object` });
    }
    const change = raw as Body;
    switch (change.op) {
      case "add": {
        const connection = object(change, "connection") as ConnectionRecord;
        string(connection, "id");
        string(connection, "node");
        strings(connection, "topics");
        connections.push({ op: "add", connection });
        break;
      }
      case "remove":
        connections.push({ op: "remove", id: string(change, "id") });
        break;
      case "join":
      case "leave": {
        const name = string(change, "topic");
        const membership: Membership = {
          op: change.op,
          node: string(change, "node"),
          connection: string(change, "connection"),
        };
        const changes = topics.get(name);
        if (changes === undefined) {
          topics.set(name, [membership]);
        } else {
          changes.push(membership);
        }
        break;
      }
      default:
        throw new HTTPException(400, {
          message: `"changes[${at}].op" must be "add", "remove", "join" or "leave"`,
        });
    }
  });
  await Promise.all([
    connections.length > 0 ? directory(c.env).applyConnections(connections) : null,
    ...[...topics].map(async ([name, changes]) => {
      const tell = await topic(c.env, name).apply(name, changes, capacity, graceMs);
      if (tell !== null) {
        await directory(c.env).track(name, tell);
      }
    }),
  ]);
  return c.json(null);
});

app.post("/v1/store/live", async (c) => {
  const names = strings(await json(c.req.raw), "topics");
  const live = await Promise.all(names.map((name) => topic(c.env, name).isLiveNow()));
  return c.json(names.filter((_, i) => live[i]));
});

app.post("/v1/store/append", async (c) => {
  const body = await json(c.req.raw);
  return c.json(await sequencer(c.env).append(strings(body, "topics"), event(body)));
});

/** The events of a batch publish, at most this many in one message. */
const MAX_APPEND_ALL = 1000;

app.post("/v1/store/append-all", async (c) => {
  const list = (await json(c.req.raw)).events;
  if (!Array.isArray(list) || list.length === 0 || list.length > MAX_APPEND_ALL) {
    throw new HTTPException(400, {
      message: `"events" must be an array of 1 to ${MAX_APPEND_ALL} events`,
    });
  }
  const events = list.map((item: unknown, at: number) => {
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      throw new HTTPException(400, { message: `"events[${at}]" must be an object` });
    }
    return { topics: strings(item as Body, "topics"), event: event(item as Body) };
  });
  return c.json(await sequencer(c.env).appendAll(events));
});

app.post("/v1/store/tail", async (c) => {
  const body = await json(c.req.raw);
  return c.json(await topic(c.env, string(body, "topic")).tail(count(body, "limit")));
});

app.post("/v1/store/read-since", async (c) => {
  const body = await json(c.req.raw);
  return c.json(await sequencer(c.env).readSince(strings(body, "topics"), string(body, "id")));
});

app.post("/v1/store/read-between", async (c) => {
  const body = await json(c.req.raw);
  const read = await sequencer(c.env).readBetween(
    strings(body, "topics"),
    count(body, "after"),
    count(body, "before"),
  );
  const revoked = await directory(c.env).revokedAmong(strings(body, "tokens"));
  return c.json({ ...read, revoked });
});

app.post("/v1/store/revoke", async (c) => {
  const body = await json(c.req.raw);
  const id = string(body, "id");
  await directory(c.env).revoke(id, count(body, "until"));
  const nodes = await directory(c.env).nodeIds();
  await Promise.all(
    nodes.map((node) => c.env.CHANNEL.get(c.env.CHANNEL.idFromName(node)).revoke(id)),
  );
  return c.json(null);
});

app.post("/v1/store/revoked", async (c) => {
  const id = string(await json(c.req.raw), "id");
  return c.json((await directory(c.env).revokedAmong([id])).length > 0);
});

app.get("/v1/nodes/:node/channel", async (c) => {
  const stub = c.env.CHANNEL.get(c.env.CHANNEL.idFromName(c.req.param("node")));
  return stub.fetch(c.req.raw);
});

app.onError((err, c) => {
  if (err instanceof HTTPException) {
    return c.text(`${err.message}\n`, err.status);
  }
  console.error(err);
  return c.text(`the store failed: ${err instanceof Error ? err.message : String(err)}\n`, 503);
});

app.notFound((c) => c.text(`no such route: ${c.req.method} ${c.req.path}\n`, 404));

export default app;
