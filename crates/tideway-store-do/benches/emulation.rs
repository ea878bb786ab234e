//! The Durable-Object emulation's store messages, beside the memory store's: what its
//! object model (a task and a mailbox per object, storage written through, turns) costs
//! per publish and per subscriber joining.

use std::sync::Arc;

use tideway_core::{ConnectionId, ConnectionRecord, Event, Store, Transport, unix_millis};
use tideway_protocol::{EventData, EventId, TopicList, TopicName};
use tideway_store_do::DoStore;
use tideway_store_memory::MemoryStore;
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

fn connection(n: u64, topics: &TopicList) -> ConnectionRecord {
    ConnectionRecord {
        id: ConnectionId::new("bench", n),
        node: "bench".into(),
        topics: topics.clone(),
        label: None,
        transport: Transport::Sse,
        remote: None,
        connected_at: unix_millis(),
    }
}

fn event(n: u64) -> Arc<Event> {
    Arc::new(Event {
        id: EventId::parse(format!("e{n}").as_bytes()).expect("an id"),
        event_type: None,
        data: EventData::parse(bytes::Bytes::from(vec![b'x'; 256])).expect("utf-8"),
        published_at: unix_millis(),
    })
}

/// A store with one connection on `topics` and a full history, ready to append (no
/// inbox: delivery to subscribers is the same for both and measured in core's benches).
fn ready<S: Store>(rt: &Runtime, store: S, topics: &TopicList) -> S {
    rt.block_on(async {
        let joined = Arc::new(connection(1, topics));
        store.add_connection(&joined).await.expect("add");
        for topic in topics {
            store.join(topic, &joined).await.expect("join");
        }
        for n in 0..1000 {
            store.append(topics, &event(n)).await.expect("append");
        }
    });
    store
}

/// One publish to `topics`, each with one connection and a full history.
fn append<S: Store>(bencher: divan::Bencher, topics: &str, store: S) {
    let rt = runtime();
    let topics = TopicList::parse(topics.as_bytes(), 64).expect("topics");
    let store = ready(&rt, store, &topics);
    let mut n = 10_000;
    bencher.bench_local(|| {
        n += 1;
        rt.block_on(store.append(&topics, &event(n)))
            .expect("append")
    });
}

#[divan::bench(args = ["t", "a,b,c"])]
fn append_do(bencher: divan::Bencher, topics: &str) {
    append(bencher, topics, DoStore::default());
}

#[divan::bench(args = ["t", "a,b,c"])]
fn append_memory(bencher: divan::Bencher, topics: &str) {
    append(bencher, topics, MemoryStore::default());
}

/// A second connection joins a live topic and leaves again.
fn join_and_leave<S: Store>(bencher: divan::Bencher, store: S) {
    let rt = runtime();
    let topics = TopicList::parse(b"t", 64).expect("topics");
    let store = ready(&rt, store, &topics);
    let topic = TopicName::parse("t").expect("a name");
    let other = connection(2, &topics);
    bencher.bench_local(|| {
        rt.block_on(async {
            store.join(&topic, &other).await.expect("join");
            store.leave(&topic, &other).await.expect("leave");
        });
    });
}

#[divan::bench]
fn join_and_leave_do(bencher: divan::Bencher) {
    join_and_leave(bencher, DoStore::default());
}

#[divan::bench]
fn join_and_leave_memory(bencher: divan::Bencher) {
    join_and_leave(bencher, MemoryStore::default());
}
