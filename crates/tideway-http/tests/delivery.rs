//! Delivery that loses nothing, over real sockets: WebSocket beside SSE, resume with
//! Last-Event-ID, slow consumers, limits and drain.

use std::time::Duration;

use tideway_core::CoreConfig;
use tideway_http::HttpConfig;
use tideway_store_memory::MemoryConfig;
use tideway_test_util::{API_KEY, TIMEOUT, TestGateway, WsMessage, wait_until};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[tokio::test]
async fn websocket_and_sse_subscribers_of_one_topic_both_get_every_event() {
    let gw = TestGateway::start().await;
    let mut sse = gw.subscribe("/v1/stream?topic=mixed", &[]).await;
    let mut ws = gw.ws("/v1/ws", &["x-sse-topic: mixed"]).await;
    for n in 0..200 {
        let reply = gw
            .publish("mixed", &format!("e{n}"), &format!("body {n}\nline two"))
            .await;
        assert_eq!(reply.status, 202);
    }
    for n in 0..200 {
        let event = sse.next_event().await.expect("an SSE event");
        assert_eq!(event.id, Some(format!("e{n}")));
        let frame = ws.next_json().await;
        assert_eq!(
            frame,
            serde_json::json!({"topic": "mixed", "id": format!("e{n}"), "event": null, "data": format!("body {n}\nline two")})
        );
    }
    let connections = gw.admin("/v1/admin/connections").await.json();
    let transports: Vec<&str> = connections["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["sse", "websocket"]);
}

#[tokio::test]
async fn websocket_refusals_are_plain_http_errors() {
    let gw = TestGateway::start().await;
    let plain = gw.get("/v1/ws?topic=a", &[]).await;
    assert_eq!(
        (plain.status, plain.error_code().as_str()),
        (426, "upgrade_required")
    );
    let refused = gw
        .ws_handshake("/v1/ws?topic=a%20b", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (400, "invalid_topic")
    );
}

#[tokio::test]
async fn sse_resume_with_last_event_id_misses_nothing_across_topics() {
    let gw = TestGateway::start_with(
        HttpConfig::default(),
        MemoryConfig {
            topic_grace: Duration::from_secs(60),
            ..MemoryConfig::default()
        },
        CoreConfig::default(),
    )
    .await;
    let mut sse = gw.subscribe("/v1/stream?topic=orders,alerts", &[]).await;
    gw.publish("orders", "o1", "first order").await;
    gw.publish("alerts", "a1", "first alert").await;
    assert_eq!(sse.next_event().await.unwrap().id.as_deref(), Some("o1"));
    let last = sse.next_event().await.unwrap();
    assert_eq!(last.id.as_deref(), Some("a1"));
    drop(sse);
    wait_until("the connection to close", || async {
        match gw.gateway.open_connections() {
            0 => Ok(()),
            n => Err(format!("{n} open")),
        }
    })
    .await;
    // Published while nobody is connected: the grace keeps both topics and their history.
    for (topic, id) in [
        ("orders", "o2"),
        ("alerts", "a2"),
        ("orders,alerts", "both3"),
    ] {
        assert_eq!(gw.publish(topic, id, id).await.json()["status"], "accepted");
    }
    let mut again = gw
        .subscribe("/v1/stream?topic=orders,alerts", &["last-event-id: a1"])
        .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = again.next_event().await.unwrap();
        seen.push(format!(
            "{}:{}",
            event.field("topic").unwrap(),
            event.id.clone().unwrap()
        ));
    }
    assert_eq!(
        seen,
        ["orders:o2", "alerts:a2", "orders:both3", "alerts:both3"]
    );
    gw.publish("orders", "o4", "live").await;
    assert_eq!(
        again.next_event().await.unwrap().id.as_deref(),
        Some("o4"),
        "then live, no repeats"
    );

    // The query form, for clients that cannot set headers; and over WebSocket.
    let mut by_query = gw
        .subscribe("/v1/stream?topic=orders&lastEventId=o2", &[])
        .await;
    let ids: Vec<String> = [by_query.next_event().await, by_query.next_event().await]
        .into_iter()
        .map(|e| e.unwrap().id.unwrap())
        .collect();
    assert_eq!(ids, ["both3", "o4"]);
    let mut ws = gw.ws("/v1/ws?topic=alerts&lastEventId=a2", &[]).await;
    assert_eq!(ws.next_json().await["id"], "both3");
}

#[tokio::test]
async fn an_unknown_last_event_id_is_told_not_silently_skipped() {
    let gw = TestGateway::start().await;
    let mut sse = gw
        .subscribe("/v1/stream?topic=t", &["last-event-id: long-gone"])
        .await;
    let gap = sse.next_event().await.unwrap();
    assert_eq!(gap.event.as_deref(), Some("tideway.gap"));
    let data: serde_json::Value = serde_json::from_str(gap.data.as_deref().unwrap()).unwrap();
    assert_eq!(data["reason"], "unknown_last_event_id");
    assert_eq!(data["lastEventId"], "long-gone");
    gw.publish("t", "next", "x").await;
    assert_eq!(sse.next_event().await.unwrap().id.as_deref(), Some("next"));

    let mut ws = gw.ws("/v1/ws?topic=t&lastEventId=long-gone", &[]).await;
    let gap = ws.next_json().await;
    assert_eq!(gap["event"], "tideway.gap");
    assert_eq!(gap["topic"], serde_json::Value::Null);

    let bad = gw.get("/v1/stream?topic=t&lastEventId=%0A", &[]).await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_last_event_id")
    );
}

#[tokio::test]
async fn a_stalled_subscriber_is_cut_off_and_closed_while_others_get_everything() {
    let http = HttpConfig {
        write_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let core = CoreConfig {
        queue_capacity: 32,
        ..CoreConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), core).await;
    // The stalled client sends its request and never reads a byte.
    let mut stalled = small_buffer_connection(&gw).await;
    stalled
        .write_all(b"GET /v1/stream?topic=firehose HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    one_connection(&gw).await;
    let mut reader = gw.subscribe("/v1/stream?topic=firehose", &[]).await;
    let mut ws = gw.ws("/v1/ws?topic=firehose", &[]).await;
    let body = "x".repeat(8 * 1024);
    for n in 0..2000 {
        assert_eq!(
            gw.publish("firehose", &format!("e{n}"), &body).await.status,
            202
        );
        assert_eq!(reader.next_event().await.unwrap().id, Some(format!("e{n}")));
        assert_eq!(ws.next_json().await["id"], format!("e{n}"));
    }
    assert_eq!(gw.gateway.stats().slow_consumers_cut(), 1);
    // The server closes the stalled connection: reading it now ends (after whatever the
    // kernel had buffered) instead of waiting forever.
    let mut drained = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(TIMEOUT, stalled.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => drained += n,
            Err(_) => panic!("the stalled connection was not closed ({drained} bytes read)"),
        }
    }
    assert!(
        drained < 2000 * 8 * 1024,
        "it never got everything: {drained} bytes"
    );
    wait_until("the stalled connection to leave the store", || async {
        let total = gw.admin("/v1/admin/connections").await.json()["total"].clone();
        if total == 2 {
            Ok(())
        } else {
            Err(format!("{total} connections"))
        }
    })
    .await;
}

/// A subscriber's writer that had to wait for its socket to drain sends what was queued
/// meanwhile as soon as the socket takes it: the wait for the socket does not swallow the
/// queue's wake-up. (The writer skips asking a body it knows to be waiting for a frame, but
/// only until it awaits anything else.) The heartbeat is an hour away, so a lost wake-up
/// shows as an event that does not arrive within `TIMEOUT` — a bound, not a speed.
#[tokio::test]
async fn events_queued_while_a_write_waits_go_out_once_the_socket_drains() {
    let http = HttpConfig {
        heartbeat: Duration::from_secs(3600),
        write_timeout: Duration::from_secs(120),
        ..HttpConfig::default()
    };
    let core = CoreConfig {
        queue_capacity: 4096,
        ..CoreConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), core).await;
    // No reading until every event is published: the server's send buffer (at most a
    // few MiB) fills, and its writer waits.
    let stream = small_buffer_connection(&gw).await;
    let mut sse = tideway_test_util::Sse::open(stream, "/v1/stream?topic=drains", &[]).await;
    assert_eq!(sse.status, 200);
    one_connection(&gw).await;
    // One at a time, so the writer keeps up (and finds its queue empty) until the socket
    // is full: 12 MiB, more than the kernel buffers on both sides.
    let body = "z".repeat(8 * 1024);
    let events = 1500;
    for n in 0..events {
        assert_eq!(
            gw.publish("drains", &format!("e{n}"), &body).await.status,
            202
        );
    }
    assert_eq!(gw.gateway.stats().slow_consumers_cut(), 0);
    for n in 0..events {
        let event = tokio::time::timeout(TIMEOUT, sse.next_event())
            .await
            .unwrap_or_else(|_| panic!("e{n} did not arrive"))
            .expect("the stream goes on");
        assert_eq!(event.id, Some(format!("e{n}")));
    }
}

/// A connection to `gw` with a 4 KiB receive buffer, which keeps the kernel from soaking up
/// megabytes on behalf of a client that reads slowly or not at all.
async fn small_buffer_connection(gw: &TestGateway) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(gw.addr).await.unwrap()
}

/// Waits until `gw` counts exactly one open connection.
async fn one_connection(gw: &TestGateway) {
    wait_until("one connection to be open", || async {
        match gw.gateway.open_connections() {
            1 => Ok(()),
            n => Err(format!("{n} connections")),
        }
    })
    .await;
}

#[tokio::test]
async fn connection_limits_answer_429_with_retry_after() {
    let core = CoreConfig {
        max_connections: 2,
        ..CoreConfig::default()
    };
    let gw = TestGateway::start_with(HttpConfig::default(), MemoryConfig::default(), core).await;
    let _a = gw.subscribe("/v1/stream?topic=a", &[]).await;
    let _b = gw.ws("/v1/ws?topic=b", &[]).await;
    let refused = gw.get("/v1/stream?topic=c", &[]).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (429, "too_many_connections")
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    let refused = gw
        .ws_handshake("/v1/ws?topic=c", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 429);

    let core = CoreConfig {
        max_connections_per_ip: 1,
        ..CoreConfig::default()
    };
    let gw = TestGateway::start_with(HttpConfig::default(), MemoryConfig::default(), core).await;
    let _a = gw.subscribe("/v1/stream?topic=a", &[]).await;
    let refused = gw.get("/v1/stream?topic=a", &[]).await;
    assert_eq!(refused.status, 429);
    assert!(
        refused
            .text()
            .contains("per-client-IP connection limit of 1"),
        "{}",
        refused.text()
    );
}

#[tokio::test]
async fn oversized_heads_get_431_as_json() {
    let http = HttpConfig {
        max_header_bytes: 4096,
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let fits = format!("x-pad: {}", "p".repeat(3000));
    assert_eq!(gw.get("/healthz", &[&fits]).await.status, 200);
    let over = format!("x-pad: {}", "p".repeat(5000));
    let reply = gw.get("/healthz", &[&over]).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (431, "headers_too_large")
    );
    let reply = gw
        .get(&format!("/v1/stream?topic={}", "t".repeat(5000)), &[])
        .await;
    assert_eq!(reply.status, 431);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let http = HttpConfig {
        header_read_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /v1/stream?topic=a HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(gw.gateway.open_connections(), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let http = HttpConfig {
        header_read_timeout: Duration::from_millis(200),
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reader = tideway_test_util::HttpReader::new(idle);
    assert_eq!(reader.response().await.status, 200);
    // No second request: the connection is closed rather than held open forever.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, reader.stream().read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the idle connection was closed");
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{rest:?}"
    );
}

#[tokio::test]
async fn a_websocket_burst_longer_than_one_batch_arrives_whole_and_in_order() {
    let gw = TestGateway::start().await;
    let mut ws = gw.ws("/v1/ws?topic=burst", &[]).await;
    // 300 events queued at once (in process), several batches' worth: each batch is
    // flushed and the rest waits its turn behind pings and closes, none lost.
    gw.publish_in_process("burst", (0..300).map(|n| format!("b{n}")))
        .await;
    for n in 0..300 {
        assert_eq!(ws.next_json().await["id"], format!("b{n}"));
    }
}

#[tokio::test]
async fn websocket_pings_and_closes_silent_clients() {
    // Long enough that a busy 2-core machine still lets the reading client answer within
    // two intervals; the silent one is closed after two all the same.
    let http = HttpConfig {
        heartbeat: Duration::from_millis(250),
        ..HttpConfig::default()
    };
    let gw = TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    // A client that reads (and so answers pings) stays connected across several intervals.
    let mut alive = gw.ws("/v1/ws?topic=t", &[]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    let mut n = 0;
    while tokio::time::Instant::now() < deadline {
        n += 1;
        let id = format!("tick-{n}");
        gw.publish("t", &id, "x").await;
        assert_eq!(alive.next_json().await["id"], id.as_str());
    }
    // One that reads raw bytes and never answers is closed after two silent intervals.
    let mut silent = gw.ws("/v1/ws?topic=t", &[]).await.into_inner();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the silent WebSocket");
    assert!(
        buf.len() >= 2 && buf[0] == 0x89,
        "it was pinged first: {buf:?}"
    );
}

#[tokio::test]
async fn draining_closes_websockets_with_1001_and_a_reason() {
    let gw = TestGateway::start().await;
    let mut ws = gw.ws("/v1/ws?topic=t", &[]).await;
    gw.publish("t", "before", "x").await;
    gw.shutdown().await.expect("drains");
    assert_eq!(ws.next_json().await["id"], "before");
    let farewell = ws.next_json().await;
    assert_eq!(farewell["event"], "tideway.drain");
    match ws.next_message().await {
        Some(WsMessage::Close(code, reason)) => {
            assert_eq!((code, reason.as_str()), (1001, "drain"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_that_never_sent_a_request_does_not_hold_up_the_drain() {
    // Timeouts far beyond the test's: only closing the silent connection at once lets
    // the drain finish (browsers open such connections ahead of need).
    let gw = TestGateway::start_with(
        HttpConfig {
            header_read_timeout: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(3600),
            ..HttpConfig::default()
        },
        MemoryConfig::default(),
        CoreConfig::default(),
    )
    .await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    // Connections are accepted in order: once a later one is answered, the silent one
    // is being served.
    assert_eq!(gw.get("/healthz", &[]).await.status, 200);
    gw.shutdown().await.expect("drains");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, silent.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the silent connection was closed: {read:?}"
    );
}

#[tokio::test]
async fn publishes_in_flight_when_the_drain_starts_finish() {
    let gw = TestGateway::start().await;
    let mut sse = gw.subscribe("/v1/stream?topic=t", &[]).await;
    // Head sent, body not yet: the publish is in flight when the drain starts. The
    // `100 Continue` proves the gateway routed it and is waiting for the body.
    let head = format!(
        "POST /v1/publish HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\nx-sse-topic: t\r\nx-sse-id: inflight\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"
    );
    let mut publisher = TcpStream::connect(gw.addr).await.unwrap();
    publisher.write_all(head.as_bytes()).await.unwrap();
    let mut continued = [0u8; 25];
    tokio::time::timeout(TIMEOUT, publisher.read_exact(&mut continued))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");
    let gateway = gw.gateway.clone();
    let drained = tokio::spawn(gw.shutdown());
    wait_until("the drain to start", || async {
        if gateway.is_draining() {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    publisher.write_all(b"body").await.unwrap();
    let reply = tideway_test_util::HttpReader::new(publisher)
        .response()
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(
        sse.next_event().await.unwrap().id.as_deref(),
        Some("inflight")
    );
    assert_eq!(
        sse.next_event().await.unwrap().event.as_deref(),
        Some("tideway.drain")
    );
    drained.await.unwrap().expect("drained");
}
