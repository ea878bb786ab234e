"""Server-Sent Events parsing, as the HTML standard reads a stream."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Block:
    """The fields of one SSE block, up to its blank line."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def _lines(text: str) -> tuple[list[str], str]:
    """Complete lines of ``text`` (ended by CRLF, CR or LF) and the unfinished rest."""
    lines: list[str] = []
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            lines.append(text[start:i])
            start = i + 1
        elif ch == "\r":
            if i + 1 == len(text):
                break  # a CR at the end may be the first half of a CRLF
            lines.append(text[start:i])
            if text[i + 1] == "\n":
                i += 1
            start = i + 1
        i += 1
    return lines, text[start:]


def parse_blocks(buffer: str) -> tuple[list[Block], str]:
    """Complete blocks of ``buffer`` and the text that does not end a block yet."""
    lines, rest = _lines(buffer)
    blocks: list[Block] = []
    current = Block()
    consumed = 0
    for index, line in enumerate(lines):
        if line == "":
            blocks.append(current)
            current = Block()
            consumed = index + 1
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            continue
        if name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "data":
            current.data = value if current.data is None else current.data + "\n" + value
        else:
            current.fields[name] = value
    # Lines after the last blank line belong to an unfinished block.
    pending = "".join(line + "\n" for line in lines[consumed:])
    return blocks, pending + rest
