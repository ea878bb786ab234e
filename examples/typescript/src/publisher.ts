// Publishes one event.
//
//   TIDEWAY_URL=http://127.0.0.1:8080 TIDEWAY_API_KEY=... node dist/publisher.js TOPIC ID DATA [EVENT]
//
// Prints `accepted` or `dropped` (no topic had a subscriber); exits 1 on an error.

import { Client } from "./index.js";

const [topic, id, data, event] = process.argv.slice(2);
if (topic === undefined || id === undefined || data === undefined) {
  console.error("usage: publisher TOPIC ID DATA [EVENT]");
  process.exit(2);
}
const client = new Client(process.env.TIDEWAY_URL ?? "http://127.0.0.1:8080", process.env.TIDEWAY_API_KEY);
try {
  const published = await client.publish([topic], id, data, event);
  console.log(published.status);
} catch (err) {
  console.error(`publisher: ${String(err)}`);
  process.exit(1);
}
