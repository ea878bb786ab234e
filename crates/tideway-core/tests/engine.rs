//! The engine on the in-memory store, without HTTP: fan-out, slow consumers, cleanup.

use std::sync::Arc;

use tideway_core::{
    CoreConfig, CoreError, EndReason, Event, GapReason, Gateway, Grant, LimitScope, Next,
    NodeRecord, Page, Revocation, Route, Subscribe, Subscription, Transport,
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
        topics: 0,
        last_heartbeat: None,
    };
    Gateway::start(
        MemoryStore::new(MemoryConfig::default()),
        node,
        CoreConfig {
            queue_capacity,
            ..CoreConfig::default()
        },
    )
    .await
    .unwrap()
}

fn topics(list: &str) -> TopicList {
    TopicList::parse(list.as_bytes(), 64).unwrap()
}

async fn subscribe(gateway: &Gateway<MemoryStore>, list: &str) -> Subscription<MemoryStore> {
    resume(gateway, list, None).await
}

async fn resume(
    gateway: &Gateway<MemoryStore>,
    list: &str,
    last_event_id: Option<&str>,
) -> Subscription<MemoryStore> {
    gateway
        .subscribe(Subscribe {
            topics: topics(list),
            label: None,
            transport: Transport::Sse,
            remote: None,
            last_event_id: last_event_id.map(|id| EventId::parse(id.as_bytes()).unwrap()),
            grant: None,
        })
        .await
        .unwrap()
}

/// The next event as `topic:id`.
async fn next_delivery(subscription: &mut Subscription<MemoryStore>) -> String {
    match subscription.next().await {
        Next::Event(event) => format!("{}:{}", event.topic, event.event.id),
        other => panic!("expected an event, got {other:?}"),
    }
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
    let published = gateway.publish(live, event).await.unwrap();
    published.topics().map(|(_, seq)| seq).collect()
}

async fn next_id(subscription: &mut Subscription<MemoryStore>) -> String {
    match subscription.next().await {
        Next::Event(event) => event.event.id.as_str().to_owned(),
        other => panic!("expected an event, got {other:?}"),
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
            tenant: None,
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
        tenant: None,
    };
    for _ in 0..1000 {
        if gateway.topics(page.clone()).await.unwrap().total == 0 && gateway.open_connections() == 0
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(gateway.topics(page.clone()).await.unwrap().total, 0);
    assert_eq!(gateway.connections(page.clone()).await.unwrap().total, 0);
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
    gateway.drain().await;
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

/// A subscription already waiting for its next event is woken when the node's
/// subscriptions end, and ends: the flag it reads is set before the wake-up.
#[tokio::test]
async fn a_waiting_subscription_is_woken_when_subscriptions_end() {
    let gateway = gateway(16).await;
    let mut subscription = subscribe(&gateway, "t").await;
    let waiting = tokio::spawn(async move { subscription.next().await });
    // Let it poll and find nothing: its waker is registered when it parks.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "nothing to deliver yet");
    gateway.end_subscriptions();
    // A bound against a hang, not a timing: the wake-up is immediate.
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("woken")
        .expect("the task");
    assert!(matches!(next, Next::End(EndReason::Draining)));
}

#[tokio::test]
async fn resume_across_topics_gets_everything_after_the_id_once_and_in_order() {
    let gateway = gateway(64).await;
    let mut first = subscribe(&gateway, "a,b").await;
    // Keeps both topics live while the client is away.
    let _keeper = subscribe(&gateway, "a,b").await;
    publish(&gateway, "a", "1").await;
    publish(&gateway, "b", "2").await;
    assert_eq!(next_delivery(&mut first).await, "a:1");
    assert_eq!(next_delivery(&mut first).await, "b:2");
    drop(first);
    publish(&gateway, "a", "3").await;
    publish(&gateway, "b", "4").await;
    publish(&gateway, "b,a", "5").await;

    let mut again = resume(&gateway, "a,b", Some("2")).await;
    publish(&gateway, "a", "6").await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_delivery(&mut again).await);
    }
    assert_eq!(seen, ["a:3", "b:4", "a:5", "b:5", "a:6"]);
    publish(&gateway, "b", "7").await;
    assert_eq!(
        next_delivery(&mut again).await,
        "b:7",
        "no duplicate of 6 before 7"
    );
}

#[tokio::test]
async fn resume_from_the_newest_id_replays_nothing_and_skips_nothing() {
    let gateway = gateway(64).await;
    let _keeper = subscribe(&gateway, "t").await;
    publish(&gateway, "t", "1").await;
    let mut again = resume(&gateway, "t", Some("1")).await;
    publish(&gateway, "t", "2").await;
    assert_eq!(next_delivery(&mut again).await, "t:2");
}

#[tokio::test]
async fn an_unknown_id_is_reported_as_a_gap_then_live_events_follow() {
    let gateway = gateway(64).await;
    let mut again = resume(&gateway, "t", Some("never-seen")).await;
    match again.next().await {
        Next::Gap(gap) => {
            assert_eq!(gap.reason, GapReason::UnknownLastEventId);
            assert_eq!(
                gap.last_event_id.map(|id| id.to_string()).as_deref(),
                Some("never-seen")
            );
            assert_eq!(gap.topics, topics("t").names());
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    publish(&gateway, "t", "live").await;
    assert_eq!(next_delivery(&mut again).await, "t:live");
}

#[tokio::test]
async fn connection_limits_refuse_and_free_up() {
    let node = NodeRecord {
        id: "n".into(),
        hostname: "h".into(),
        advertise_host: "127.0.0.1".into(),
        started_at: 0,
        connections: 0,
        topics: 0,
        last_heartbeat: None,
    };
    let config = CoreConfig {
        max_connections: 3,
        max_connections_per_ip: 2,
        ..CoreConfig::default()
    };
    let gateway = Gateway::start(MemoryStore::default(), node, config)
        .await
        .unwrap();
    let from = |ip: &str| Subscribe {
        topics: topics("t"),
        label: None,
        transport: Transport::Sse,
        remote: Some(ip.to_owned()),
        last_event_id: None,
        grant: None,
    };
    let a1 = gateway.subscribe(from("10.0.0.1")).await.unwrap();
    let _a2 = gateway.subscribe(from("10.0.0.1")).await.unwrap();
    let refused = gateway.subscribe(from("10.0.0.1")).await.err().unwrap();
    assert!(matches!(
        refused,
        CoreError::TooManyConnections {
            scope: LimitScope::ClientIp,
            limit: 2
        }
    ));
    let _b1 = gateway.subscribe(from("10.0.0.2")).await.unwrap();
    let refused = gateway.subscribe(from("10.0.0.3")).await.err().unwrap();
    assert!(matches!(
        refused,
        CoreError::TooManyConnections {
            scope: LimitScope::Node,
            limit: 3
        }
    ));
    drop(a1);
    let _a3 = gateway
        .subscribe(from("10.0.0.1"))
        .await
        .expect("a freed slot is usable at once");
}

#[tokio::test]
async fn a_drain_waits_for_routed_publishes_before_ending_subscriptions() {
    let gateway = gateway(16).await;
    let mut subscription = subscribe(&gateway, "t").await;
    let id = EventId::parse(b"in-flight").unwrap();
    let Route::Live(live) = gateway.route(&topics("t"), &id).await.unwrap() else {
        panic!("t is live");
    };
    let draining = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.drain().await }
    });
    while !gateway.is_draining() {
        tokio::task::yield_now().await;
    }
    assert!(
        gateway.route(&topics("t"), &id).await.is_err(),
        "new publishes are refused"
    );
    assert!(
        !draining.is_finished(),
        "the drain waits for the routed publish"
    );
    let event = Event {
        id,
        event_type: None,
        data: EventData::parse("late body".into()).unwrap(),
        published_at: 0,
    };
    gateway.publish(live, event).await.unwrap();
    draining.await.unwrap();
    assert_eq!(next_id(&mut subscription).await, "in-flight");
    assert!(matches!(
        subscription.next().await,
        Next::End(EndReason::Draining)
    ));
}

#[tokio::test]
async fn a_token_revoked_before_its_grant_is_registered_gets_nothing() {
    let gateway = gateway(16).await;
    let _keeper = subscribe(&gateway, "private:t").await;
    publish(&gateway, "private:t", "1").await;
    publish(&gateway, "private:t", "2").await;
    // The transport checked the token a moment ago; it is revoked before the subscription
    // registers its grant, and it resumes with a replay waiting.
    gateway
        .revoke_token("late", u64::MAX)
        .await
        .expect("revoke");
    let mut subscription = gateway
        .subscribe(Subscribe {
            topics: topics("private:t"),
            label: None,
            transport: Transport::Sse,
            remote: None,
            last_event_id: Some(EventId::parse(b"1").unwrap()),
            grant: Some(Grant {
                token_id: "late".into(),
                key: "signer".into(),
                subject: "alice".into(),
                expires_at: u64::MAX,
            }),
        })
        .await
        .expect("subscribe");
    match subscription.next().await {
        Next::End(EndReason::Revoked(Revocation::TokenRevoked)) => {}
        other => panic!("expected the revocation before any replay, got {other:?}"),
    }
}

/// A client's cursor is the publisher's id, the same on every copy of a publish to
/// several of its topics: a stream that ended between two copies would make its resume
/// skip the rest without a word. Whatever ends it waits for the copies, and a queue takes
/// all of them or none.
#[tokio::test]
async fn the_copies_of_one_publish_are_never_split_by_the_end_of_a_stream() {
    let gateway = gateway(4).await;
    let mut revoked = gateway
        .subscribe(Subscribe {
            topics: topics("a,b"),
            label: None,
            transport: Transport::Sse,
            remote: None,
            last_event_id: None,
            grant: Some(Grant {
                token_id: "t1".into(),
                key: "signer".into(),
                subject: "alice".into(),
                expires_at: u64::MAX,
            }),
        })
        .await
        .expect("subscribe");
    publish(&gateway, "a,b", "1").await;
    assert_eq!(next_delivery(&mut revoked).await, "a:1");
    assert_eq!(gateway.revoke_keys(|_| false), 1);
    assert_eq!(
        next_delivery(&mut revoked).await,
        "b:1",
        "the other copy goes before the end"
    );
    assert!(matches!(
        revoked.next().await,
        Next::End(EndReason::Revoked(Revocation::KeyRevoked))
    ));
    drop(revoked);

    // Capacity 4: one event, then two copies fit; two more copies do not, and neither
    // goes in (one alone would, and the cut would come between them).
    let mut stalled = subscribe(&gateway, "a,b").await;
    publish(&gateway, "a", "2").await;
    publish(&gateway, "a,b", "3").await;
    publish(&gateway, "b,a", "4").await;
    assert_eq!(gateway.stats().slow_consumers_cut(), 1);
    assert_eq!(gateway.stats().events_dropped_slow_consumer(), 2);
    for expected in ["a:2", "a:3", "b:3"] {
        assert_eq!(next_delivery(&mut stalled).await, expected);
    }
    assert!(matches!(
        stalled.next().await,
        Next::End(EndReason::SlowConsumer)
    ));
}
