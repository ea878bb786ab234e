// Hashes everything the admin build is made from, so a check can tell when the embedded
// build in dist/ is stale against src/. `--write` records the hash in dist/.source-hash
// (after `vite build`); `--check` fails when the recorded hash differs from the sources.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const inputs = ["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json"];

function files(path) {
  if (statSync(path).isDirectory()) {
    return readdirSync(path).sort().flatMap((name) => files(join(path, name)));
  }
  return [path];
}

function sourceHash() {
  const hash = createHash("sha256");
  for (const input of inputs) {
    for (const file of files(join(root, input))) {
      if (file.endsWith(".test.ts") || file.endsWith(".test.tsx")) continue;
      hash.update(relative(root, file));
      hash.update("\0");
      hash.update(readFileSync(file));
      hash.update("\0");
    }
  }
  return hash.digest("hex");
}

const recorded = join(root, "dist", ".source-hash");
const now = sourceHash();
if (process.argv.includes("--write")) {
  writeFileSync(recorded, now + "\n");
} else {
  let built = "";
  try {
    built = readFileSync(recorded, "utf8").trim();
  } catch {
    built = "(none)";
  }
  if (built !== now) {
    console.error(`admin/dist is stale against admin/src: built from ${built}, sources are ${now}.`);
    console.error("Run `npm ci && npm run build` in admin/ and commit admin/dist.");
    process.exit(1);
  }
  console.error("admin/dist matches admin/src");
}
