"""The SSE parser: blocks, line ends, and unfinished input."""

from tideway_client import parse_blocks


def test_blocks_fields_and_multiline_data() -> None:
    blocks, rest = parse_blocks(
        "retry: 10\n\nid: 7\nevent: update\ntopic: a\ndata: one\ndata: two\n\n"
    )
    assert rest == ""
    assert blocks[0].data is None
    assert (blocks[1].id, blocks[1].event, blocks[1].data) == ("7", "update", "one\ntwo")
    assert blocks[1].fields == {"topic": "a"}


def test_every_line_end_and_an_unfinished_block() -> None:
    blocks, rest = parse_blocks("data: a\r\n\r\ndata: b\r\rdata: c\ndata: par")
    assert [b.data for b in blocks] == ["a", "b"]
    assert rest == "data: c\ndata: par"
    more, rest = parse_blocks(rest + "tial\n\n")
    assert [b.data for b in more] == ["c\npartial"]
    assert rest == ""


def test_a_trailing_cr_waits_for_its_lf() -> None:
    blocks, rest = parse_blocks("data: x\r\n\r")
    assert blocks == []
    assert rest.endswith("\r")
