//! The store conformance suite against the Worker (`worker/`) on workerd, Cloudflare's
//! runtime, started by the test with its storage in a temporary directory.

use tideway_store_do::{WorkerConfig, WorkerStore};
use tideway_test_util::{WORKER_SECRET, Worker, conformance::Settings};

/// A store on a Worker the test starts.
async fn started(settings: Settings, node_ttl: std::time::Duration) -> (WorkerStore, Worker) {
    let worker = tokio::task::spawn_blocking(Worker::start)
        .await
        .expect("start the Worker");
    let store = WorkerStore::connect(WorkerConfig {
        url: worker.url(),
        secret: WORKER_SECRET.to_owned(),
        ca_cert: None,
        history: settings.history,
        topic_grace: settings.topic_grace,
        node_ttl,
    })
    .await
    .expect("connect to the test's Worker");
    (store, worker)
}

/// An HTTP client of the test's Worker, for messages no node would send.
fn client_of(worker: &Worker) -> tideway_test_util::Client {
    tideway_test_util::Client {
        addr: worker
            .url()
            .trim_start_matches("http://")
            .parse()
            .expect("an address"),
    }
}

async fn make(settings: Settings) -> (WorkerStore, Worker) {
    started(settings, std::time::Duration::from_secs(5)).await
}

tideway_test_util::conformance_tests!(make);

/// Over https: a Worker whose certificate the system does not trust is refused, naming
/// why; trusted through `ca_cert`, the store works, its channel (a WebSocket) included.
#[tokio::test]
async fn the_worker_over_https_with_a_ca_of_its_own() {
    let worker = tokio::task::spawn_blocking(Worker::start_tls)
        .await
        .expect("start the Worker");
    let config = |ca_cert| WorkerConfig {
        url: worker.url(),
        secret: WORKER_SECRET.to_owned(),
        ca_cert,
        history: 100,
        topic_grace: std::time::Duration::ZERO,
        node_ttl: std::time::Duration::from_secs(5),
    };
    let Err(refused) = WorkerStore::connect(config(None)).await else {
        panic!("a certificate of an unknown CA was trusted");
    };
    let why = std::error::Error::source(&refused)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(why.contains("certificate"), "{why}");
    let store = WorkerStore::connect(config(Some(worker.ca())))
        .await
        .expect("connect with the test's CA");
    tideway_test_util::conformance::append_delivers_and_keeps_history(store).await;
}

/// The Worker takes store messages only from nodes that send its secret, and refuses a
/// malformed or oversized message naming what is wrong.
#[tokio::test]
async fn the_worker_refuses_what_no_node_would_send() {
    use tideway_test_util::{HttpReader, request};
    use tokio::io::AsyncWriteExt;
    let worker = tokio::task::spawn_blocking(Worker::start)
        .await
        .expect("start the Worker");
    let client = client_of(&worker);
    let auth = format!("authorization: Bearer {WORKER_SECRET}");
    let send = |path: &str, headers: Vec<String>, body: Vec<u8>| {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        request("POST", path, &headers, &body)
    };
    let health = client.get("/healthz", &[]).await;
    assert_eq!((health.status, health.text()), (200, "ok\n".to_owned()));
    for headers in [
        Vec::new(),
        vec!["authorization: Bearer not-the-secret-at-all".to_owned()],
        vec![format!("authorization: {WORKER_SECRET}")],
    ] {
        let refused = client
            .raw(
                send(
                    "/v1/store/live",
                    headers.clone(),
                    br#"{"topics":["a"]}"#.to_vec(),
                )
                .as_bytes(),
            )
            .await;
        assert_eq!(refused.status, 401, "{headers:?}");
        assert!(
            refused.text().contains("TIDEWAY_DO_SECRET"),
            "{}",
            refused.text()
        );
    }
    let event = r#"{"topics":["a"],"event":{"id":"e","type":null,"data":"x","publishedAt":1}}"#;
    let many = |n: usize| format!(r#"{{"events":[{}]}}"#, vec![event; n].join(","));
    let (at_most, one_past) = (many(1000), many(1001));
    let cases: [(&str, &[u8], u16, &str); 14] = [
        (
            "/v1/store/append-all",
            br#"{"events":[]}"#,
            400,
            r#""events" must be an array of 1 to 1000 events"#,
        ),
        (
            "/v1/store/append-all",
            one_past.as_bytes(),
            400,
            r#""events" must be an array of 1 to 1000 events"#,
        ),
        (
            "/v1/store/append-all",
            br#"{"events":{}}"#,
            400,
            r#""events" must be an array"#,
        ),
        (
            "/v1/store/append-all",
            br#"{"events":[{"topics":["a"],"event":{"id":"e","type":null,"data":"x","publishedAt":1}},7]}"#,
            400,
            r#""events[1]" must be an object"#,
        ),
        (
            "/v1/store/append-all",
            br#"{"events":[{"topics":["a"],"event":{"id":"e","type":null,"data":7,"publishedAt":1}}]}"#,
            400,
            r#""event.data" must be a string"#,
        ),
        ("/v1/store/live", b"not json", 400, "the body must be JSON"),
        ("/v1/store/live", br#"["a"]"#, 400, "a JSON object"),
        (
            "/v1/store/live",
            br#"{"topics":"a"}"#,
            400,
            r#""topics" must be an array"#,
        ),
        (
            "/v1/store/append",
            br#"{"topics":["a"],"event":{"type":null,"data":"x","publishedAt":1}}"#,
            400,
            r#""id" must be a non-empty string"#,
        ),
        (
            "/v1/store/changes",
            br#"{"capacity":10,"graceMs":0,"changes":[]}"#,
            400,
            r#""changes" must be a non-empty array"#,
        ),
        (
            "/v1/store/changes",
            br#"{"capacity":10,"graceMs":0,"changes":[{"op":"drop","id":"c"}]}"#,
            400,
            r#""changes[0].op" must be"#,
        ),
        (
            "/v1/store/changes",
            br#"{"capacity":10,"graceMs":0,"changes":[{"op":"remove","id":"c"},7]}"#,
            400,
            r#""changes[1]" must be an object"#,
        ),
        (
            "/v1/store/changes",
            br#"{"capacity":10,"changes":[{"op":"remove","id":"c"}]}"#,
            400,
            r#""graceMs" must be a non-negative integer"#,
        ),
        ("/v1/store/nowhere", b"{}", 404, "no such route"),
    ];
    // 1,000 events are taken (a topic nobody follows: each answered, appended nowhere).
    let taken = client
        .raw(
            send(
                "/v1/store/append-all",
                vec![auth.clone()],
                at_most.into_bytes(),
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(taken.status, 200, "{}", taken.text());
    assert_eq!(
        taken.json().as_array().map(Vec::len),
        Some(1000),
        "{}",
        taken.text()
    );
    for (path, body, status, says) in cases {
        let answer = client
            .raw(send(path, vec![auth.clone()], body.to_vec()).as_bytes())
            .await;
        assert_eq!(
            answer.status,
            status,
            "{path} {}",
            String::from_utf8_lossy(body)
        );
        assert!(answer.text().contains(says), "{path}: {}", answer.text());
    }
    // One byte past the limit of a store message: announced by its length
    // (refused before the body is read, so none is sent) and sent in chunks
    // (refused once the byte past the limit arrives).
    let limit = 8 * 1024 * 1024;
    let announced = format!(
        "POST /v1/store/live HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{auth}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        limit + 1
    );
    let answer = client.raw(announced.as_bytes()).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(answer.text().contains("at most 8 MiB"), "{}", answer.text());
    let mut stream = tokio::net::TcpStream::connect(client.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/store/live HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{auth}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..8 {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .expect("write chunk size");
        stream.write_all(&chunk).await.expect("write chunk");
        stream.write_all(b"\r\n").await.expect("write chunk end");
    }
    // The byte past the limit, and the end of the body: the Worker may have
    // answered and closed by the time the end is written.
    stream
        .write_all(b"1\r\n \r\n")
        .await
        .expect("write last byte");
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let answer = HttpReader::new(stream).response().await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(answer.text().contains("at most 8 MiB"), "{}", answer.text());
    let channel = client.get("/v1/nodes/n1/channel", &[&auth]).await;
    assert_eq!(channel.status, 426, "a channel is a WebSocket");
}

/// The Worker's view of a node's connections drifts from the node's when a change is
/// lost (its answer, or a close whose change failed): the node's heartbeats notice and
/// put it right — the lost connection registered again, the one the node no longer
/// holds taken out, so its topic does not stay live for nobody.
#[tokio::test]
async fn a_node_puts_the_workers_view_of_its_connections_right() {
    use tideway_core::{
        ConnectionId, ConnectionRecord, NodeRecord, Page, Store, Transport, unix_millis,
    };
    use tideway_protocol::{TopicList, TopicName};
    use tideway_test_util::request;
    // A heartbeat every 200 ms.
    let (store, worker) = started(Settings::default(), std::time::Duration::from_secs(1)).await;
    let node = NodeRecord {
        id: "n1".into(),
        ..NodeRecord::default()
    };
    store.register_node(&node).await.expect("register");
    // Registered means listening: a message routed to the node before its channel opened
    // would have been lost with no hole to show for it.
    assert!(
        store.ready().await,
        "the channel is open once the node is registered"
    );
    let record = |n: u64, topic: &str| ConnectionRecord {
        id: ConnectionId::new("n1", n),
        node: "n1".into(),
        topics: TopicList::parse(topic.as_bytes(), 8).expect("topics"),
        label: None,
        transport: Transport::Sse,
        remote: None,
        connected_at: unix_millis(),
    };
    let (kept, lost, ghost) = (record(1, "kept"), record(2, "lost"), record(3, "ghost"));
    for connection in [&kept, &lost] {
        store
            .add_connection(&std::sync::Arc::new(connection.clone()))
            .await
            .expect("add");
        for topic in &connection.topics {
            store.join(topic, connection).await.expect("join");
        }
    }
    // Behind the node's back: `lost` leaves the Worker, `ghost` (never the node's) joins.
    let client = client_of(&worker);
    let changes = serde_json::json!({
        "capacity": 100,
        "graceMs": 0,
        "changes": [
            {"op": "leave", "topic": "lost", "node": "n1", "connection": lost.id.to_string()},
            {"op": "remove", "id": lost.id.to_string()},
            {"op": "add", "connection": ghost},
            {"op": "join", "topic": "ghost", "node": "n1", "connection": ghost.id.to_string()},
        ],
    })
    .to_string();
    let auth = format!("authorization: Bearer {WORKER_SECRET}");
    let answer = client
        .raw(request("POST", "/v1/store/changes", &[&auth], changes.as_bytes()).as_bytes())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let page = Page {
        page: 1,
        page_size: 100,
        tenant: None,
    };
    let both = TopicList::parse(b"lost,ghost", 8).expect("topics");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut ids: Vec<String> = store
            .connections(page.clone())
            .await
            .expect("connections")
            .items
            .iter()
            .map(|c| c.id.to_string())
            .collect();
        ids.sort();
        let live = store.live(&both).await.expect("live");
        let lost_topic = TopicName::parse("lost").expect("a name");
        if ids == [kept.id.to_string(), lost.id.to_string()] && live == [lost_topic] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not put right: connections {ids:?}, live {live:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The Worker's digest (TypeScript) is the node's (Rust): in step, they agree.
    let beat = serde_json::json!({ "node": node, "ttlMs": 1000, "graceMs": 0 }).to_string();
    let answer = client
        .raw(request("POST", "/v1/store/heartbeat", &[&auth], beat.as_bytes()).as_bytes())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let beat: serde_json::Value = serde_json::from_str(&answer.text()).expect("JSON");
    let ids = [kept.id.as_str(), lost.id.as_str()];
    assert_eq!(
        beat["digest"],
        u64::from(tideway_core::connection_digest(ids))
    );
}
