package tideway

import "testing"

func TestParseBlocks(t *testing.T) {
	blocks, rest := ParseBlocks("retry: 10\n\nid: 7\nevent: update\ntopic: a\ndata: one\ndata: two\n\ndata: par")
	if len(blocks) != 2 || rest != "data: par" {
		t.Fatalf("got %d blocks, rest %q", len(blocks), rest)
	}
	b := blocks[1]
	if b.ID != "7" || b.Event != "update" || b.Data != "one\ntwo" || b.Fields["topic"] != "a" {
		t.Fatalf("unexpected block %+v", b)
	}
	if blocks[0].HasData {
		t.Fatalf("a retry block has no data")
	}
}

func TestLineEndsAndATrailingCR(t *testing.T) {
	blocks, rest := ParseBlocks("data: a\r\n\r\ndata: b\r\rdata: c\r")
	if len(blocks) != 2 || blocks[0].Data != "a" || blocks[1].Data != "b" {
		t.Fatalf("unexpected blocks %+v", blocks)
	}
	if rest != "data: c\r" {
		t.Fatalf("a trailing CR waits for its LF, rest %q", rest)
	}
}
