//! The gateway over real sockets: a real server on a free port, raw HTTP bytes in and out.

use std::time::Duration;

use tideway_core::CoreConfig;
use tideway_http::{CorsOrigins, HttpConfig};
use tideway_store_memory::MemoryConfig;
use tideway_test_util::{API_KEY, HttpReader, Sse, TIMEOUT, TestGateway, request, wait_until};
use tokio::{io::AsyncWriteExt, net::TcpStream};

#[tokio::test]
async fn subscribe_by_header_and_by_query_then_receive() {
    let gw = TestGateway::start().await;
    let mut by_header = gw
        .subscribe("/v1/stream", &["x-sse-topic: news, sport"])
        .await;
    assert_eq!(by_header.header("content-type"), Some("text/event-stream"));
    let mut by_query = gw
        .subscribe("/v1/stream?topic=news&topic=weather", &[])
        .await;

    let reply = gw.publish("news", "evt-1", "line one\nline two").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json()["status"], "accepted");
    assert_eq!(reply.json()["topics"][0]["topic"], "news");

    for sse in [&mut by_header, &mut by_query] {
        let event = sse.next_event().await.expect("an event");
        assert_eq!(event.id.as_deref(), Some("evt-1"));
        assert_eq!(event.field("topic"), Some("news"));
        assert_eq!(event.data.as_deref(), Some("line one\nline two"));
        assert_eq!(event.event, None);
    }

    let reply = gw.publish("weather", "evt-2", "rain").await;
    assert_eq!(reply.status, 202);
    let event = by_query.next_event().await.expect("an event");
    assert_eq!(
        (event.id.as_deref(), event.data.as_deref()),
        (Some("evt-2"), Some("rain"))
    );
}

#[tokio::test]
async fn multicast_reaches_every_subscriber_once_and_unicast_only_its_own() {
    let gw = TestGateway::start().await;
    let mut shared: Vec<Sse> = Vec::new();
    for _ in 0..3 {
        shared.push(gw.subscribe("/v1/stream?topic=room", &[]).await);
    }
    let mut alone = gw.subscribe("/v1/stream?topic=private-room", &[]).await;
    for n in 0..5 {
        let reply = gw
            .publish("room", &format!("m{n}"), &format!("hello {n}"))
            .await;
        assert_eq!(reply.status, 202);
    }
    gw.publish("private-room", "only", "just you").await;
    for sse in &mut shared {
        for n in 0..5 {
            let event = sse.next_event().await.expect("an event");
            assert_eq!(event.id, Some(format!("m{n}")), "in order, each once");
        }
    }
    let event = alone.next_event().await.expect("an event");
    assert_eq!(event.id.as_deref(), Some("only"));
}

#[tokio::test]
async fn event_type_and_json_envelope() {
    let gw = TestGateway::start().await;
    let mut plain = gw.subscribe("/v1/stream?topic=a", &[]).await;
    let mut json = gw.subscribe("/v1/stream?topic=a&envelope=json", &[]).await;
    let text = request(
        "POST",
        "/v1/publish",
        &[
            &format!("authorization: Bearer {API_KEY}"),
            "x-sse-topic: a",
            "x-sse-id: 7",
            "x-sse-event: update",
        ],
        b"{\"n\":1}\r\nsecond",
    );
    assert_eq!(gw.raw(text.as_bytes()).await.status, 202);
    let event = plain.next_event().await.expect("an event");
    assert_eq!(event.event.as_deref(), Some("update"));
    assert_eq!(event.data.as_deref(), Some("{\"n\":1}\nsecond"));
    let event = json.next_event().await.expect("an event");
    assert_eq!(event.event.as_deref(), Some("update"));
    let envelope: serde_json::Value = serde_json::from_str(event.data.as_deref().unwrap()).unwrap();
    assert_eq!(
        envelope,
        serde_json::json!({"topic": "a", "id": "7", "event": "update", "data": "{\"n\":1}\r\nsecond"})
    );
    let bad = gw.get("/v1/stream?topic=a&envelope=xml", &[]).await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_parameter")
    );
}

#[tokio::test]
async fn publish_needs_a_valid_key() {
    let gw = TestGateway::start().await;
    let _sub = gw.subscribe("/v1/stream?topic=a", &[]).await;
    let cases = [
        (vec![], "missing_api_key"),
        (vec!["authorization: Bearer wrong"], "invalid_api_key"),
        (vec!["authorization: Basic dGVzdA=="], "invalid_api_key"),
    ];
    for (auth, code) in cases {
        let mut headers = auth.clone();
        headers.extend(["x-sse-topic: a", "x-sse-id: 1"]);
        let reply = gw
            .raw(request("POST", "/v1/publish", &headers, b"x").as_bytes())
            .await;
        assert_eq!(reply.status, 401, "{auth:?}");
        assert_eq!(reply.error_code(), code);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"tideway\"")
        );
    }
    // Either configured key works.
    let headers = [
        "authorization: Bearer test-key-2",
        "x-sse-topic: a",
        "x-sse-id: 1",
    ];
    let reply = gw
        .raw(request("POST", "/v1/publish", &headers, b"x").as_bytes())
        .await;
    assert_eq!(reply.status, 202);
    // The admin API takes the same keys.
    assert_eq!(gw.get("/v1/admin/topics", &[]).await.status, 401);
    assert_eq!(gw.admin("/v1/admin/topics").await.status, 200);
}

#[tokio::test]
async fn bad_topics_and_ids_are_refused_saying_why() {
    let gw = TestGateway::start().await;
    let auth = format!("authorization: Bearer {API_KEY}");
    let cases: [(&[&str], &str, &str); 8] = [
        (&["x-sse-id: 1"], "invalid_topic", "no topic given"),
        (
            &["x-sse-topic: a b", "x-sse-id: 1"],
            "invalid_topic",
            "topic \"a b\": ' ' at byte 1",
        ),
        (
            &["x-sse-topic: a,,b", "x-sse-id: 1"],
            "invalid_topic",
            "entry 2 is empty",
        ),
        (&["x-sse-topic: a"], "missing_id", "x-sse-id"),
        (&["x-sse-topic: a", "x-sse-id: "], "invalid_id", "empty"),
        (
            &["x-sse-topic: a", "x-sse-id: caf\u{e9}"],
            "invalid_id",
            "not printable ASCII",
        ),
        (
            &[
                "x-sse-topic: a",
                "x-sse-id: 1",
                "x-sse-event: tideway.drain",
            ],
            "invalid_event",
            "reserved",
        ),
        (
            &["x-sse-topic: a", "x-sse-id: 1", "x-sse-event: has space"],
            "invalid_event",
            "byte 0x20",
        ),
    ];
    for (headers, code, says) in cases {
        let mut all = vec![auth.as_str()];
        all.extend_from_slice(headers);
        let reply = gw
            .raw(request("POST", "/v1/publish", &all, b"x").as_bytes())
            .await;
        assert_eq!(reply.status, 400, "{headers:?}: {}", reply.text());
        assert_eq!(reply.error_code(), code, "{headers:?}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(says), "{headers:?}: {message}");
    }
    let too_many = (0..65)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let reply = gw.get(&format!("/v1/stream?topic={too_many}"), &[]).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().contains("65 topics given; at most 64"),
        "{}",
        reply.text()
    );
    let reply = gw
        .get("/v1/stream", &["x-sse-topic: ok", "x-sse-id: caf\u{e9}"])
        .await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "invalid_id")
    );
}

#[tokio::test]
async fn a_publish_to_a_topic_nobody_follows_is_dropped_without_reading_the_body() {
    let gw = TestGateway::start().await;
    // Headers that promise a body and ask permission to send it; the body never comes.
    let head = format!(
        "POST /v1/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\nx-sse-topic: nobody-here\r\nx-sse-id: e1\r\ncontent-length: 1048576\r\nexpect: 100-continue\r\n\r\n"
    );
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reader = HttpReader::new(stream);
    // `head` skips a `100 Continue`; read the raw first line ourselves to prove none came.
    let reply = reader.response().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({"status": "dropped", "id": "e1", "reason": "no_subscribers", "topics": []})
    );
    // The unsent body would come before any next request, so the connection closes,
    // and the answer says so.
    assert_eq!(reply.header("connection"), Some("close"));
    // A body larger than the limit is not even looked at on this path.
    assert_eq!(gw.gateway.stats().events_dropped_no_subscribers(), 1);
    assert_eq!(gw.gateway.stats().events_published(), 0);

    // The same request where a subscriber exists gets `100 Continue` and reads the body.
    let _sub = gw.subscribe("/v1/stream?topic=somebody", &[]).await;
    let head = format!(
        "POST /v1/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\nx-sse-topic: somebody\r\nx-sse-id: e2\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
    );
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut continued = Vec::new();
    while !continued.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut byte)
            .await
            .unwrap();
        continued.push(byte[0]);
    }
    assert_eq!(continued, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hi").await.unwrap();
    let reply = HttpReader::new(stream).response().await;
    assert_eq!(reply.status, 202, "{}", reply.text());
}

#[tokio::test]
async fn the_dropped_path_never_sends_100_continue() {
    let gw = TestGateway::start().await;
    let head = format!(
        "POST /v1/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\nx-sse-topic: a,b,c\r\nx-sse-id: e1\r\ncontent-length: 10\r\nexpect: 100-continue\r\n\r\n"
    );
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(
        TIMEOUT,
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        &first, b"HTTP/1.1 200",
        "the final answer comes first, no 100 Continue"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let http = HttpConfig {
        max_body: 16,
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let mut sub = gw.subscribe("/v1/stream?topic=a", &[]).await;
    assert_eq!(gw.publish("a", "fits", &"x".repeat(16)).await.status, 202);
    let reply = gw.publish("a", "over", &"x".repeat(17)).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "body_too_large")
    );
    // A chunked body has no declared length; it is cut off while reading.
    let chunked = format!(
        "POST /v1/publish HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {API_KEY}\r\nx-sse-topic: a\r\nx-sse-id: c\r\ntransfer-encoding: chunked\r\n\r\n10\r\n{}\r\n10\r\n{}\r\n0\r\n\r\n",
        "y".repeat(16),
        "y".repeat(16)
    );
    let reply = gw.raw(chunked.as_bytes()).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "body_too_large")
    );
    let reply = gw
        .raw(
            request(
                "POST",
                "/v1/publish",
                &[
                    &format!("authorization: Bearer {API_KEY}"),
                    "x-sse-topic: a",
                    "x-sse-id: u",
                ],
                b"\xff\xfe",
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "invalid_body")
    );
    // Only the event that fit was delivered.
    let event = sub.next_event().await.unwrap();
    assert_eq!(event.id.as_deref(), Some("fits"));
    assert_eq!(gw.gateway.stats().events_published(), 1);
}

#[tokio::test]
async fn a_topic_whose_last_subscriber_leaves_is_gone_from_every_index() {
    let gw = TestGateway::start().await;
    let first = gw.subscribe("/v1/stream?topic=brief,other", &[]).await;
    let second = gw.subscribe("/v1/stream?topic=brief", &[]).await;
    let topics = gw.admin("/v1/admin/topics").await.json();
    assert_eq!(topics["total"], 2);
    assert_eq!(topics["items"][0]["name"], "brief");
    assert_eq!(topics["items"][0]["connections"], 2);
    drop(first);
    wait_until(
        "`other` to go and `brief` to keep one connection",
        || async {
            let topics = gw.admin("/v1/admin/topics").await.json();
            let ok = topics["total"] == 1 && topics["items"][0]["connections"] == 1;
            if ok { Ok(()) } else { Err(topics.to_string()) }
        },
    )
    .await;
    drop(second);
    wait_until("every index to be empty", || async {
        let topics = gw.admin("/v1/admin/topics").await.json();
        let connections = gw.admin("/v1/admin/connections").await.json();
        let local = gw.gateway.local_topics();
        if topics["total"] == 0 && connections["total"] == 0 && local == 0 {
            Ok(())
        } else {
            Err(format!(
                "topics {topics}, connections {connections}, local topics {local}"
            ))
        }
    })
    .await;
    let reply = gw.publish("brief", "late", "nobody").await;
    assert_eq!(reply.json()["status"], "dropped");
    assert_eq!(gw.admin("/v1/admin/topics/brief/tail").await.status, 404);
}

#[tokio::test]
async fn admin_pages_600_connections_at_most_500_at_a_time() {
    let gw = TestGateway::start().await;
    let mut streams = Vec::new();
    for i in 0..600 {
        let label = format!("x-sse-id: client-{i}");
        streams.push(
            gw.subscribe(&format!("/v1/stream?topic=t{}", i % 7), &[&label])
                .await,
        );
    }
    let first = gw
        .admin("/v1/admin/connections?page=1&pageSize=1000")
        .await
        .json();
    assert_eq!(
        first["pageSize"], 500,
        "a larger request is capped and says so"
    );
    assert_eq!(first["total"], 600);
    assert_eq!(first["items"].as_array().unwrap().len(), 500);
    assert_eq!(first["items"][0]["label"], "client-0");
    assert_eq!(first["items"][0]["transport"], "sse");
    assert_eq!(first["items"][0]["remote"], "127.0.0.1");
    let second = gw
        .admin("/v1/admin/connections?page=2&pageSize=500")
        .await
        .json();
    let items = second["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(items[99]["label"], "client-599");
    let default = gw.admin("/v1/admin/connections").await.json();
    assert_eq!(
        (default["page"].as_u64(), default["pageSize"].as_u64()),
        (Some(1), Some(100))
    );
    let past = gw
        .admin("/v1/admin/connections?page=9&pageSize=100")
        .await
        .json();
    assert_eq!(
        (
            past["items"].as_array().unwrap().len(),
            past["total"].as_u64()
        ),
        (0, Some(600))
    );
    let topics = gw.admin("/v1/admin/topics?pageSize=3&page=3").await.json();
    assert_eq!(topics["total"], 7);
    assert_eq!(topics["items"].as_array().unwrap().len(), 1);
    let nodes = gw.admin("/v1/admin/nodes").await.json();
    assert_eq!(nodes["items"][0]["connections"], 600);
    let bad = gw.admin("/v1/admin/connections?page=0").await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_parameter")
    );
    drop(streams);
}

#[tokio::test]
async fn tail_shows_recent_events_newest_last() {
    let gw = TestGateway::start_with(
        HttpConfig::default(),
        MemoryConfig {
            history: 3,
            ..MemoryConfig::default()
        },
        CoreConfig::default(),
    )
    .await;
    let _sub = gw.subscribe("/v1/stream?topic=logs/app:1", &[]).await;
    for n in 1..=5 {
        gw.publish("logs/app:1", &format!("e{n}"), &format!("line {n}"))
            .await;
    }
    let tail = gw
        .admin("/v1/admin/topics/logs%2Fapp%3A1/tail?limit=2")
        .await
        .json();
    let ids: Vec<&str> = tail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e4", "e5"]);
    assert_eq!(tail["items"][1]["data"], "line 5");
    assert_eq!(tail["items"][1]["seq"], 5);
    // History keeps 3, so asking for more gives 3; an unescaped slash works too.
    let tail = gw
        .admin("/v1/admin/topics/logs/app:1/tail?limit=50")
        .await
        .json();
    assert_eq!(tail["items"].as_array().unwrap().len(), 3);
    let missing = gw.admin("/v1/admin/topics/nope/tail").await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (404, "topic_not_found")
    );
    let bad = gw.admin("/v1/admin/topics/a%20b/tail").await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_topic")
    );
}

#[tokio::test]
async fn idle_streams_get_heartbeats() {
    let http = HttpConfig {
        heartbeat: Duration::from_millis(50),
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let mut sse = gw.subscribe("/v1/stream?topic=quiet", &[]).await;
    for _ in 0..2 {
        let block = sse.next_block().await.expect("a heartbeat");
        assert_eq!(block.comments, ["heartbeat"]);
        assert_eq!(block.data, None);
    }
}

#[tokio::test]
async fn draining_tells_streams_to_reconnect_and_finishes() {
    let gw = TestGateway::start().await;
    let mut sse = gw.subscribe("/v1/stream?topic=a", &[]).await;
    gw.publish("a", "before", "x").await;
    let addr = gw.addr;
    let gateway = gw.gateway.clone();
    gw.shutdown().await.expect("the server drains cleanly");
    assert!(gateway.is_draining());
    let event = sse.next_event().await.expect("the queued event");
    assert_eq!(event.id.as_deref(), Some("before"));
    let farewell = sse.next_event().await.expect("a drain event");
    assert_eq!(farewell.event.as_deref(), Some("tideway.drain"));
    assert!(farewell.retry.is_some());
    let data: serde_json::Value = serde_json::from_str(farewell.data.as_deref().unwrap()).unwrap();
    assert_eq!(data["reason"], "drain");
    assert!(sse.next_block().await.is_none(), "the stream ends");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn operations_routes_and_errors() {
    let gw = TestGateway::start().await;
    assert_eq!(gw.get("/healthz", &[]).await.json()["status"], "ok");
    assert_eq!(gw.get("/readyz", &[]).await.status, 200);
    let _sub = gw.subscribe("/v1/stream?topic=m", &[]).await;
    gw.publish("m", "1", "x").await;
    gw.publish("none", "2", "x").await;
    let _ws = gw.ws("/v1/ws?topic=m", &[]).await;
    gw.get("/v1/admin/topics", &["authorization: Bearer nope"])
        .await;
    gw.get("/v1/admin/topics", &[]).await;
    let metrics = gw.get("/metrics", &[]).await;
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text();
    for line in [
        "tideway_connections{node=\"test-node\",transport=\"sse\"} 1",
        "tideway_connections{node=\"test-node\",transport=\"websocket\"} 1",
        "tideway_events_published_total{node=\"test-node\"} 1",
        "tideway_events_dropped_total{node=\"test-node\",reason=\"no_subscribers\"} 1",
        "tideway_events_dropped_total{node=\"test-node\",reason=\"slow_consumer\"} 0",
        "tideway_events_delivered_total{node=\"test-node\"} 1",
        "tideway_auth_failures_total{node=\"test-node\",code=\"invalid_api_key\"} 1",
        "tideway_auth_failures_total{node=\"test-node\",code=\"missing_api_key\"} 1",
        "tideway_store_errors_total{node=\"test-node\"} 0",
        "tideway_publish_enqueue_seconds_bucket{node=\"test-node\",le=\"+Inf\"} 1",
        "tideway_publish_enqueue_seconds_count{node=\"test-node\"} 1",
        "# TYPE tideway_publish_enqueue_seconds histogram",
        "# TYPE tideway_bytes_out_total counter",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Every sample line parses as `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        assert!(
            series.starts_with("tideway_") && series.ends_with('}'),
            "{line}"
        );
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    let missing = gw.get("/v2/nothing", &[]).await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (404, "not_found")
    );
    let wrong = gw
        .raw(request("DELETE", "/v1/publish", &[], b"").as_bytes())
        .await;
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("POST")));
    assert_eq!(wrong.error_code(), "method_not_allowed");
    let wrong = gw
        .raw(request("POST", "/v1/stream", &[], b"").as_bytes())
        .await;
    assert_eq!(wrong.status, 405);
}

#[tokio::test]
async fn cors_for_browsers() {
    let gw = TestGateway::start().await;
    let preflight = gw
        .raw(
            request(
                "OPTIONS",
                "/v1/stream",
                &[
                    "origin: https://app.example",
                    "access-control-request-headers: x-sse-topic",
                ],
                b"",
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    let allowed = preflight.header("access-control-allow-headers").unwrap();
    for header in ["x-sse-topic", "x-sse-tenant", "last-event-id"] {
        assert!(allowed.contains(header), "{header}: {allowed}");
    }
    let sse = gw
        .subscribe("/v1/stream?topic=a", &["origin: https://app.example"])
        .await;
    assert_eq!(sse.header("access-control-allow-origin"), Some("*"));

    let http = HttpConfig {
        cors: tideway_http::Cors {
            subscribe: CorsOrigins::parse("https://good.example"),
            publish: CorsOrigins::parse("https://publisher.example"),
            admin: CorsOrigins::parse(""),
        },
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let good = gw
        .subscribe("/v1/stream?topic=a", &["origin: https://good.example"])
        .await;
    assert_eq!(
        good.header("access-control-allow-origin"),
        Some("https://good.example")
    );
    let evil = gw
        .subscribe("/v1/stream?topic=a", &["origin: https://evil.example"])
        .await;
    assert_eq!(evil.header("access-control-allow-origin"), None);
    assert_eq!(
        evil.header("vary"),
        Some("Origin"),
        "a refused origin's answer varies by Origin too"
    );
}

#[tokio::test]
async fn a_publish_body_that_stalls_is_refused_in_time() {
    let http = HttpConfig {
        header_read_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let _sub = gw.subscribe("/v1/stream?topic=slow", &[]).await;
    let head = format!(
        "POST /v1/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\nx-sse-topic: slow\r\nx-sse-id: s1\r\ncontent-length: 10\r\n\r\nab"
    );
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let reply = HttpReader::new(stream).response().await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (408, "body_timeout")
    );
    assert!(
        reply.text().contains("--header-read-timeout"),
        "{}",
        reply.text()
    );
    assert_eq!(gw.gateway.stats().events_published(), 0);
}

#[tokio::test]
async fn a_websocket_from_a_page_of_another_origin_is_refused() {
    let http = HttpConfig {
        cors: tideway_http::Cors {
            subscribe: CorsOrigins::parse("https://good.example"),
            ..tideway_http::Cors::default()
        },
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let evil = gw
        .ws_handshake("/v1/ws?topic=a", &["origin: https://evil.example"])
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (evil.status, evil.error_code().as_str()),
        (403, "origin_not_allowed")
    );
    assert!(
        evil.text().contains("https://evil.example"),
        "{}",
        evil.text()
    );
    let garbled = gw
        .ws_handshake("/v1/ws?topic=a", &["origin: https://good.example\u{ff}"])
        .await
        .err()
        .expect("refused");
    assert_eq!(garbled.status, 403);
    // The allowed origin, and a client that is no browser page (no Origin), get in.
    let _good = gw
        .ws("/v1/ws?topic=a", &["origin: https://good.example"])
        .await;
    let _server = gw.ws("/v1/ws?topic=a", &[]).await;
    // Under the default (any origin) a page of any site may subscribe, as with SSE.
    let open = TestGateway::start().await;
    let _any = open
        .ws("/v1/ws?topic=a", &["origin: https://evil.example"])
        .await;
}

#[tokio::test]
async fn the_admin_ui_is_served_from_the_binary() {
    let gw = TestGateway::start().await;
    let redirect = gw.get("/admin", &[]).await;
    assert_eq!(
        (redirect.status, redirect.header("location")),
        (308, Some("admin/")),
        "relative, so it works under a path prefix"
    );
    let index = gw.get("/admin/", &[]).await;
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = index.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(index.header("x-frame-options"), Some("DENY"));
    assert!(
        index.text().contains("<div id=\"root\">"),
        "{}",
        index.text()
    );
    // The app's script, named by the build, is served with a long cache life.
    let text = index.text();
    let script = text
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("index.html names its script");
    // Relative to the app (`./assets/…`), so the app works under a path prefix.
    let script = format!(
        "/admin/{}",
        script.strip_prefix("./").expect("a relative script URL")
    );
    let asset = gw.get(&script, &[]).await;
    assert_eq!(asset.status, 200, "{script}");
    assert_eq!(
        asset.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(asset.header("cache-control").unwrap().contains("immutable"));
    // Client-side routes get the app.
    assert!(
        gw.get("/admin/some/view", &[])
            .await
            .text()
            .contains("<div id=\"root\">")
    );
}

#[tokio::test]
async fn the_admin_tail_follows_new_events_live() {
    let gw = TestGateway::start().await;
    let _subscriber = gw.subscribe("/v1/stream?topic=watched", &[]).await;
    gw.publish("watched", "before", "old news").await;
    let auth = format!("authorization: Bearer {API_KEY}");
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let mut follow = tideway_test_util::Sse::open(
        stream,
        "/v1/admin/topics/watched/tail?follow=1&limit=10",
        &[&auth],
    )
    .await;
    assert_eq!(follow.status, 200);
    let state = follow.next_event().await.unwrap();
    assert_eq!(state.event.as_deref(), Some("tideway.topic_state"));
    assert_eq!(state.data.as_deref(), Some(r#"{"live":true}"#));
    let old = follow.next_event().await.unwrap();
    let old: serde_json::Value = serde_json::from_str(old.data.as_deref().unwrap()).unwrap();
    assert_eq!(old["id"], "before");
    gw.publish("watched", "after", "fresh news").await;
    let fresh = follow.next_event().await.unwrap();
    let fresh: serde_json::Value = serde_json::from_str(fresh.data.as_deref().unwrap()).unwrap();
    assert_eq!(
        (fresh["id"].as_str(), fresh["data"].as_str()),
        (Some("after"), Some("fresh news"))
    );
    // Following does not make a topic live, and needs the key.
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let mut idle =
        tideway_test_util::Sse::open(stream, "/v1/admin/topics/quiet/tail?follow=1", &[&auth])
            .await;
    let state = idle.next_event().await.unwrap();
    assert_eq!(state.data.as_deref(), Some(r#"{"live":false}"#));
    assert_eq!(
        gw.publish("quiet", "x", "y").await.json()["status"],
        "dropped"
    );
    assert_eq!(
        gw.get("/v1/admin/topics/quiet/tail?follow=1", &[])
            .await
            .status,
        401
    );
    let bad = gw.admin("/v1/admin/topics/quiet/tail?follow=maybe").await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_parameter")
    );
}

#[tokio::test]
async fn an_admin_follower_far_behind_is_told_and_a_key_follows_at_most_eight_tails() {
    let memory = MemoryConfig {
        history: 5000,
        ..MemoryConfig::default()
    };
    // The subscriber that keeps the topic live reads nothing: it must not be cut off.
    let core = CoreConfig {
        queue_capacity: 8192,
        ..CoreConfig::default()
    };
    let gw = TestGateway::start_with(HttpConfig::default(), memory, core).await;
    let _subscriber = gw.subscribe("/v1/stream?topic=busy", &[]).await;
    let auth = format!("authorization: Bearer {API_KEY}");
    let mut follow = tideway_test_util::Sse::open(
        TcpStream::connect(gw.addr).await.unwrap(),
        "/v1/admin/topics/busy/tail?follow=1&limit=1",
        &[&auth],
    )
    .await;
    let state = follow.next_event().await.unwrap();
    assert_eq!(state.event.as_deref(), Some("tideway.topic_state"));
    gw.publish("busy", "first", "x").await;
    let first = follow.next_event().await.unwrap();
    assert!(first.data.unwrap().contains("\"first\""));
    // 3,000 events in a burst (in process: microseconds each) shorter than a poll: at
    // most one poll falls inside it, so one read at least is more than 1,000 behind and
    // the follower is told what it missed instead of skipping it.
    gw.publish_in_process("busy", (0..3000).map(|n| format!("burst-{n}")))
        .await;
    let gap = follow.next_event().await.unwrap();
    assert_eq!(gap.event.as_deref(), Some("tideway.gap"), "{gap:?}");
    assert!(gap.data.unwrap().contains("follower_behind"));
    let next = follow.next_event().await.unwrap();
    assert!(
        next.data.unwrap().contains("burst-"),
        "the newest events follow"
    );

    // Seven more followers of this key are let in; a ninth is not.
    let mut open = Vec::new();
    for _ in 0..7 {
        let sse = tideway_test_util::Sse::open(
            TcpStream::connect(gw.addr).await.unwrap(),
            "/v1/admin/topics/busy/tail?follow=1",
            &[&auth],
        )
        .await;
        assert_eq!(sse.status, 200);
        open.push(sse);
    }
    let mut ninth = tideway_test_util::Sse::open(
        TcpStream::connect(gw.addr).await.unwrap(),
        "/v1/admin/topics/busy/tail?follow=1",
        &[&auth],
    )
    .await;
    assert_eq!(ninth.status, 429);
    assert!(ninth.error_body().await.contains("too_many_followers"));
    // Another key is counted on its own.
    let other = tideway_test_util::Sse::open(
        TcpStream::connect(gw.addr).await.unwrap(),
        "/v1/admin/topics/busy/tail?follow=1",
        &["authorization: Bearer test-key-2"],
    )
    .await;
    assert_eq!(other.status, 200);
    // A follower that leaves frees its place.
    drop(open.pop());
    drop(follow);
    wait_until("a closed follower's place to free", || async {
        let sse = tideway_test_util::Sse::open(
            TcpStream::connect(gw.addr).await.unwrap(),
            "/v1/admin/topics/busy/tail?follow=1",
            &[&auth],
        )
        .await;
        if sse.status == 200 {
            Ok(())
        } else {
            Err(sse.status.to_string())
        }
    })
    .await;
}

fn scoped_gateway_config() -> HttpConfig {
    let keys = tideway_http::ApiKeys::from_json(
        r#"{"keys": [
            {"name": "logs-writer", "key": "logs-secret", "scopes": ["publish"], "topics": ["logs:*"]},
            {"name": "ops", "key": "ops-secret", "scopes": ["admin"]},
            {"name": "billing-ops", "key": "billing-ops-secret", "scopes": ["admin"], "topics": ["billing:*"]},
            {"name": "slow", "key": "slow-secret", "scopes": ["publish"], "publishRate": {"perSecond": 0.2, "burst": 2}}
        ]}"#,
    )
    .unwrap();
    HttpConfig {
        api_keys: tideway_http::KeyRing::new(keys),
        ..HttpConfig::default()
    }
}

async fn publish_as(gw: &TestGateway, key: &str, topic: &str) -> tideway_test_util::Response {
    let headers = [
        format!("authorization: Bearer {key}"),
        format!("x-sse-topic: {topic}"),
        "x-sse-id: 1".to_owned(),
    ];
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    gw.raw(request("POST", "/v1/publish", &headers, b"x").as_bytes())
        .await
}

#[tokio::test]
async fn an_admin_key_bound_to_topics_reads_only_those() {
    let gw = TestGateway::start_with(
        scoped_gateway_config(),
        MemoryConfig::default(),
        CoreConfig::default(),
    )
    .await;
    let _inside = gw.subscribe("/v1/stream?topic=billing:1", &[]).await;
    let _outside = gw.subscribe("/v1/stream?topic=hr:salaries", &[]).await;
    let _mixed = gw
        .subscribe("/v1/stream?topic=billing:2,hr:salaries", &[])
        .await;
    let as_billing = ["authorization: Bearer billing-ops-secret"];
    let topics = gw.get("/v1/admin/topics", &as_billing).await.json();
    let names: Vec<&str> = topics["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing:1", "billing:2"], "{topics}");
    assert_eq!(topics["total"], 2);
    let page = gw
        .get("/v1/admin/topics?page=2&pageSize=1", &as_billing)
        .await
        .json();
    assert_eq!(
        (page["items"][0]["name"].as_str(), page["total"].as_u64()),
        (Some("billing:2"), Some(2))
    );
    // Only the connection all of whose topics it may read: not one that would tell it
    // that someone follows hr:salaries.
    let connections = gw.get("/v1/admin/connections", &as_billing).await.json();
    assert_eq!(connections["total"], 1, "{connections}");
    assert_eq!(
        connections["items"][0]["topics"],
        serde_json::json!(["billing:1"])
    );
    let tail = gw
        .get("/v1/admin/topics/hr:salaries/tail", &as_billing)
        .await;
    assert_eq!(
        (tail.status, tail.error_code().as_str()),
        (403, "topic_not_allowed")
    );
    assert_eq!(
        gw.get("/v1/admin/topics/billing:1/tail", &as_billing)
            .await
            .status,
        200
    );
    let nodes = gw.get("/v1/admin/nodes", &as_billing).await;
    assert_eq!(
        (nodes.status, nodes.error_code().as_str()),
        (403, "forbidden")
    );
    // A key of the whole gateway still reads everything.
    let all = gw
        .get(
            "/v1/admin/connections",
            &["authorization: Bearer ops-secret"],
        )
        .await
        .json();
    assert_eq!(all["total"], 3);
    assert_eq!(
        gw.get("/v1/admin/nodes", &["authorization: Bearer ops-secret"])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn scoped_keys_reach_only_their_scopes_and_topics() {
    let gw = TestGateway::start_with(
        scoped_gateway_config(),
        MemoryConfig::default(),
        CoreConfig::default(),
    )
    .await;
    let _sub = gw.subscribe("/v1/stream?topic=logs:app,metrics", &[]).await;
    assert_eq!(publish_as(&gw, "logs-secret", "logs:app").await.status, 202);
    let refused = publish_as(&gw, "logs-secret", "metrics").await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (403, "topic_not_allowed")
    );
    assert!(
        refused.text().contains("limited to logs:*"),
        "{}",
        refused.text()
    );
    // One forbidden topic refuses the whole publish.
    assert_eq!(
        publish_as(&gw, "logs-secret", "logs:app,metrics")
            .await
            .status,
        403
    );
    let admin = gw
        .get("/v1/admin/topics", &["authorization: Bearer logs-secret"])
        .await;
    assert_eq!(
        (admin.status, admin.error_code().as_str()),
        (403, "forbidden")
    );
    assert_eq!(
        gw.get("/v1/admin/topics", &["authorization: Bearer ops-secret"])
            .await
            .status,
        200
    );
    let publish = publish_as(&gw, "ops-secret", "metrics").await;
    assert_eq!(
        (publish.status, publish.error_code().as_str()),
        (403, "forbidden")
    );
    // Full-access keys keep working beside scoped ones.
    assert_eq!(publish_as(&gw, API_KEY, "metrics").await.status, 202);
}

#[tokio::test]
async fn a_key_over_its_publish_rate_gets_429_with_retry_after() {
    let gw = TestGateway::start_with(
        scoped_gateway_config(),
        MemoryConfig::default(),
        CoreConfig::default(),
    )
    .await;
    // Dropped publishes count too: the limit protects the gateway, not only subscribers.
    assert_eq!(publish_as(&gw, "slow-secret", "anything").await.status, 200);
    assert_eq!(publish_as(&gw, "slow-secret", "anything").await.status, 200);
    let limited = publish_as(&gw, "slow-secret", "anything").await;
    assert_eq!(
        (limited.status, limited.error_code().as_str()),
        (429, "rate_limited")
    );
    assert_eq!(limited.header("retry-after"), Some("5"));
    // Other keys are not held back.
    assert_eq!(publish_as(&gw, API_KEY, "anything").await.status, 200);
}

#[tokio::test]
async fn keys_replaced_while_running_take_effect_at_once() {
    let http = scoped_gateway_config();
    let ring = http.api_keys.clone();
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    assert_eq!(
        gw.get("/v1/admin/topics", &["authorization: Bearer ops-secret"])
            .await
            .status,
        200
    );
    ring.replace(tideway_http::ApiKeys::parse("new-key"));
    let removed = gw
        .get("/v1/admin/topics", &["authorization: Bearer ops-secret"])
        .await;
    assert_eq!(
        (removed.status, removed.error_code().as_str()),
        (401, "invalid_api_key")
    );
    assert_eq!(
        gw.get("/v1/admin/topics", &["authorization: Bearer new-key"])
            .await
            .status,
        200
    );
}
