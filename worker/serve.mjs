// Runs the Worker locally on workerd (Cloudflare's open-source runtime) through Miniflare:
//
//   TIDEWAY_DO_SECRET=... node serve.mjs --port 8787 --persist ./data
//
// Durable Object storage is kept under --persist (omit it to keep it in memory). With
// --tls-cert and --tls-key (PEM files) it serves https instead of http. Prints
// `listening <url>` once the Worker answers, and stops on SIGTERM or SIGINT.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { Miniflare } from "miniflare";

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    port: { type: "string", default: "8787" },
    host: { type: "string", default: "127.0.0.1" },
    persist: { type: "string" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`--port must be a port number, not ${JSON.stringify(values.port)}`);
  process.exit(2);
}
const script = join(here, "dist", "worker.js");
if (!existsSync(script)) {
  console.error(`${script} is missing: run \`npm run build\` in ${here} first`);
  process.exit(2);
}
const secret = process.env.TIDEWAY_DO_SECRET;
if (secret === undefined || secret.length < 16) {
  console.error("TIDEWAY_DO_SECRET must be set, at least 16 characters: every gateway node sends it");
  process.exit(2);
}

const cert = values["tls-cert"];
const key = values["tls-key"];
if ((cert === undefined) !== (key === undefined)) {
  console.error("--tls-cert and --tls-key go together: https needs both");
  process.exit(2);
}
const tls = cert === undefined ? {} : { https: true, httpsCertPath: cert, httpsKeyPath: key };

const mf = new Miniflare({
  ...tls,
  modules: true,
  scriptPath: script,
  compatibilityDate: "2025-04-01",
  durableObjects: {
    TOPIC: "Topic",
    DIRECTORY: "Directory",
    SEQUENCER: "Sequencer",
    CHANNEL: "Channel",
  },
  durableObjectsPersist: values.persist ?? false,
  bindings: { TIDEWAY_DO_SECRET: secret },
  host: values.host,
  port,
});
const url = await mf.ready;
console.log(`listening ${url.origin}`);

const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
