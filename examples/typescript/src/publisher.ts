// Publishes one event, or a batch of them.
//
//   TIDEWAY_URL=http://127.0.0.1:8080 TIDEWAY_API_KEY=... node dist/publisher.js TOPIC ID DATA [EVENT]
//   ... node dist/publisher.js --batch TOPIC < events.jsonl
//
// Prints `accepted` or `dropped` (no topic had a subscriber); exits 1 on an error. With
// `--batch`, reads one JSON object {"id", "data", "event"?} per line of stdin, publishes
// them all to TOPIC in one request, and prints each one's outcome on its own line
// (`accepted`, `dropped`, or the error code).

import { type BatchEvent, Client } from "tideway-client";

const client = new Client(process.env.TIDEWAY_URL ?? "http://127.0.0.1:8080", process.env.TIDEWAY_API_KEY);
const args = process.argv.slice(2);

async function stdinLines(): Promise<string[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString("utf8")
    .split("\n")
    .filter((line) => line.trim() !== "");
}

try {
  if (args.length === 2 && args[0] === "--batch") {
    const topic = args[1] as string;
    const events: BatchEvent[] = (await stdinLines()).map((line) => {
      const e = JSON.parse(line) as { id: string; data: string; event?: string | null };
      return { topics: [topic], id: e.id, data: e.data, ...(e.event ? { event: e.event } : {}) };
    });
    for (const outcome of await client.publishBatch(events)) {
      console.log(outcome.status === "error" ? outcome.error.code : outcome.status);
    }
  } else {
    const [topic, id, data, event] = args;
    if (topic === undefined || id === undefined || data === undefined) {
      console.error("usage: publisher TOPIC ID DATA [EVENT] | --batch TOPIC");
      process.exit(2);
    }
    const published = await client.publish([topic], id, data, event);
    console.log(published.status);
  }
} catch (err) {
  console.error(`publisher: ${String(err)}`);
  process.exit(1);
}
