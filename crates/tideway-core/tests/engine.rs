//! The engine on the in-memory store, without HTTP: fan-out, slow consumers, cleanup.

use std::sync::Arc;

use tideway_core::{
    CoreConfig, EndReason, Event, Gateway, Next, NodeRecord, Page, Route, Subscribe, Subscription,
    Transport,
};
use tideway_protocol::{EventData, EventId, TopicList};
use tideway_store_memory::{MemoryConfig, MemoryStore};

async fn gateway(queue_capacity: usize) -> Gateway<MemoryStore> {
    let node = NodeRecord {
        id: "n1".into(),
        hostname: "h".into(),
        advertise_host: "127.0.0.1".into(),
        started_at: 0,
        connections: 0,
    };
    Gateway::start(
        MemoryStore::new(MemoryConfig::default()),
        node,
        CoreConfig { queue_capacity },
    )
    .await
    .unwrap()
}

fn topics(list: &str) -> TopicList {
    TopicList::parse(list.as_bytes(), 64).unwrap()
}

async fn subscribe(gateway: &Gateway<MemoryStore>, list: &str) -> Subscription<MemoryStore> {
    gateway
        .subscribe(Subscribe {
            topics: topics(list),
            label: None,
            transport: Transport::Sse,
            remote: None,
        })
        .await
        .unwrap()
}

async fn publish(gateway: &Gateway<MemoryStore>, list: &str, id: &str) -> Vec<u64> {
    let id = EventId::parse(id.as_bytes()).unwrap();
    let Route::Live(live) = gateway.route(&topics(list), &id).await.unwrap() else {
        return Vec::new();
    };
    let event = Event {
        id,
        event_type: None,
        data: EventData::parse("payload".into()).unwrap(),
        published_at: 1,
    };
    let published = gateway.publish(&live, event).await.unwrap();
    published.topics.into_iter().map(|(_, seq)| seq).collect()
}

async fn next_id(subscription: &mut Subscription<MemoryStore>) -> String {
    match subscription.next().await {
        Next::Event(event) => event.event.id.as_str().to_owned(),
        Next::End(reason) => panic!("ended: {reason:?}"),
    }
}

#[tokio::test]
async fn one_frame_is_shared_by_every_subscriber() {
    let gateway = gateway(16).await;
    let mut a = subscribe(&gateway, "t").await;
    let mut b = subscribe(&gateway, "t").await;
    assert_eq!(publish(&gateway, "t", "e1").await, [1]);
    let (Next::Event(ea), Next::Event(eb)) = (a.next().await, b.next().await) else {
        panic!("both get the event");
    };
    assert!(Arc::ptr_eq(&ea, &eb), "the same event object");
    let frame_a = ea.encoded(tideway_core::Encoding::Sse);
    let frame_b = eb.encoded(tideway_core::Encoding::Sse);
    assert_eq!(
        frame_a.as_ptr(),
        frame_b.as_ptr(),
        "framed once, bytes shared"
    );
    assert_eq!(&frame_a[..], b"id: e1\ntopic: t\ndata: payload\n\n");
}

#[tokio::test]
async fn a_subscriber_of_several_topics_gets_each_topics_events() {
    let gateway = gateway(16).await;
    let mut both = subscribe(&gateway, "a,b").await;
    assert_eq!(publish(&gateway, "a", "1").await, [1]);
    assert_eq!(
        publish(&gateway, "b,a,zzz", "2").await,
        [1, 2],
        "zzz is not live"
    );
    let mut seen = Vec::new();
    for _ in 0..3 {
        let Next::Event(event) = both.next().await else {
            panic!()
        };
        seen.push(format!("{}:{}", event.topic, event.event.id));
    }
    assert_eq!(seen, ["a:1", "b:2", "a:2"]);
}

#[tokio::test]
async fn a_stalled_subscriber_is_cut_off_while_others_keep_up() {
    let capacity = 8;
    let gateway = gateway(capacity).await;
    let mut stalled = subscribe(&gateway, "t").await;
    let mut reader = subscribe(&gateway, "t").await;
    for n in 0..2000 {
        publish(&gateway, "t", &format!("e{n}")).await;
        assert_eq!(next_id(&mut reader).await, format!("e{n}"));
    }
    assert_eq!(gateway.stats().slow_consumers_cut(), 1);
    // The stalled one still reads what was queued before the cut, then learns why it ended.
    for n in 0..capacity {
        assert_eq!(next_id(&mut stalled).await, format!("e{n}"));
    }
    assert!(matches!(
        stalled.next().await,
        Next::End(EndReason::SlowConsumer)
    ));
    // The topic lives on for the reader.
    let topics = gateway
        .topics(Page {
            page: 1,
            page_size: 10,
        })
        .await
        .unwrap();
    assert_eq!(topics.total, 1);
}

#[tokio::test]
async fn closing_leaves_every_index() {
    let gateway = gateway(16).await;
    let subscription = subscribe(&gateway, "x,y").await;
    assert_eq!(gateway.local_topics(), 2);
    assert_eq!(gateway.open_connections(), 1);
    drop(subscription);
    let page = Page {
        page: 1,
        page_size: 10,
    };
    for _ in 0..1000 {
        if gateway.topics(page).await.unwrap().total == 0 && gateway.open_connections() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(gateway.topics(page).await.unwrap().total, 0);
    assert_eq!(gateway.connections(page).await.unwrap().total, 0);
    assert_eq!(gateway.local_topics(), 0);
    assert_eq!(gateway.open_connections(), 0);
    assert!(publish(&gateway, "x", "late").await.is_empty());
    assert_eq!(gateway.stats().events_dropped_no_subscribers(), 1);
}

#[tokio::test]
async fn draining_ends_subscriptions_and_refuses_new_work() {
    let gateway = gateway(16).await;
    let mut subscription = subscribe(&gateway, "t").await;
    publish(&gateway, "t", "last").await;
    gateway.drain();
    assert_eq!(
        next_id(&mut subscription).await,
        "last",
        "queued events come first"
    );
    assert!(matches!(
        subscription.next().await,
        Next::End(EndReason::Draining)
    ));
    let id = EventId::parse(b"x").unwrap();
    assert!(gateway.route(&topics("t"), &id).await.is_err());
    assert!(!gateway.ready().await);
}
