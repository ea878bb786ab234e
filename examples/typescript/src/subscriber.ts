// Subscribes and prints each event as one JSON line: {"topic","id","event","data"}.
//
//   TIDEWAY_URL=http://127.0.0.1:8080 node dist/subscriber.js TOPICS [COUNT]
//
// TOPICS is comma-separated. With COUNT it exits after that many events. It reconnects by
// itself and resumes where it left off. A gap (events of some topics may be missing) is
// printed on stdout too, as {"gap":{"reason","topics"}}; the gateway's other messages and
// the connection's state go to stderr.
//
// For private topics, set TIDEWAY_TOKEN_KEY to an API key with the `sign` scope: the
// example then plays its own backend, asking the gateway for a token (valid
// TIDEWAY_TOKEN_TTL seconds, default 300) whenever the client needs a new one.

import { Client, type TokenProvider } from "tideway-client";

const [topics, countArg] = process.argv.slice(2);
if (topics === undefined) {
  console.error("usage: subscriber TOPICS [COUNT]");
  process.exit(2);
}
const count = countArg === undefined ? Infinity : Number(countArg);
const url = process.env.TIDEWAY_URL ?? "http://127.0.0.1:8080";
const client = new Client(url);

function tokenProvider(): TokenProvider | undefined {
  const key = process.env.TIDEWAY_TOKEN_KEY;
  if (!key) return undefined;
  const ttlSeconds = Number(process.env.TIDEWAY_TOKEN_TTL ?? "300");
  return async () => {
    const response = await fetch(`${url}/v1/tokens`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ subject: "example-subscriber", topics: topics.split(","), ttlSeconds }),
    });
    if (!response.ok) throw new Error(`token: ${response.status} ${await response.text()}`);
    console.error("token: fetched a new one");
    return ((await response.json()) as { token: string }).token;
  };
}

try {
  const subscription = await client.subscribe(topics.split(","), {
    tokenProvider: tokenProvider(),
    onState: (state) => console.error(`state: ${state}`),
  });
  console.error(`subscribed to ${topics}`);
  let seen = 0;
  for await (const message of subscription) {
    if ("system" in message) {
      if (message.gap) console.log(JSON.stringify({ gap: { reason: message.gap.reason, topics: message.gap.topics } }));
      console.error(`gateway: ${message.system} ${message.data}`);
      continue;
    }
    console.log(JSON.stringify(message));
    if (++seen >= count) process.exit(0);
  }
} catch (err) {
  console.error(`subscriber: ${String(err)}`);
  process.exit(1);
}
