// Server-Sent Events parsing, as the HTML standard reads a stream.

/** One SSE block: the fields seen up to a blank line. */
export interface Block {
  id: string | null;
  event: string | null;
  data: string | null;
  fields: Record<string, string>;
}

/** Complete blocks at the start of `buffer`, and the text that does not end one yet. */
export function parseBlocks(buffer: string): { blocks: Block[]; rest: string } {
  const blocks: Block[] = [];
  let current: Block = { id: null, event: null, data: null, fields: {} };
  let start = 0;
  let consumed = 0;
  for (let i = 0; i < buffer.length; i++) {
    const c = buffer[i];
    if (c !== "\n" && c !== "\r") continue;
    if (c === "\r" && i + 1 === buffer.length) break; // may be the first half of a CRLF
    const line = buffer.slice(start, i);
    if (c === "\r" && buffer[i + 1] === "\n") i++;
    start = i + 1;
    if (line === "") {
      blocks.push(current);
      current = { id: null, event: null, data: null, fields: {} };
      consumed = start;
      continue;
    }
    const colon = line.indexOf(":");
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "") continue;
    if (name === "id") current.id = value;
    else if (name === "event") current.event = value;
    else if (name === "data") current.data = current.data === null ? value : `${current.data}\n${value}`;
    else current.fields[name] = value;
  }
  return { blocks, rest: buffer.slice(consumed) };
}
