//! The cluster for real: several `tideway` processes on local ports sharing a
//! `redis-server`, a Redis Cluster, or the Durable-Object Worker on workerd.

use tideway_test_util::{
    API_KEY, Client, RedisCluster, RedisServer, SharedStore, TidewayProcess, Worker, wait_until,
};

/// One `tideway` process of the cluster.
struct Node;

impl Node {
    fn start(id: &str, redis: &impl SharedStore) -> TidewayProcess {
        let mut args = redis.node_args(id);
        args.extend(
            [
                "--node-ttl",
                "2s",
                "--token-secret",
                "cluster-token-secret-of-32-bytes!",
            ]
            .map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::with_args(&args)
    }

    fn with_args(args: &[&str]) -> TidewayProcess {
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_tideway"));
        TidewayProcess::start(binary, args, std::iter::empty::<(&str, &str)>())
    }
}

async fn total(client: &Client, path: &str) -> u64 {
    client.admin(path).await.json()["total"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_subscribers_on_the_others_exactly_once() {
    publish_reaches_other_nodes(&RedisServer::start()).await;
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_subscribers_on_the_others_exactly_once_on_redis_cluster() {
    publish_reaches_other_nodes(&RedisCluster::start()).await;
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_subscribers_on_the_others_exactly_once_on_the_worker() {
    publish_reaches_other_nodes(&Worker::start()).await;
}

async fn publish_reaches_other_nodes(redis: &impl SharedStore) {
    let nodes: Vec<TidewayProcess> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(id, redis))
        .collect();
    let (n1, n2, n3) = (&nodes[0].client, &nodes[1].client, &nodes[2].client);
    let mut on_2 = n2.subscribe("/v1/stream?topic=orders", &[]).await;
    let mut on_3 = n3.subscribe("/v1/stream?topic=orders", &[]).await;
    let mut ws_3 = n3.ws("/v1/ws?topic=orders", &[]).await;

    for n in 0..50 {
        let reply = n1
            .publish("orders", &format!("o{n}"), &format!("order {n}"))
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text());
    }
    n1.publish("orders", "end", "sentinel").await;
    for sse in [&mut on_2, &mut on_3] {
        for n in 0..50 {
            let event = sse.next_event().await.expect("an event");
            assert_eq!(event.id, Some(format!("o{n}")), "each once, in order");
            assert_eq!(event.data, Some(format!("order {n}")));
        }
        assert_eq!(
            sse.next_event().await.expect("the sentinel").id.as_deref(),
            Some("end"),
            "no duplicates"
        );
    }
    for n in 0..50 {
        assert_eq!(ws_3.next_json().await["id"], format!("o{n}"));
    }

    // Every node answers the admin API from the shared state.
    for client in [n1, n2, n3] {
        assert_eq!(total(client, "/v1/admin/connections").await, 3);
        let topics = client.admin("/v1/admin/topics").await.json();
        assert_eq!(topics["items"][0]["connections"], 3);
        assert_eq!(topics["items"][0]["events"], 51);
        let nodes = client.admin("/v1/admin/nodes").await.json();
        let ids: Vec<&str> = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 3, "{nodes}");
        for node in nodes["items"].as_array().unwrap() {
            let beat = node["lastHeartbeat"].as_u64().expect("a heartbeat time");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            assert!(now.abs_diff(beat) < 10_000, "a recent heartbeat: {node}");
            // n1 holds no subscriber; n2 and n3 follow `orders`.
            let expected = if node["id"] == "n1" { 0 } else { 1 };
            assert_eq!(node["topics"], expected, "{node}");
        }
        let tail = client
            .admin("/v1/admin/topics/orders/tail?limit=1")
            .await
            .json();
        assert_eq!(tail["items"][0]["id"], "end");
    }
    // A topic live nowhere in the cluster is dropped on any node, body unread.
    assert_eq!(
        n2.publish("nobody", "x", "lost").await.json()["status"],
        "dropped"
    );

    // A client that moves to another node resumes where it left off.
    drop(on_2);
    n1.publish("orders", "while-away", "x").await;
    let mut moved = n1
        .subscribe("/v1/stream?topic=orders", &["last-event-id: end"])
        .await;
    assert_eq!(
        moved.next_event().await.unwrap().id.as_deref(),
        Some("while-away")
    );
}

#[tokio::test]
async fn a_killed_node_leaves_the_shared_state_within_seconds() {
    killed_node_leaves(&RedisServer::start()).await;
}

#[tokio::test]
async fn a_killed_node_leaves_the_shared_state_within_seconds_on_redis_cluster() {
    killed_node_leaves(&RedisCluster::start()).await;
}

#[tokio::test]
async fn a_killed_node_leaves_the_shared_state_within_seconds_on_the_worker() {
    killed_node_leaves(&Worker::start()).await;
}

async fn killed_node_leaves(redis: &impl SharedStore) {
    let survivor = Node::start("survivor", redis);
    let mut doomed = Node::start("doomed", redis);
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(
            doomed
                .client
                .subscribe("/v1/stream?topic=fragile", &[])
                .await,
        );
    }
    assert_eq!(total(&survivor.client, "/v1/admin/connections").await, 3);
    doomed.kill();
    // With --node-ttl 2s this takes 2-3 s; the wait gives up after TIMEOUT (10 s).
    wait_until(
        "the dead node's connections and topics to leave the shared state",
        || async {
            let connections = total(&survivor.client, "/v1/admin/connections").await;
            let topics = total(&survivor.client, "/v1/admin/topics").await;
            let nodes = survivor.client.admin("/v1/admin/nodes").await.json()["items"]
                .as_array()
                .map_or(0, Vec::len);
            if (connections, topics, nodes) == (0, 0, 1) {
                Ok(())
            } else {
                Err(format!(
                    "{connections} connections, {topics} topics, {nodes} nodes"
                ))
            }
        },
    )
    .await;
    assert_eq!(
        survivor.client.publish("fragile", "x", "y").await.json()["status"],
        "dropped"
    );
    drop(streams);
}

#[tokio::test]
async fn delivery_comes_back_by_itself_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let publisher = Node::start("p", &redis);
    let holder = Node::start("h", &redis);
    let mut sse = holder
        .client
        .subscribe("/v1/stream?topic=steady", &[])
        .await;
    assert_eq!(
        publisher
            .client
            .publish("steady", "before", "x")
            .await
            .status,
        202
    );
    assert_eq!(
        sse.next_event().await.unwrap().id.as_deref(),
        Some("before")
    );

    redis.stop();
    wait_until("/readyz to report the outage", || async {
        match publisher.client.get("/readyz", &[]).await.status {
            503 => Ok(()),
            other => Err(format!("status {other}")),
        }
    })
    .await;
    let refused = publisher.client.publish("steady", "during", "x").await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (503, "store_unavailable")
    );

    redis.restart();
    wait_until(
        "the holder to register again and the publish to be accepted",
        || async {
            let reply = publisher.client.publish("steady", "after", "x").await;
            match reply.status {
                202 => Ok(()),
                _ => Err(reply.text()),
            }
        },
    )
    .await;
    // Redis came back empty, so the stream is told it may have missed events (those
    // accepted before the holder registered again went nowhere), then gets what follows.
    let gap = sse.next_event().await.unwrap();
    assert_eq!(gap.event.as_deref(), Some("tideway.gap"));
    let data: serde_json::Value = serde_json::from_str(gap.data.as_deref().unwrap()).unwrap();
    assert_eq!(data["reason"], "store_restarted");
    assert_eq!(data["topics"], serde_json::json!(["steady"]));
    assert_eq!(sse.next_event().await.unwrap().id.as_deref(), Some("after"));
    // Readiness follows the heartbeat, so it may lag the first success by one beat.
    wait_until("/readyz to report the recovery", || async {
        match publisher.client.get("/readyz", &[]).await.status {
            200 => Ok(()),
            other => Err(format!("status {other}")),
        }
    })
    .await;
    assert_eq!(total(&publisher.client, "/v1/admin/connections").await, 1);
}

#[tokio::test]
async fn every_adapter_serves_the_same_contract() {
    let redis = RedisServer::start();
    let url = redis.url();
    let adapters: [&[&str]; 3] = [
        &["--adapter", "memory"],
        &["--adapter", "do"],
        &["--adapter", "redis", "--redis-url", &url],
    ];
    for args in adapters {
        let node = Node::with_args(args);
        let client = node.client;
        let mut sse = client.subscribe("/v1/stream?topic=a,b", &[]).await;
        let mut ws = client.ws("/v1/ws?topic=b", &[]).await;
        let accepted = client.publish("a,b", "1", "one").await;
        assert_eq!(accepted.status, 202, "{args:?}");
        assert_eq!(
            client.publish("nobody", "2", "x").await.json()["status"],
            "dropped"
        );
        // A publisher that retries (its answer was lost) is answered as the first time,
        // and nobody receives the event twice.
        let retried = client.publish("a,b", "1", "one").await;
        assert_eq!(
            (retried.status, retried.json()["topics"].clone()),
            (202, accepted.json()["topics"].clone()),
            "{args:?}"
        );
        client.publish("a", "3", "three").await;
        let first = sse.next_event().await.expect("an event");
        let second = sse.next_event().await.expect("an event");
        assert_eq!(
            (first.field("topic"), second.field("topic")),
            (Some("a"), Some("b")),
            "{args:?}"
        );
        let third = sse.next_event().await.expect("an event");
        assert_eq!(third.id.as_deref(), Some("3"), "{args:?}");
        assert_eq!(ws.next_json().await["data"], "one", "{args:?}");
        assert_eq!(total(&client, "/v1/admin/connections").await, 2, "{args:?}");
        assert_eq!(total(&client, "/v1/admin/topics").await, 2, "{args:?}");
        let tail = client.admin("/v1/admin/topics/a/tail").await.json();
        assert_eq!(tail["items"][0]["data"], "one", "{args:?}");
        assert_eq!(tail["items"][1]["data"], "three", "{args:?}");
        let mut resumed = client
            .subscribe("/v1/stream?topic=a", &["last-event-id: 0"])
            .await;
        assert_eq!(
            resumed.next_event().await.unwrap().event.as_deref(),
            Some("tideway.gap")
        );
    }
}

#[tokio::test]
async fn revoking_a_token_on_one_node_ends_its_subscriptions_on_another() {
    revocation_crosses_nodes(&RedisServer::start()).await;
}

#[tokio::test]
async fn revoking_a_token_on_one_node_ends_its_subscriptions_on_another_on_redis_cluster() {
    revocation_crosses_nodes(&RedisCluster::start()).await;
}

#[tokio::test]
async fn revoking_a_token_on_one_node_ends_its_subscriptions_on_another_on_the_worker() {
    revocation_crosses_nodes(&Worker::start()).await;
}

async fn revocation_crosses_nodes(redis: &impl SharedStore) {
    let n1 = Node::start("r1", redis);
    let n2 = Node::start("r2", redis);
    let auth = format!("authorization: Bearer {API_KEY}");
    let body = br#"{"subject": "alice", "topics": ["private:alice:*"], "ttlSeconds": 600}"#;
    let signed = n1
        .client
        .raw(tideway_test_util::request("POST", "/v1/tokens", &[&auth], body).as_bytes())
        .await;
    assert_eq!(signed.status, 201, "{}", signed.text());
    let token = signed.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("authorization: Bearer {token}");
    // Signed on node 1, accepted on node 2: the nodes share the token secret.
    let mut sse = n2
        .client
        .subscribe("/v1/stream?topic=private:alice:inbox", &[&bearer])
        .await;
    assert_eq!(
        n1.client
            .publish("private:alice:inbox", "a1", "hi alice")
            .await
            .status,
        202
    );
    assert_eq!(sse.next_event().await.unwrap().id.as_deref(), Some("a1"));

    let revoke = format!(r#"{{"token": "{token}"}}"#);
    let revoked = n1
        .client
        .raw(
            tideway_test_util::request("POST", "/v1/tokens/revoke", &[&auth], revoke.as_bytes())
                .as_bytes(),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let end = sse.next_event().await.expect("the revocation");
    assert_eq!(end.event.as_deref(), Some("tideway.revoked"));
    assert!(end.data.unwrap().contains("token_revoked"));
    assert!(
        sse.next_block().await.is_none(),
        "the stream ends on node 2"
    );
    let again = n2
        .client
        .get("/v1/stream?topic=private:alice:inbox", &[&bearer])
        .await;
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (401, "token_revoked")
    );
}

#[tokio::test]
async fn tenants_stay_apart_across_nodes() {
    tenants_stay_apart(&RedisServer::start()).await;
}

#[tokio::test]
async fn tenants_stay_apart_across_nodes_on_redis_cluster() {
    tenants_stay_apart(&RedisCluster::start()).await;
}

#[tokio::test]
async fn tenants_stay_apart_across_nodes_on_the_worker() {
    tenants_stay_apart(&Worker::start()).await;
}

async fn tenants_stay_apart(redis: &impl SharedStore) {
    // One directory per call: the three stores' tests run at once in this process, and
    // one's cleanup must not delete another's keys file.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tideway-tenants-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.json");
    std::fs::write(
        &keys,
        r#"{"keys": [
            {"name": "acme", "key": "acme-secret", "tenant": "acme", "scopes": ["publish", "admin", "sign"]},
            {"name": "globex", "key": "globex-secret", "tenant": "globex", "scopes": ["publish", "admin", "sign"]}
        ]}"#,
    )
    .unwrap();
    let keys = keys.to_string_lossy().into_owned();
    let node = |id: &'static str| {
        let mut args = redis.node_args(id);
        args.extend(["--keys-file".to_owned(), keys.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Node::with_args(&args)
    };
    let (n1, n2) = (node("t1"), node("t2"));
    let mut acme = n2
        .client
        .subscribe("/v1/stream?topic=orders&tenant=acme", &[])
        .await;
    let mut globex = n2
        .client
        .subscribe("/v1/stream?topic=orders&tenant=globex", &[])
        .await;
    let publish = |key: &str, id: &str| {
        let headers = [
            format!("authorization: Bearer {key}"),
            "x-sse-topic: orders".to_owned(),
            format!("x-sse-id: {id}"),
        ];
        tideway_test_util::request(
            "POST",
            "/v1/publish",
            &headers.iter().map(String::as_str).collect::<Vec<_>>(),
            b"x",
        )
    };
    assert_eq!(
        n1.client
            .raw(publish("acme-secret", "acme-1").as_bytes())
            .await
            .status,
        202
    );
    assert_eq!(
        n1.client
            .raw(publish("globex-secret", "globex-1").as_bytes())
            .await
            .status,
        202
    );
    assert_eq!(
        acme.next_event().await.unwrap().id.as_deref(),
        Some("acme-1")
    );
    assert_eq!(
        globex.next_event().await.unwrap().id.as_deref(),
        Some("globex-1")
    );
    for (client, key) in [(&n1.client, "acme-secret"), (&n2.client, "globex-secret")] {
        let auth = format!("authorization: Bearer {key}");
        let topics = client.get("/v1/admin/topics", &[&auth]).await.json();
        assert_eq!(
            (
                topics["total"].as_u64(),
                topics["items"][0]["name"].as_str()
            ),
            (Some(1), Some("orders"))
        );
        let connections = client.get("/v1/admin/connections", &[&auth]).await.json();
        assert_eq!(connections["total"], 1, "{key}: {connections}");
    }
    assert_eq!(
        total(&n1.client, "/v1/admin/connections").await,
        2,
        "the operator sees both"
    );
    drop((acme, globex));
    let _ = std::fs::remove_dir_all(&dir);
}
