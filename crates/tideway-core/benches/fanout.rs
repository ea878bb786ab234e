//! Fan-out of one event to many in-process subscribers, and the drop path.
//!
//! Each iteration publishes one 256-byte event and has every subscriber take it from its
//! queue and ask for its SSE bytes, as the transport does: the figure is the whole cost of
//! one event reaching `n` subscribers on this node, minus the socket write.

use std::sync::Arc;

use tideway_core::{
    CoreConfig, Encoding, Event, Gateway, Next, NodeRecord, Route, Subscribe, Subscription,
    Transport,
};
use tideway_protocol::{EventData, EventId, TopicList};
use tideway_store_memory::{MemoryConfig, MemoryStore};
use tokio::runtime::Runtime;

fn main() {
    divan::main();
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn gateway() -> Gateway<MemoryStore> {
    let node = NodeRecord {
        id: "bench".into(),
        hostname: "bench".into(),
        advertise_host: "127.0.0.1".into(),
        started_at: 0,
        connections: 0,
        topics: 0,
        last_heartbeat: None,
    };
    let store = MemoryStore::new(MemoryConfig {
        history: 1000,
        ..MemoryConfig::default()
    });
    Gateway::start(store, node, CoreConfig::default())
        .await
        .expect("start")
}

fn topics(list: &str) -> TopicList {
    TopicList::parse(list.as_bytes(), 64).expect("valid topics")
}

async fn publish(gateway: &Gateway<MemoryStore>, list: &TopicList, id: &EventId, data: &EventData) {
    if let Ok(Route::Live(live)) = gateway.route(list, id).await {
        let event = Event {
            id: id.clone(),
            event_type: None,
            data: data.clone(),
            published_at: 0,
        };
        let _ = gateway.publish(live, event).await;
    }
}

/// One event to `n` subscribers of one topic, each dequeuing it and reading its frame.
#[divan::bench(args = [1, 100, 1_000, 10_000], sample_count = 30)]
fn fan_out(bencher: divan::Bencher, n: usize) {
    fan_out_on(bencher, n, "fanout");
}

/// One event to two topics and `n` subscribers of both: each gets the two copies.
#[divan::bench(args = [1, 100, 1_000, 10_000], sample_count = 30)]
fn fan_out_two_topics(bencher: divan::Bencher, n: usize) {
    fan_out_on(bencher, n, "left,right");
}

fn fan_out_on(bencher: divan::Bencher, n: usize, list: &str) {
    let runtime = runtime();
    let (gateway, mut subscriptions) = runtime.block_on(async {
        let gateway = gateway().await;
        let mut subscriptions: Vec<Subscription<MemoryStore>> = Vec::with_capacity(n);
        for _ in 0..n {
            let request = Subscribe {
                topics: topics(list),
                label: None,
                transport: Transport::Sse,
                remote: None,
                last_event_id: None,
                grant: None,
            };
            subscriptions.push(gateway.subscribe(request).await.expect("subscribe"));
        }
        (gateway, subscriptions)
    });
    let copies = topics(list).len();
    let list = topics(list);
    let data = EventData::parse("x".repeat(256).into()).expect("utf-8");
    // Each publish its own id: a repeated one is a retry, answered without delivery.
    let mut number = 0u64;
    bencher
        .counter(divan::counter::ItemsCount::new(n * copies))
        .bench_local(|| {
            number += 1;
            let id = EventId::parse(format!("evt-{number}").as_bytes()).expect("valid id");
            runtime.block_on(async {
                publish(&gateway, &list, &id, &data).await;
                let mut bytes = 0;
                for subscription in &mut subscriptions {
                    for _ in 0..copies {
                        if let Next::Event(event) = subscription.next().await {
                            bytes += event.encoded(Encoding::Sse).len();
                        }
                    }
                }
                divan::black_box(bytes)
            })
        });
    drop(subscriptions);
    drop(Arc::new(gateway));
}

/// A publish to topics nobody follows: the route check that answers before the body.
#[divan::bench(args = [1, 8])]
fn drop_path(bencher: divan::Bencher, n: usize) {
    let runtime = runtime();
    let gateway = runtime.block_on(gateway());
    let list = topics(
        &(0..n)
            .map(|i| format!("nobody-{i}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    let id = EventId::parse(b"evt-1").expect("valid id");
    bencher.bench_local(|| runtime.block_on(gateway.route(&list, &id)));
}
