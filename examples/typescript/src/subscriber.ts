// Subscribes and prints each event as one JSON line: {"topic","id","event","data"}.
//
//   TIDEWAY_URL=http://127.0.0.1:8080 node dist/subscriber.js TOPICS [COUNT]
//
// TOPICS is comma-separated. With COUNT it exits after that many events. It reconnects by
// itself and resumes where it left off; system messages go to stderr.

import { Client } from "./index.js";

const [topics, countArg] = process.argv.slice(2);
if (topics === undefined) {
  console.error("usage: subscriber TOPICS [COUNT]");
  process.exit(2);
}
const count = countArg === undefined ? Infinity : Number(countArg);
const client = new Client(process.env.TIDEWAY_URL ?? "http://127.0.0.1:8080");
try {
  const messages = await client.subscribe(topics.split(","));
  console.error(`subscribed to ${topics}`);
  let seen = 0;
  for await (const message of messages) {
    if ("system" in message) {
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
