//! The Redis store against a real `redis-server` that loses or garbles what it holds of a
//! node: Redis's view of the node's connections is repaired from the node's own.

use std::time::Duration;

use tideway_core::{CoreConfig, Gateway, NodeRecord, Subscribe, Transport, unix_millis};
use tideway_protocol::TopicList;
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
