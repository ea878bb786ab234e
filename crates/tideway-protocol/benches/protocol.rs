//! Micro-benchmarks of the per-request and per-event protocol work.

use tideway_protocol::{TopicList, sse::FrameBuilder};

fn main() {
    divan::main();
}

/// Parsing an `x-sse-topic` header of `n` topics.
#[divan::bench(args = [1, 8, 64])]
fn parse_topic_header(bencher: divan::Bencher, n: usize) {
    let header = (0..n)
        .map(|i| format!("workspace-{i}:events/stream"))
        .collect::<Vec<_>>()
        .join(",");
    bencher.bench(|| TopicList::parse(divan::black_box(header.as_bytes()), 64));
}

/// Framing one event whose body is `size` bytes of lines of 64 bytes.
#[divan::bench(args = [256, 4096, 65536])]
fn frame_event(bencher: divan::Bencher, size: usize) {
    let line = format!("{}\n", "x".repeat(63));
    let data = line.repeat(size / 64);
    bencher.bench(|| {
        let mut frame = FrameBuilder::with_capacity(data.len() + 64);
        frame
            .id("evt-1234")
            .and_then(|f| f.event("update"))
            .and_then(|f| f.field("topic", "workspace-1:events"))
            .map(|f| {
                f.data(divan::black_box(&data));
            })
            .ok();
        frame.finish()
    });
}
