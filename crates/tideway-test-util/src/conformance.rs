//! One conformance suite for the store trait: every store must pass each check.
//!
//! A store crate runs it with [`conformance_tests!`](crate::conformance_tests), giving an
//! async function that makes a fresh, empty store from [`Settings`]. Checks go through a
//! real [`Gateway`] where delivery matters (the inbox is the gateway's), and call the
//! store directly for its indexes.

use std::{sync::Arc, time::Duration};

use tideway_core::{
    ConnectionId, ConnectionRecord, CoreConfig, CoreError, EndReason, Event, Gap, GapReason,
    Gateway, Grant, Next, NodeRecord, Order, Page, Revocation, Route, Store, Subscribe,
    Subscription, Transport, unix_millis,
};
use tideway_protocol::{EventData, EventId, Tenant, TopicList, TopicName};

use crate::{TIMEOUT, wait_until};

/// What a check asks of the store it is given.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Events kept per topic.
    pub history: usize,
    /// Grace of a topic after its last connection leaves.
    pub topic_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            history: 100,
            topic_grace: Duration::ZERO,
        }
    }
}

fn list(text: &str) -> TopicList {
    TopicList::parse(text.as_bytes(), 64).expect("valid topics")
}

fn name(text: &str) -> TopicName {
    TopicName::parse(text).expect("a valid topic")
}

fn node(id: &str) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        hostname: "conformance".into(),
        advertise_host: "127.0.0.1".into(),
        started_at: unix_millis(),
        connections: 0,
        topics: 0,
        last_heartbeat: None,
    }
}

fn record(n: u64, topics: &str) -> ConnectionRecord {
    ConnectionRecord {
        id: ConnectionId::new("n1", n),
        node: "n1".into(),
        topics: list(topics),
        label: Some(format!("c{n}")),
        transport: Transport::Sse,
        remote: None,
        connected_at: unix_millis(),
    }
}

fn event(id: &str) -> Arc<Event> {
    Arc::new(Event {
        id: EventId::parse(id.as_bytes()).expect("valid id"),
        event_type: None,
        data: EventData::parse(format!("data of {id}\nsecond line").into()).expect("utf-8"),
        published_at: unix_millis(),
    })
}

const PAGE: Page = Page {
    page: 1,
    page_size: 100,
    tenant: None,
};

/// A topic is live from its first join to its last leave, and then gone from every index.
pub async fn join_and_leave<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let store = gateway.store();
    let (a, b) = (record(1, "t"), record(2, "t"));
    for c in [&a, &b] {
        store
            .add_connection(&Arc::new(c.clone()))
            .await
            .expect("add");
        store.join(&name("t"), c).await.expect("join");
    }
    assert_eq!(
        store.live(&list("t,other")).await.expect("live"),
        [name("t")]
    );
    let topics = store.topics(PAGE).await.expect("topics");
    assert_eq!((topics.total, topics.items[0].connections), (1, 2));
    store.leave(&name("t"), &a).await.expect("leave");
    assert_eq!(
        store.live(&list("t")).await.expect("live").len(),
        1,
        "one left"
    );
    store.leave(&name("t"), &b).await.expect("leave");
    store.remove_connection(&a.id).await.expect("remove");
    store.remove_connection(&b.id).await.expect("remove");
    assert!(store.live(&list("t")).await.expect("live").is_empty());
    assert_eq!(store.topics(PAGE).await.expect("topics").total, 0);
    assert_eq!(store.connections(PAGE).await.expect("connections").total, 0);
    assert!(store.tail(&name("t"), 10).await.expect("tail").is_none());
}

/// A tenant's page lists that tenant's topics and connections only, paged and counted
/// within the tenant; a page of no tenant lists everything. Checked on the store itself
/// (the gateway withholds what a store leaks, but a store must not leak).
pub async fn listings_keep_tenants_apart<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let store = gateway.store();
    let acme = Tenant::parse("acme").expect("a tenant");
    let globex = Tenant::parse("globex").expect("a tenant");
    let layout = [
        ("orders", Some(&acme)),
        ("orders", Some(&globex)),
        ("audit", Some(&acme)),
        ("orders", None),
    ];
    for (n, (topics, tenant)) in layout.into_iter().enumerate() {
        let mut connection = record(n as u64 + 1, topics);
        if let Some(tenant) = tenant {
            connection.topics = connection.topics.in_tenant(tenant);
        }
        store
            .add_connection(&Arc::new(connection.clone()))
            .await
            .expect("add");
        for topic in &connection.topics {
            store.join(topic, &connection).await.expect("join");
        }
    }
    let page = |tenant: Option<&Tenant>, page| Page {
        page,
        page_size: 1,
        tenant: tenant.cloned(),
    };
    for (tenant, topics, connections) in [(Some(&acme), 2, 2), (Some(&globex), 1, 1), (None, 4, 4)]
    {
        let mut seen_topics = Vec::new();
        let mut seen_connections = Vec::new();
        for number in 1..=4 {
            let listed = store.topics(page(tenant, number)).await.expect("topics");
            assert_eq!(listed.total, topics, "{tenant:?}");
            seen_topics.extend(listed.items.into_iter().map(|t| t.name));
            let listed = store
                .connections(page(tenant, number))
                .await
                .expect("connections");
            assert_eq!(listed.total, connections, "{tenant:?}");
            seen_connections.extend(listed.items);
        }
        assert_eq!(seen_topics.len(), topics, "{tenant:?}: {seen_topics:?}");
        assert_eq!(seen_connections.len(), connections, "{tenant:?}");
        if let Some(tenant) = tenant {
            assert!(
                seen_topics
                    .iter()
                    .all(|t| t.tenant() == Some(tenant.as_str())),
                "{tenant:?} sees only its own topics: {seen_topics:?}"
            );
            assert!(
                seen_connections
                    .iter()
                    .all(|c| c.topics.names()[0].tenant() == Some(tenant.as_str())),
                "{tenant:?} sees only its own connections"
            );
        }
    }
}

/// Connections page in arrival order, with the total.
pub async fn connections_page_in_arrival_order<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let store = gateway.store();
    for n in 1..=5 {
        store
            .add_connection(&Arc::new(record(n, "t")))
            .await
            .expect("add");
    }
    let page = |page, page_size| Page {
        page,
        page_size,
        tenant: None,
    };
    let first = store.connections(page(1, 2)).await.expect("page 1");
    let labels: Vec<_> = first
        .items
        .iter()
        .map(|c| c.label.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        (labels, first.total),
        (vec!["c1".to_owned(), "c2".to_owned()], 5)
    );
    let last = store.connections(page(3, 2)).await.expect("page 3");
    assert_eq!(last.items.len(), 1);
    assert_eq!(last.items[0].label.as_deref(), Some("c5"));
    assert_eq!(last.items[0].topics, list("t"));
    store
        .remove_connection(&ConnectionId::new("n1", 3))
        .await
        .expect("remove");
    assert_eq!(store.connections(page(1, 10)).await.expect("all").total, 4);
    assert_eq!(store.nodes().await.expect("nodes")[0].id.as_ref(), "n1");
}

/// Appends deliver to subscribers in position order; one publish to several topics has
/// one position; history keeps the last `history` events, oldest first.
pub async fn append_delivers_and_keeps_history<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let mut both = subscribe(&gateway, "a,b", None).await;
    let first = gateway
        .store()
        .append(&list("a,b,dead"), &event("1"))
        .await
        .expect("append");
    assert_eq!(
        first
            .iter()
            .map(|e| (e.topic.as_str(), e.seq))
            .collect::<Vec<_>>(),
        [("a", 1), ("b", 1)]
    );
    assert_eq!(
        first[0].position, first[1].position,
        "one position per publish"
    );
    let second = gateway
        .store()
        .append(&list("b"), &event("2"))
        .await
        .expect("append");
    assert!(second[0].position > first[0].position);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut both).await);
    }
    assert_in_order::<S>(&seen, &["a:1", "b:1", "b:2"]);
    for n in 3..=120 {
        gateway
            .store()
            .append(&list("a"), &event(&n.to_string()))
            .await
            .expect("append");
    }
    let tail = gateway
        .store()
        .tail(&name("a"), 1000)
        .await
        .expect("tail")
        .expect("live");
    assert_eq!(tail.len(), 100, "history keeps 100");
    assert_eq!(tail.last().map(|e| e.event.id.as_str()), Some("120"));
    assert_eq!(
        tail.last().map(|e| e.event.data.as_str()),
        Some("data of 120\nsecond line")
    );
    let short = gateway
        .store()
        .tail(&name("a"), 2)
        .await
        .expect("tail")
        .expect("live");
    assert_eq!(
        short
            .iter()
            .map(|e| e.event.id.as_str())
            .collect::<Vec<_>>(),
        ["119", "120"]
    );
}

/// Resume through the gateway: everything after the id, across topics, exactly once.
pub async fn resume_after_an_id<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let _keeper = subscribe(&gateway, "a,b", None).await;
    for (topics, id) in [("a", "1"), ("b", "2"), ("a", "3"), ("a,b", "4")] {
        publish(&gateway, topics, id).await;
    }
    let mut again = subscribe(&gateway, "a,b", Some("2")).await;
    if S::ORDER == Order::PerTopic {
        // "2" went to b alone: b resumes exactly; the id says nothing of a.
        let gap = next_gap(&mut again).await;
        assert_eq!(
            (gap.reason, gap.topics),
            (GapReason::CrossTopicCursor, vec![name("a")])
        );
        assert_eq!(next(&mut again).await, "b:4");
        publish(&gateway, "b", "5").await;
        assert_eq!(next(&mut again).await, "b:5");
        // An id published to both topics places the client in neither.
        let mut after_both = subscribe(&gateway, "a,b", Some("4")).await;
        let gap = next_gap(&mut after_both).await;
        assert_eq!(
            (gap.reason, gap.topics),
            (GapReason::CrossTopicCursor, vec![name("a"), name("b")])
        );
        publish(&gateway, "a", "6").await;
        assert_eq!(next(&mut after_both).await, "a:6", "live events follow");
        // On one topic, a resume is exact as under one order.
        let mut one = subscribe(&gateway, "a", Some("1")).await;
        for expected in ["a:3", "a:4", "a:6"] {
            assert_eq!(next(&mut one).await, expected);
        }
        return;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut again).await);
    }
    assert_eq!(seen, ["a:3", "a:4", "b:4"]);
    publish(&gateway, "b", "5").await;
    assert_eq!(next(&mut again).await, "b:5");
    // An id used again on another topic (no retry: that topic never held it): a resume
    // after it starts from its earliest appearance, so nothing after either is skipped.
    publish(&gateway, "b", "3").await;
    let mut after_reused = subscribe(&gateway, "a,b", Some("3")).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next(&mut after_reused).await);
    }
    assert_eq!(seen, ["a:4", "b:4", "b:5", "b:3"]);
}

/// A topic within its grace stays live and keeps its history; after it, it is gone.
pub async fn grace_keeps_a_topic_for_a_while<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let store = gateway.store();
    let c = record(1, "g");
    store.join(&name("g"), &c).await.expect("join");
    store
        .append(&list("g"), &event("kept"))
        .await
        .expect("append");
    store.leave(&name("g"), &c).await.expect("leave");
    assert_eq!(
        store.live(&list("g")).await.expect("live").len(),
        1,
        "live within the grace"
    );
    let tail = store
        .tail(&name("g"), 10)
        .await
        .expect("tail")
        .expect("still live");
    assert_eq!(tail[0].event.id.as_str(), "kept");
    wait_gone(store, "g").await;
    assert!(store.tail(&name("g"), 10).await.expect("tail").is_none());
}

/// A revoked token is refused from then on, and the subscriptions it granted end.
pub async fn revocation_reaches_every_subscription<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let grant = Grant {
        token_id: "token-1".into(),
        key: "signer".into(),
        subject: "alice".into(),
        expires_at: unix_millis() + 60_000,
    };
    let request = Subscribe {
        topics: list("private:a"),
        label: None,
        transport: Transport::Sse,
        remote: None,
        last_event_id: None,
        grant: Some(grant),
    };
    let mut granted = gateway.subscribe(request).await.expect("subscribe");
    let mut other = subscribe(&gateway, "private:a", None).await;
    assert!(!gateway.token_revoked("token-1").await.expect("read"));
    gateway
        .revoke_token("token-1", unix_millis() + 60_000)
        .await
        .expect("revoke");
    assert!(gateway.token_revoked("token-1").await.expect("read"));
    assert!(!gateway.token_revoked("token-2").await.expect("read"));
    match tokio::time::timeout(TIMEOUT, granted.next())
        .await
        .expect("in time")
    {
        Next::End(EndReason::Revoked(Revocation::TokenRevoked)) => {}
        other => panic!("expected the revocation, got {other:?}"),
    }
    publish(&gateway, "private:a", "still").await;
    assert_eq!(
        next(&mut other).await,
        "private:a:still",
        "other subscriptions go on"
    );
}

/// A resume on two topics whose client's last event was on the quiet one, while the busy
/// one evicted events after it: the busy topic is named in a gap, the quiet one proves
/// continuity, and what history holds is replayed in order.
pub async fn eviction_is_a_gap_per_topic<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let _keeper = subscribe(&gateway, "quiet,busy", None).await;
    publish(&gateway, "quiet", "last-seen").await;
    for n in 1..=300 {
        publish(&gateway, "busy", &format!("b{n}")).await;
    }
    publish(&gateway, "quiet", "q-after").await;
    // An id the history evicted is unknown: nothing after it can be proven.
    let mut busy = subscribe(&gateway, "busy", Some("b150")).await;
    let gap = next_gap(&mut busy).await;
    assert_eq!(
        (gap.reason, gap.topics),
        (GapReason::UnknownLastEventId, vec![name("busy")])
    );
    let mut again = subscribe(&gateway, "quiet,busy", Some("last-seen")).await;
    let gap = next_gap(&mut again).await;
    let expected = match S::ORDER {
        Order::Global => GapReason::HistoryEvicted,
        // The id went to quiet alone; it places the client nowhere in busy.
        Order::PerTopic => GapReason::CrossTopicCursor,
    };
    assert_eq!(
        (gap.reason, gap.topics),
        (expected, vec![name("busy")]),
        "only the topic that evicted is named"
    );
    let mut seen = Vec::new();
    let expected: Vec<String> = match S::ORDER {
        Order::Global => (201..=300).map(|n| format!("busy:b{n}")).collect(),
        Order::PerTopic => Vec::new(),
    }
    .into_iter()
    .chain(["quiet:q-after".to_owned()])
    .collect();
    for _ in 0..expected.len() {
        seen.push(next(&mut again).await);
    }
    assert_eq!(
        seen, expected,
        "the history's 100 newest, then the quiet topic's"
    );
    publish(&gateway, "busy", "live").await;
    assert_eq!(next(&mut again).await, "busy:live");
}

/// A topic that went away (no subscriber, no grace) after the client's last event and
/// came back cannot prove it kept everything: it is named in a gap; the topic that
/// stayed live replays exactly.
pub async fn a_topic_that_expired_is_a_gap<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let _keeper = subscribe(&gateway, "kept", None).await;
    let client = subscribe(&gateway, "kept,lapsed", None).await;
    publish(&gateway, "kept,lapsed", "both").await;
    drop(client);
    wait_gone(gateway.store(), "lapsed").await;
    publish(&gateway, "kept", "after").await;
    if S::ORDER == Order::PerTopic {
        // A topic that started again has a new epoch and an empty history: the id is
        // unknown to it. The one that stayed live resumes exactly on its own.
        let mut lapsed = subscribe(&gateway, "lapsed", Some("both")).await;
        let gap = next_gap(&mut lapsed).await;
        assert_eq!(
            (gap.reason, gap.topics),
            (GapReason::UnknownLastEventId, vec![name("lapsed")])
        );
        let mut kept = subscribe(&gateway, "kept", Some("both")).await;
        assert_eq!(next(&mut kept).await, "kept:after");
        return;
    }
    let mut again = subscribe(&gateway, "kept,lapsed", Some("both")).await;
    let gap = next_gap(&mut again).await;
    assert_eq!(
        (gap.reason, gap.topics),
        (GapReason::TopicExpired, vec![name("lapsed")])
    );
    assert_eq!(next(&mut again).await, "kept:after");
}

/// Membership is a set: joining twice counts once, leaving a topic one never joined
/// takes nobody else out, and leaving twice is harmless.
pub async fn membership_is_idempotent<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let store = gateway.store();
    let (a, b, stranger) = (record(1, "m"), record(2, "m"), record(3, "m"));
    store.join(&name("m"), &a).await.expect("join");
    store.join(&name("m"), &a).await.expect("join again");
    store.join(&name("m"), &b).await.expect("join");
    store
        .leave(&name("m"), &stranger)
        .await
        .expect("leave without join");
    let topics = store.topics(PAGE).await.expect("topics");
    assert_eq!(topics.items[0].connections, 2, "a counted once, b kept");
    store.leave(&name("m"), &a).await.expect("leave");
    store.leave(&name("m"), &a).await.expect("leave again");
    assert_eq!(
        store.live(&list("m")).await.expect("live"),
        [name("m")],
        "b still holds the topic"
    );
    store.leave(&name("m"), &b).await.expect("leave");
    assert!(store.live(&list("m")).await.expect("live").is_empty());
}

/// Resumes on two topics while a publisher alternates between them: every resume gets
/// each event after its cursor exactly once, in order, whatever lands during the resume.
pub async fn resumes_race_publishers<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    // Under per-topic order a resume is exact on the topic of the id: one topic here.
    let (topics, odd) = match S::ORDER {
        Order::Global => ("a,b", "b"),
        Order::PerTopic => ("a", "a"),
    };
    let _keeper = subscribe(&gateway, topics, None).await;
    publish(&gateway, "a", "0").await;
    let publisher = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            for n in 1..=60u32 {
                let topic = if n % 2 == 0 { "a" } else { odd };
                publish(&gateway, topic, &n.to_string()).await;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut resumes = 0;
    let mut cursor = 0u32;
    while cursor < 50 {
        let mut again = subscribe(&gateway, topics, Some(&cursor.to_string())).await;
        // Events after the cursor arrive in publish order; read a few, then resume again.
        for expected in cursor + 1..=(cursor + 5).min(60) {
            let got = next(&mut again).await;
            let topic = if expected % 2 == 0 { "a" } else { odd };
            assert_eq!(got, format!("{topic}:{expected}"), "resume after {cursor}");
        }
        cursor = (cursor + 5).min(60);
        resumes += 1;
    }
    publisher.await.expect("publisher");
    assert!(resumes >= 10);
}

/// A publish retried with the same id to the same topics (its answer was lost, say) is
/// answered as the first one was and delivered once; a new id goes on as usual.
pub async fn a_retried_publish_is_delivered_once<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let mut subscriber = subscribe(&gateway, "r,s", None).await;
    let first = gateway
        .store()
        .append(&list("r,s"), &event("once"))
        .await
        .expect("append");
    let again = gateway
        .store()
        .append(&list("r,s"), &event("once"))
        .await
        .expect("append the retry");
    let seqs = |events: &[Arc<tideway_core::TopicEvent>]| {
        events
            .iter()
            .map(|e| (e.topic.to_string(), e.seq, e.position))
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&again), seqs(&first), "answered as the first one was");
    publish(&gateway, "r", "next").await;
    let mut copies = [next(&mut subscriber).await, next(&mut subscriber).await];
    if S::ORDER == Order::PerTopic {
        // Each topic reaches the node on its own.
        copies.sort();
    }
    assert_eq!(copies, ["r:once", "s:once"]);
    assert_eq!(
        next(&mut subscriber).await,
        "r:next",
        "no second copy of once"
    );
    let tail = gateway
        .store()
        .tail(&name("r"), 10)
        .await
        .expect("tail")
        .expect("live");
    assert_eq!(tail.len(), 2, "history holds it once");
}

/// A batch's events appended in one `append_all` are answered, kept and delivered each
/// as its own `append` would have been, in the batch's order: across the store's own
/// steps (more events than one lock, round trip or script takes), with a topic nobody
/// follows, a long run of events to one topic alone (a queue of one topic replayed) and
/// retries of events earlier in the same batch, inside and outside that run.
pub async fn append_all_answers_each_as_append_would<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let mut on_a = subscribe(&gateway, "a", None).await;
    let mut on_b = subscribe(&gateway, "b", None).await;
    let topics = ["a", "b", "nobody", "a,b"];
    let mut events: Vec<(TopicList, Arc<Event>)> = (0..140)
        .map(|n| (list(topics[n % topics.len()]), event(&format!("e{n}"))))
        .collect();
    // A retry of e5 (to "b") among them.
    events.insert(40, (list("b"), event("e5")));
    // Then 130 events to "a" alone, with a retry of e0 (to "a") and one of r3 in the run.
    let mut run: Vec<(TopicList, Arc<Event>)> = (0..128)
        .map(|n| (list("a"), event(&format!("r{n}"))))
        .collect();
    run.insert(10, (list("a"), event("e0")));
    run.insert(50, (list("a"), event("r3")));
    events.extend(run);
    let answers = gateway.store().append_all(&events).await;
    assert_eq!(answers.len(), events.len(), "one answer per event");
    let answers: Vec<_> = answers
        .into_iter()
        .map(|answer| {
            answer
                .expect("appended")
                .iter()
                .map(|copy| (copy.topic.to_string(), copy.seq, copy.position))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut first_at = std::collections::HashMap::new();
    let mut retries = Vec::new();
    let mut expected_a = Vec::new();
    let mut expected_b = Vec::new();
    for (at, ((topics, event), answer)) in events.iter().zip(&answers).enumerate() {
        let names: Vec<String> = answer.iter().map(|(topic, _, _)| topic.clone()).collect();
        let live: Vec<String> = topics
            .iter()
            .map(|t| t.to_string())
            .filter(|t| t != "nobody")
            .collect();
        assert_eq!(
            names, live,
            "event {at} went to its live topics, in their order"
        );
        if let Some(&first) = first_at.get(&event.id) {
            assert_eq!(
                answer, &answers[first],
                "event {at}, a retry, is answered as the first"
            );
            retries.push(at);
            continue;
        }
        first_at.insert(event.id.clone(), at);
        for name in &names {
            let id = format!("{name}:{}", event.id);
            if name == "a" {
                expected_a.push(id)
            } else {
                expected_b.push(id)
            }
        }
    }
    assert_eq!(retries.len(), 3, "three retries in the batch");
    // Each topic's copies are numbered one after another in the batch's order.
    for topic in ["a", "b"] {
        let seqs: Vec<u64> = answers
            .iter()
            .enumerate()
            .filter(|(at, _)| !retries.contains(at))
            .flat_map(|(_, answer)| answer.iter().filter(|(t, _, _)| t == topic))
            .map(|(_, seq, _)| *seq)
            .collect();
        let counted: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, counted, "{topic}'s copies");
    }
    for (subscriber, expected) in [(&mut on_a, expected_a), (&mut on_b, expected_b)] {
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(next(subscriber).await);
        }
        assert_eq!(got, expected, "delivered once each, in the batch's order");
    }
    // Nothing more: no retry was delivered a second time.
    publish(&gateway, "a", "after").await;
    assert_eq!(next(&mut on_a).await, "a:after");
    publish(&gateway, "b", "after").await;
    assert_eq!(next(&mut on_b).await, "b:after");
}

/// A batch's event is a retry only while the topic's history still holds the first: the
/// batch's own appends evict, as the same events appended one at a time would. Run with
/// a history of 4 events (`Settings::history`), so a batch evicts within itself.
pub async fn a_batch_retries_only_what_history_still_holds<S: Store>(store: S) {
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let mut on_a = subscribe(&gateway, "a", None).await;
    publish(&gateway, "a", "p0").await;
    assert_eq!(next(&mut on_a).await, "a:p0");
    // Each id with the seq its answer must carry: a retry answers the first's seq.
    let batch = [
        ("p0", 1), // held from before the batch
        ("x0", 2),
        ("x1", 3),
        ("x0", 2), // a retry of an event of this batch
        ("x2", 4),
        ("p0", 1), // still held: history is p0, x0, x1, x2
        ("x3", 5), // evicts p0
        ("p0", 6), // no longer held: published again (evicts x0)
        ("x0", 7), // likewise (evicts x1)
        ("x0", 7), // a retry of the new one
        ("x2", 4), // still held
    ];
    let events: Vec<(TopicList, Arc<Event>)> =
        batch.iter().map(|(id, _)| (list("a"), event(id))).collect();
    let answers = gateway.store().append_all(&events).await;
    let seqs: Vec<u64> = answers
        .into_iter()
        .map(|answer| {
            let copies = answer.expect("appended");
            assert_eq!(copies.len(), 1, "one copy, on a");
            copies[0].seq
        })
        .collect();
    let expected: Vec<u64> = batch.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs, expected,
        "each answered as its first while history holds it"
    );
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(next(&mut on_a).await);
    }
    assert_eq!(got, ["a:x0", "a:x1", "a:x2", "a:x3", "a:p0", "a:x0"]);
    publish(&gateway, "a", "after").await;
    assert_eq!(
        next(&mut on_a).await,
        "a:after",
        "nothing else was delivered"
    );
}

/// A batch stops at the first event the store fails: the events after it are not
/// appended (core answers them `NotAttempted`), so none of them lands before the failed
/// one its publisher sends again; sent again, all of them arrive in the batch's order.
pub async fn a_batch_stops_at_its_first_failed_event<S: Store>(store: S) {
    let gateway = Gateway::start(
        crate::Injecting::new(store),
        node("n1"),
        CoreConfig::default(),
    )
    .await
    .expect("start");
    let injecting = gateway.store();
    let mut on_a = subscribe(&gateway, "a", None).await;
    let mut on_b = subscribe(&gateway, "b", None).await;
    let batch = |ids: &[(&str, &str)]| -> Vec<(TopicList, Event)> {
        ids.iter()
            .map(|(topics, id)| (list(topics), Event::clone(&event(id))))
            .collect()
    };
    injecting.fail_append_of("f2");
    let sent = [("a", "f1"), ("a", "f2"), ("a,b", "f3"), ("b", "f4")];
    let outcomes = gateway.publish_all(batch(&sent)).await;
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(published) if published.copies.is_empty() => "dropped",
            Ok(_) => "accepted",
            Err(CoreError::Store(_)) => "store",
            Err(CoreError::NotAttempted) => "not attempted",
            Err(_) => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["accepted", "store", "not attempted", "not attempted"]
    );
    // Nothing after the failed event reached a topic.
    for topic in ["a", "b"] {
        let held: Vec<String> = gateway
            .store()
            .tail(&name(topic), 10)
            .await
            .expect("tail")
            .expect("live")
            .iter()
            .map(|copy| copy.event.id.to_string())
            .collect();
        let expected: &[&str] = if topic == "a" { &["f1"] } else { &[] };
        assert_eq!(held, expected, "{topic}'s history");
    }
    // The publisher sends the rest again, from the failed one.
    let outcomes = gateway.publish_all(batch(&sent[1..])).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let mut got_a = Vec::new();
    for _ in 0..3 {
        got_a.push(next(&mut on_a).await);
    }
    assert_eq!(got_a, ["a:f1", "a:f2", "a:f3"]);
    let mut got_b = Vec::new();
    for _ in 0..2 {
        got_b.push(next(&mut on_b).await);
    }
    assert_eq!(got_b, ["b:f3", "b:f4"]);
}

/// Publishes that land between a resume's join and its read of the histories (the
/// worst moment: they are both in the read and in the queue) come exactly once, in
/// order, for random histories, cursors and races. Under per-topic order a topic the id
/// does not place the client in is named in a gap and goes on with what is published
/// after the read: none of the raced publishes, which the client may have had.
pub async fn races_inside_a_resume_come_once<S: Store + Clone>(store: S) {
    let racing = crate::Injecting::new(store);
    let gateway = Gateway::start(racing.clone(), node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let (topics, shapes) = ("a,b", ["a", "b", "a,b"]);
    let _keeper = subscribe(&gateway, topics, None).await;
    // A small xorshift, seeded per case: the cases are the same on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let mut published: Vec<(String, &str)> = Vec::new();
    let mut gaps = 0;
    for case in 0..16 {
        let before = 1 + random(6);
        for n in 0..before {
            let id = format!("c{case}-p{n}");
            let shape = shapes[random(shapes.len() as u64) as usize];
            publish(&gateway, shape, &id).await;
            published.push((id, shape));
        }
        let cursor = published.len() - 1 - random(before) as usize;
        let raced: Vec<(String, &str)> = (0..random(5))
            .map(|n| {
                let shape = shapes[random(shapes.len() as u64) as usize];
                (format!("c{case}-r{n}"), shape)
            })
            .collect();
        racing.before_next_read(raced.iter().map(|(id, shape)| (list(shape), id.clone())));
        let read = published.len() + raced.len();
        published.extend(raced.iter().cloned());
        let mut again = subscribe(&gateway, topics, Some(&published[cursor].0)).await;
        let after = format!("c{case}-live");
        publish(&gateway, "a,b", &after).await;
        published.push((after, "a,b"));
        // The topics the resume is exact on: all of them under one order; under
        // per-topic order the one the id was published to alone, if any.
        let exact: Vec<&str> = match S::ORDER {
            Order::Global => vec!["a", "b"],
            Order::PerTopic => match published[cursor].1 {
                "a,b" => Vec::new(),
                one => vec![one],
            },
        };
        let elsewhere: Vec<TopicName> = ["a", "b"]
            .into_iter()
            .filter(|t| !exact.contains(t))
            .map(name)
            .collect();
        if !elsewhere.is_empty() {
            let gap = next_gap(&mut again).await;
            assert_eq!(
                (gap.reason, gap.topics),
                (GapReason::CrossTopicCursor, elsewhere),
                "case {case}"
            );
            gaps += 1;
        }
        let expected: Vec<String> = published
            .iter()
            .enumerate()
            .skip(cursor + 1)
            .flat_map(|(at, (id, shape))| {
                let exact = &exact;
                topics
                    .split(',')
                    .filter(|t| shape.split(',').any(|x| x == *t))
                    .filter(move |t| exact.contains(t) || at >= read)
                    .map(move |t| format!("{t}:{id}"))
            })
            .collect();
        let mut seen = Vec::new();
        for _ in 0..expected.len() {
            seen.push(next(&mut again).await);
        }
        assert_in_order::<S>(
            &seen,
            &expected.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        // Nothing more: the next event is one published from here on.
        let probe = format!("c{case}-probe");
        publish(&gateway, "a", &probe).await;
        published.push((probe.clone(), "a"));
        assert_eq!(next(&mut again).await, format!("a:{probe}"), "case {case}");
    }
    assert!(racing.landed.load(std::sync::atomic::Ordering::Relaxed) > 0);
    if S::ORDER == Order::PerTopic {
        assert!(gaps > 0, "some cases resume across topics");
    }
}

/// A subscribe whose join fails halfway leaves what it joined, and its leave of the topic
/// it never joined takes nobody else out of it.
pub async fn a_failed_join_takes_nobody_else_out<S: Store + Clone>(store: S) {
    let injecting = crate::Injecting::new(store);
    let gateway = Gateway::start(injecting.clone(), node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let mut other = subscribe(&gateway, "y", None).await;
    injecting.fail_next_join(name("y"));
    let failed = gateway.subscribe(request("x,y", None)).await;
    assert!(failed.is_err(), "the subscribe fails with the store");
    assert!(gateway.stats().store_errors() >= 1);
    wait_gone(gateway.store(), "x").await;
    assert_eq!(
        gateway.store().live(&list("y")).await.expect("live"),
        [name("y")]
    );
    let topics = gateway.store().topics(PAGE).await.expect("topics");
    assert_eq!(
        topics
            .items
            .iter()
            .map(|t| (t.name.as_str(), t.connections))
            .collect::<Vec<_>>(),
        [("y", 1)]
    );
    publish(&gateway, "y", "still").await;
    assert_eq!(next(&mut other).await, "y:still");
}

/// A crowd subscribing to one topic at once, and leaving at once, is counted whole and
/// leaves nothing behind: every join and leave arrives, each connection's in its order,
/// however a store groups them (the Worker sends what arrives meanwhile as one message).
pub async fn a_crowd_joins_and_leaves_at_once<S: Store + Clone>(store: S) {
    const CROWD: u64 = 300;
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let store = gateway.store().clone();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=CROWD {
        let (store, c) = (store.clone(), record(n, "crowd,other"));
        tasks.spawn(async move {
            store.add_connection(&Arc::new(c.clone())).await?;
            for topic in &c.topics {
                store.join(topic, &c).await?;
            }
            Ok::<_, tideway_core::StoreError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("no panic").expect("the store takes the join");
    }
    let topics = store.topics(PAGE).await.expect("topics");
    let counts: Vec<_> = topics
        .items
        .iter()
        .map(|t| (t.name.as_str(), t.connections))
        .collect();
    assert_eq!(counts, [("crowd", 300), ("other", 300)]);
    assert_eq!(
        store.connections(PAGE).await.expect("connections").total,
        300
    );
    for n in 1..=CROWD {
        let (store, c) = (store.clone(), record(n, "crowd,other"));
        tasks.spawn(async move {
            for topic in &c.topics {
                store.leave(topic, &c).await?;
            }
            store.remove_connection(&c.id).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("no panic").expect("the store takes the leave");
    }
    assert!(
        store
            .live(&list("crowd,other"))
            .await
            .expect("live")
            .is_empty()
    );
    assert_eq!(store.topics(PAGE).await.expect("topics").total, 0);
    assert_eq!(store.connections(PAGE).await.expect("connections").total, 0);
}

/// Publishers racing on overlapping topics: every topic numbers its events in the order
/// of their positions, and the node's inbox gets them in that order — each copy once,
/// the copies of one publish back to back (under [`Order::Global`]).
pub async fn racing_publishers_reach_the_inbox_in_position_order<S: Store + Clone>(store: S) {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 40;
    const SETS: [&str; 4] = ["p", "q,r", "p,r", "p,q,r"];
    let gateway = Gateway::start(store, node("n1"), CoreConfig::default())
        .await
        .expect("start");
    let mut subscriber = subscribe(&gateway, "p,q,r", None).await;
    let mut publishers = tokio::task::JoinSet::new();
    for publisher in 0..PUBLISHERS {
        let gateway = gateway.clone();
        publishers.spawn(async move {
            for n in 0..EACH {
                let topics = SETS[(n + publisher) % SETS.len()];
                publish(&gateway, topics, &format!("w{publisher}-{n}")).await;
            }
        });
    }
    while let Some(done) = publishers.join_next().await {
        done.expect("publisher");
    }
    let copies: usize = (0..PUBLISHERS)
        .flat_map(|p| (0..EACH).map(move |n| SETS[(n + p) % SETS.len()].split(',').count()))
        .sum();
    let mut seen = std::collections::BTreeSet::new();
    let mut last_in_topic = std::collections::BTreeMap::<String, (u64, u64)>::new();
    let mut last: Option<(u64, String)> = None;
    for _ in 0..copies {
        let event = match tokio::time::timeout(TIMEOUT, subscriber.next())
            .await
            .expect("an event in time")
        {
            Next::Event(event) => event,
            other => panic!("expected an event, got {other:?}"),
        };
        let (topic, id) = (event.topic.to_string(), event.event.id.to_string());
        assert!(
            seen.insert((topic.clone(), id.clone())),
            "{topic}:{id} twice"
        );
        let (seq, position) = last_in_topic.get(&topic).copied().unwrap_or_default();
        assert_eq!(event.seq, seq + 1, "{topic} numbers its events in order");
        assert!(
            event.position > position,
            "{topic}:{id} after a later position"
        );
        last_in_topic.insert(topic, (event.seq, event.position));
        if S::ORDER == Order::Global {
            if let Some((position, earlier)) = &last {
                assert!(
                    event.position > *position || (event.position == *position && id == *earlier),
                    "{id} at {} came after {earlier} at {position}",
                    event.position
                );
            }
            last = Some((event.position, id));
        }
    }
    for topic in ["p", "q", "r"] {
        let history = gateway
            .store()
            .tail(&name(topic), 1000)
            .await
            .expect("tail")
            .expect("live");
        assert!(
            history.windows(2).all(|w| w[0].position < w[1].position),
            "{topic}'s history is in position order"
        );
    }
}

/// `seen` is `expected`: in that order under [`Order::Global`]; under
/// [`Order::PerTopic`], in that order within each topic (`topic:id` entries), topics
/// interleaved in any way.
fn assert_in_order<S: Store>(seen: &[String], expected: &[&str]) {
    match S::ORDER {
        Order::Global => assert_eq!(seen, expected),
        Order::PerTopic => {
            fn by_topic<'e>(
                entries: impl Iterator<Item = &'e str>,
            ) -> std::collections::BTreeMap<&'e str, Vec<&'e str>> {
                let mut topics = std::collections::BTreeMap::<&str, Vec<&str>>::new();
                for entry in entries {
                    let topic = entry.split(':').next().unwrap_or_default();
                    topics.entry(topic).or_default().push(entry);
                }
                topics
            }
            assert_eq!(
                by_topic(seen.iter().map(String::as_str)),
                by_topic(expected.iter().copied()),
                "each topic in order"
            );
        }
    }
}

async fn next_gap<S: Store>(subscription: &mut Subscription<S>) -> Gap {
    match tokio::time::timeout(TIMEOUT, subscription.next())
        .await
        .expect("a gap in time")
    {
        Next::Gap(gap) => gap,
        other => panic!("expected a gap, got {other:?}"),
    }
}

/// Waits until `topic` is live nowhere.
async fn wait_gone<S: Store>(store: &S, topic: &str) {
    wait_until(&format!("topic {topic} to go"), || async {
        match store.live(&list(topic)).await {
            Ok(live) if live.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// An anonymous SSE subscription to `topics`, resuming after `last` if given.
fn request(topics: &str, last: Option<&str>) -> Subscribe {
    Subscribe {
        topics: list(topics),
        label: None,
        transport: Transport::Sse,
        remote: None,
        last_event_id: last.map(|id| EventId::parse(id.as_bytes()).expect("valid id")),
        grant: None,
    }
}

async fn subscribe<S: Store>(
    gateway: &Gateway<S>,
    topics: &str,
    last: Option<&str>,
) -> Subscription<S> {
    gateway
        .subscribe(request(topics, last))
        .await
        .expect("subscribe")
}

async fn publish<S: Store>(gateway: &Gateway<S>, topics: &str, id: &str) {
    let id = EventId::parse(id.as_bytes()).expect("valid id");
    let Route::Live(live) = gateway.route(&list(topics), &id).await.expect("route") else {
        panic!("{topics} is live");
    };
    let data = EventData::parse("x".into()).expect("utf-8");
    let event = Event {
        id,
        event_type: None,
        data,
        published_at: unix_millis(),
    };
    gateway.publish(live, event).await.expect("publish");
}

async fn next<S: Store>(subscription: &mut Subscription<S>) -> String {
    match tokio::time::timeout(TIMEOUT, subscription.next())
        .await
        .expect("an event in time")
    {
        Next::Event(event) => format!("{}:{}", event.topic, event.event.id),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Runs every conformance check as its own test. `$make` is an async fn taking
/// [`Settings`] and returning a fresh, empty store and a guard to keep until the end.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        #[tokio::test]
        async fn conformance_join_and_leave() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::join_and_leave(store).await;
        }
        #[tokio::test]
        async fn conformance_connections_page_in_arrival_order() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::connections_page_in_arrival_order(store).await;
        }
        #[tokio::test]
        async fn conformance_append_delivers_and_keeps_history() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::append_delivers_and_keeps_history(store).await;
        }
        #[tokio::test]
        async fn conformance_resume_after_an_id() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::resume_after_an_id(store).await;
        }
        #[tokio::test]
        async fn conformance_revocation_reaches_every_subscription() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::revocation_reaches_every_subscription(store).await;
        }
        #[tokio::test]
        async fn conformance_eviction_is_a_gap_per_topic() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::eviction_is_a_gap_per_topic(store).await;
        }
        #[tokio::test]
        async fn conformance_a_topic_that_expired_is_a_gap() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::a_topic_that_expired_is_a_gap(store).await;
        }
        #[tokio::test]
        async fn conformance_membership_is_idempotent() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::membership_is_idempotent(store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_resumes_race_publishers() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::resumes_race_publishers(store).await;
        }
        #[tokio::test]
        async fn conformance_a_retried_publish_is_delivered_once() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::a_retried_publish_is_delivered_once(store).await;
        }
        #[tokio::test]
        async fn conformance_append_all_answers_each_as_append_would() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::append_all_answers_each_as_append_would(store).await;
        }
        #[tokio::test]
        async fn conformance_a_batch_retries_only_what_history_still_holds() {
            let settings = $crate::conformance::Settings {
                history: 4,
                ..$crate::conformance::Settings::default()
            };
            let (store, _guard) = $make(settings).await;
            $crate::conformance::a_batch_retries_only_what_history_still_holds(store).await;
        }
        #[tokio::test]
        async fn conformance_a_batch_stops_at_its_first_failed_event() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::a_batch_stops_at_its_first_failed_event(store).await;
        }
        #[tokio::test]
        async fn conformance_races_inside_a_resume_come_once() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::races_inside_a_resume_come_once(store).await;
        }
        #[tokio::test]
        async fn conformance_a_failed_join_takes_nobody_else_out() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::a_failed_join_takes_nobody_else_out(store).await;
        }
        #[tokio::test]
        async fn conformance_racing_publishers_reach_the_inbox_in_position_order() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::racing_publishers_reach_the_inbox_in_position_order(store).await;
        }
        #[tokio::test]
        async fn conformance_a_crowd_joins_and_leaves_at_once() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::a_crowd_joins_and_leaves_at_once(store).await;
        }
        #[tokio::test]
        async fn conformance_listings_keep_tenants_apart() {
            let (store, _guard) = $make($crate::conformance::Settings::default()).await;
            $crate::conformance::listings_keep_tenants_apart(store).await;
        }
        #[tokio::test]
        async fn conformance_grace_keeps_a_topic_for_a_while() {
            let settings = $crate::conformance::Settings {
                topic_grace: ::std::time::Duration::from_millis(300),
                ..$crate::conformance::Settings::default()
            };
            let (store, _guard) = $make(settings).await;
            $crate::conformance::grace_keeps_a_topic_for_a_while(store).await;
        }
    };
}
