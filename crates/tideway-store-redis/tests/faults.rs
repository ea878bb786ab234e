//! The Redis store against a real `redis-server` that loses or garbles what it holds of a
//! node, or what it sends one: Redis's view of the node's connections is repaired from
//! the node's own, and messages lost on the way are read back from history.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tideway_core::{
    CoreConfig, EndReason, Event, Gateway, Grant, Next, NodeRecord, Revocation, Store, Subscribe,
    Subscription, Transport, unix_millis,
};
use tideway_protocol::{EventData, EventId, TopicList};
use tideway_store_redis::{RedisConfig, RedisStore};
use tideway_test_util::{RedisServer, wait_until};

async fn gateway(redis: &RedisServer) -> Gateway<RedisStore> {
    let store = RedisStore::connect(RedisConfig {
        url: redis.url(),
        node_ttl: Duration::from_millis(500),
        ..RedisConfig::default()
    })
    .await
    .expect("connect");
    let node = NodeRecord {
        id: "n1".into(),
        hostname: "faults".into(),
        advertise_host: "127.0.0.1".into(),
        started_at: unix_millis(),
        connections: 0,
        topics: 0,
        last_heartbeat: None,
    };
    Gateway::start(store, node, CoreConfig::default())
        .await
        .expect("start")
}

fn subscribe(topics: &str) -> Subscribe {
    Subscribe {
        topics: TopicList::parse(topics.as_bytes(), 8).expect("topics"),
        label: None,
        transport: Transport::Sse,
        remote: None,
        last_event_id: None,
        grant: None,
    }
}

async fn redis_says(redis: &RedisServer, words: &[&str], expected: &str) {
    wait_until(&format!("{words:?} to answer {expected}"), || async {
        let reply = redis.command(words);
        if reply == expected {
            Ok(())
        } else {
            Err(reply)
        }
    })
    .await;
}

#[tokio::test]
async fn a_resync_registers_hundreds_of_connections_again_in_batches() {
    let redis = RedisServer::start();
    let gateway = gateway(&redis).await;
    let mut subscriptions = Vec::new();
    for n in 0..450 {
        let topics = format!("t{},shared", n % 30);
        subscriptions.push(
            gateway
                .subscribe(subscribe(&topics))
                .await
                .expect("subscribe"),
        );
    }
    redis_says(&redis, &["SCARD", "tideway:node:n1:conns"], ":450").await;
    // Redis forgets everything, as a restart without persistence would.
    assert_eq!(redis.command(&["FLUSHALL"]), "+OK");
    redis_says(&redis, &["SCARD", "tideway:node:n1:conns"], ":450").await;
    redis_says(&redis, &["SCARD", "tideway:topic:shared:conns:n1"], ":450").await;
    redis_says(&redis, &["SCARD", "tideway:topic:t7:conns:n1"], ":15").await;
    redis_says(&redis, &["ZCARD", "tideway:conns"], ":450").await;
}

#[tokio::test]
async fn redis_holding_other_connections_than_the_node_is_repaired() {
    let redis = RedisServer::start();
    let gateway = gateway(&redis).await;
    let kept = gateway.subscribe(subscribe("a")).await.expect("subscribe");
    let lost = gateway
        .subscribe(subscribe("a,b"))
        .await
        .expect("subscribe");
    redis_says(&redis, &["SCARD", "tideway:node:n1:conns"], ":2").await;
    let lost_id = lost.record().id.to_string();
    // Redis loses one of the node's connections...
    redis.command(&["SREM", "tideway:node:n1:conns", &lost_id]);
    redis.command(&["SREM", "tideway:topic:b:conns:n1", &lost_id]);
    redis_says(
        &redis,
        &["SISMEMBER", "tideway:node:n1:conns", &lost_id],
        ":1",
    )
    .await;
    redis_says(
        &redis,
        &["SISMEMBER", "tideway:topic:b:conns:n1", &lost_id],
        ":1",
    )
    .await;
    // ...and holds one the node does not have (a resync that raced its close).
    redis.command(&["SADD", "tideway:node:n1:conns", "n1/999"]);
    redis.command(&[
        "SET",
        "tideway:conn:n1/999",
        r#"{"id":"n1/999","node":"n1","topics":["a"],"label":null,"transport":"sse","remote":null,"connectedAt":0}"#,
    ]);
    redis.command(&["SADD", "tideway:topic:a:conns:n1", "n1/999"]);
    redis_says(
        &redis,
        &["SISMEMBER", "tideway:node:n1:conns", "n1/999"],
        ":0",
    )
    .await;
    redis_says(
        &redis,
        &["SISMEMBER", "tideway:topic:a:conns:n1", "n1/999"],
        ":0",
    )
    .await;
    redis_says(&redis, &["EXISTS", "tideway:conn:n1/999"], ":0").await;
    redis_says(&redis, &["SCARD", "tideway:topic:a:conns:n1"], ":2").await;
    drop((kept, lost));
}

#[tokio::test]
async fn a_dead_node_of_the_previous_layout_is_reaped() {
    let redis = RedisServer::start();
    // What a node of the version before sets of connection ids left behind: its topics as
    // a hash of counts, and its registration expired long ago.
    redis.command(&["HSET", "tideway:node:old:topics", "legacy", "1"]);
    redis.command(&["HSET", "tideway:topic:legacy:nodes", "old", "1"]);
    redis.command(&["ZADD", "tideway:topics", "0", "legacy"]);
    redis.command(&["ZADD", "tideway:nodes", "1", "old"]);
    let gateway = gateway(&redis).await;
    redis_says(&redis, &["ZSCORE", "tideway:nodes", "old"], "$-1").await;
    redis_says(&redis, &["EXISTS", "tideway:topic:legacy:nodes"], ":0").await;
    assert!(gateway.ready().await, "heartbeats go on");
}

/// Another node's store, for publishing and revoking (it registers no node, so it
/// receives nothing), keeping `history` events per topic.
async fn publisher(redis: &RedisServer, history: usize) -> RedisStore {
    RedisStore::connect(RedisConfig {
        url: redis.url(),
        history,
        ..RedisConfig::default()
    })
    .await
    .expect("connect")
}

async fn publish(store: &RedisStore, topics: &str, id: &str) {
    let event = Arc::new(Event {
        id: EventId::parse(id.as_bytes()).expect("id"),
        event_type: None,
        data: EventData::parse(Bytes::from(format!("data of {id}"))).expect("data"),
        published_at: unix_millis(),
    });
    let topics = TopicList::parse(topics.as_bytes(), 8).expect("topics");
    let appended = store.append(&topics, &event).await.expect("append");
    assert!(!appended.is_empty(), "{id} was appended");
}

/// What a subscription sends next, within a few seconds: `topic id` of an event, else
/// how it ended or the gap it reported.
async fn next_of(subscription: &mut Subscription<RedisStore>) -> String {
    let next = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("the subscription to send something");
    match next {
        Next::Event(event) => format!("{} {}", event.topic, event.event.id),
        other => format!("{other:?}"),
    }
}

/// Cuts the node's pub/sub connection: what Redis publishes to the node before it
/// reconnects (200 ms later) is lost on the way.
fn cut_pubsub(redis: &RedisServer) {
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(killed, ":0", "a pub/sub connection was there to kill");
}

#[tokio::test]
async fn messages_lost_on_the_way_are_read_back_from_history_in_order() {
    let redis = RedisServer::start();
    let gateway = gateway(&redis).await;
    let other = publisher(&redis, 100).await;
    let mut both = gateway
        .subscribe(subscribe("a,b"))
        .await
        .expect("subscribe");
    let mut only_b = gateway.subscribe(subscribe("b")).await.expect("subscribe");
    publish(&other, "a", "1").await;
    assert_eq!(next_of(&mut both).await, "a 1");
    cut_pubsub(&redis);
    publish(&other, "a", "2").await;
    publish(&other, "b", "3").await;
    publish(&other, "a,b", "4").await;
    // Sent once the node listens again, after the hole.
    wait_until("the node to listen again", || async {
        // The node's two channels: its events and revocations.
        let reply = redis.command(&["PUBSUB", "CHANNELS"]);
        if reply == "*2" { Ok(()) } else { Err(reply) }
    })
    .await;
    publish(&other, "b", "5").await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_of(&mut both).await);
    }
    // The copies of 4 (one per topic) come by topic name; each topic's stream is in order.
    assert_eq!(seen, ["a 2", "b 3", "a 4", "b 4", "b 5"]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_of(&mut only_b).await);
    }
    assert_eq!(seen, ["b 3", "b 4", "b 5"]);
    assert!(gateway.stats().delivery_repairs() >= 1);
    assert_eq!(
        gateway.stats().events_recovered(),
        4,
        "2, 3, and 4 on two topics"
    );
    assert_eq!(
        gateway.stats().delivery_interruptions(),
        0,
        "nobody had to be told"
    );
}

#[tokio::test]
async fn a_hole_history_cannot_fill_ends_only_the_streams_of_its_topic() {
    let redis = RedisServer::start();
    let gateway = gateway(&redis).await;
    // Keeps two events per topic: a busy topic evicts what the node missed.
    let other = publisher(&redis, 2).await;
    let mut busy = gateway
        .subscribe(subscribe("busy"))
        .await
        .expect("subscribe");
    let mut quiet = gateway
        .subscribe(subscribe("quiet"))
        .await
        .expect("subscribe");
    publish(&other, "busy", "1").await;
    assert_eq!(next_of(&mut busy).await, "busy 1");
    cut_pubsub(&redis);
    for id in 2..=6 {
        publish(&other, "busy", &id.to_string()).await;
    }
    publish(&other, "quiet", "7").await;
    assert_eq!(next_of(&mut quiet).await, "quiet 7");
    assert_eq!(next_of(&mut busy).await, "End(Interrupted)");
    publish(&other, "quiet", "8").await;
    assert_eq!(
        next_of(&mut quiet).await,
        "quiet 8",
        "the quiet stream goes on"
    );
    assert_eq!(gateway.stats().delivery_interruptions(), 1);
}

#[tokio::test]
async fn a_revocation_lost_on_the_way_still_ends_its_subscriptions() {
    let redis = RedisServer::start();
    let gateway = gateway(&redis).await;
    let other = publisher(&redis, 100).await;
    let mut request = subscribe("a");
    request.grant = Some(Grant {
        token_id: "token-1".to_owned(),
        key: "k".to_owned(),
        subject: "s".to_owned(),
        expires_at: unix_millis() + 60_000,
    });
    let mut granted = gateway.subscribe(request).await.expect("subscribe");
    cut_pubsub(&redis);
    other
        .revoke_token("token-1", unix_millis() + 60_000)
        .await
        .expect("revoke");
    // Nothing else is published: the heartbeat's marker shows the hole.
    assert_eq!(
        next_of(&mut granted).await,
        format!(
            "{:?}",
            Next::End(EndReason::Revoked(Revocation::TokenRevoked))
        )
    );
}

/// A batch whose script Redis refuses (out of memory) ends there: every event of the
/// refused chunk is answered with the error, the chunk after it is never sent (core
/// answers it `NotAttempted`), and nothing of the batch reaches a subscriber. Sent again
/// once Redis takes writes, the whole batch arrives once, in order.
#[tokio::test]
async fn a_batch_redis_refuses_ends_at_the_refused_chunk() {
    let redis = RedisServer::start();
    let gateway = gateway(&redis).await;
    let mut both = gateway
        .subscribe(subscribe("a,b"))
        .await
        .expect("subscribe");
    let batch = || -> Vec<(TopicList, Event)> {
        (0..150)
            .map(|n| {
                let topics = if n % 2 == 0 { "a" } else { "b" };
                let id = format!("e{n}");
                let event = Event {
                    id: EventId::parse(id.as_bytes()).expect("id"),
                    event_type: None,
                    data: EventData::parse(Bytes::from(id)).expect("data"),
                    published_at: unix_millis(),
                };
                (
                    TopicList::parse(topics.as_bytes(), 8).expect("topics"),
                    event,
                )
            })
            .collect()
    };
    assert_eq!(
        redis.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        "+OK"
    );
    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory", "1"]), "+OK");
    let outcomes = gateway.publish_all(batch()).await;
    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory", "0"]), "+OK");
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(_) => "published",
            Err(tideway_core::CoreError::Store(_)) => "store",
            Err(tideway_core::CoreError::NotAttempted) => "not attempted",
            Err(_) => "other",
        })
        .collect();
    let expected: Vec<&str> = std::iter::repeat_n("store", 100)
        .chain(std::iter::repeat_n("not attempted", 50))
        .collect();
    assert_eq!(kinds, expected);
    assert_eq!(redis.command(&["LLEN", "tideway:topic:a:history"]), ":0");
    let outcomes = gateway.publish_all(batch()).await;
    assert!(
        outcomes.iter().all(|outcome| outcome
            .as_ref()
            .is_ok_and(|published| published.copies.len() == 1)),
        "all published once Redis takes writes"
    );
    let mut seen = Vec::new();
    for _ in 0..150 {
        seen.push(next_of(&mut both).await);
    }
    let sent: Vec<String> = (0..150)
        .map(|n| format!("{} e{n}", if n % 2 == 0 { "a" } else { "b" }))
        .collect();
    assert_eq!(seen, sent, "once each, in the batch's order");
}
