//! `POST /v1/publish/batch` over real sockets: outcomes per event, order, limits, atomic
//! batches, rate limits inside a batch, `Expect: 100-continue`.

use serde_json::{Value, json};
use tideway_core::CoreConfig;
use tideway_http::{ApiKeys, HttpConfig, KeyRing};
use tideway_store_memory::MemoryConfig;
use tideway_test_util::{API_KEY, Response, TestGateway, request};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn config() -> HttpConfig {
    let keys = ApiKeys::from_json(
        r#"{"keys": [
            {"name": "slow", "key": "slow-secret", "publishRate": {"perSecond": 0.01, "burst": 3}},
            {"name": "billing", "key": "billing-secret", "topics": ["billing:*"]},
            {"name": "reader", "key": "reader-secret", "scopes": ["admin"]}
        ]}"#,
    )
    .expect("a keys file");
    HttpConfig {
        api_keys: KeyRing::new(keys),
        max_body: 64,
        max_batch_body: 8 * 1024,
        ..HttpConfig::default()
    }
}

async fn start() -> TestGateway {
    TestGateway::start_with(config(), MemoryConfig::default(), CoreConfig::default()).await
}

async fn batch(gw: &TestGateway, key: &str, body: &Value) -> Response {
    let auth = format!("authorization: Bearer {key}");
    let text = request(
        "POST",
        "/v1/publish/batch",
        &[&auth, "content-type: application/json"],
        body.to_string().as_bytes(),
    );
    gw.raw(text.as_bytes()).await
}

fn event(topics: &[&str], id: &str, data: &str) -> Value {
    json!({"topics": topics, "id": id, "data": data})
}

#[tokio::test]
async fn each_event_gets_its_own_outcome_and_live_ones_arrive_in_batch_order() {
    let gw = start().await;
    let mut sub = gw.subscribe("/v1/stream?topic=a,b", &[]).await;
    let body = json!({"events": [
        event(&["a"], "e1", "one"),
        event(&["nobody"], "e2", "dropped"),
        event(&["a", "b"], "e3", "both"),
        event(&["bad topic"], "e4", "x"),
        {"topics": ["a"], "id": "e5", "event": "tideway.fake", "data": "x"},
        event(&["a"], "e6", &"x".repeat(65)),
        {"topics": ["b"], "id": "e7", "event": "price", "data": "line one\nline two"},
    ]});
    let reply = batch(&gw, API_KEY, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(
        (&answer["accepted"], &answer["dropped"], &answer["failed"]),
        (&json!(3), &json!(1), &json!(3))
    );
    let results = answer["results"].as_array().expect("results");
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        statuses,
        [
            "accepted", "dropped", "accepted", "error", "error", "error", "accepted"
        ]
    );
    assert_eq!(
        results[2]["topics"],
        json!([{"topic": "a", "seq": 2}, {"topic": "b", "seq": 1}])
    );
    assert_eq!(results[1]["reason"], "no_subscribers");
    assert_eq!(results[3]["error"]["code"], "invalid_topic");
    assert_eq!(results[4]["error"]["code"], "invalid_event");
    assert_eq!(results[5]["error"]["code"], "body_too_large");
    assert_eq!(results[5]["id"], "e6");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let got = sub.next_event().await.expect("an event");
        seen.push(format!(
            "{}:{}",
            got.field("topic").unwrap_or_default(),
            got.id.as_deref().unwrap_or_default()
        ));
        if got.id.as_deref() == Some("e7") {
            assert_eq!(got.event.as_deref(), Some("price"));
            assert_eq!(got.data.as_deref(), Some("line one\nline two"));
        }
    }
    assert_eq!(seen, ["a:e1", "a:e3", "b:e3", "b:e7"]);
}

#[tokio::test]
async fn a_long_batch_to_one_topic_arrives_whole_and_in_order() {
    let gw = start().await;
    let mut sub = gw.subscribe("/v1/stream?topic=t", &[]).await;
    let events: Vec<Value> = (0..200)
        .map(|n| event(&["t"], &format!("n{n}"), "x"))
        .collect();
    let reply = batch(&gw, API_KEY, &json!({ "events": events })).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 200);
    for n in 0..200 {
        let got = sub.next_event().await.expect("an event");
        assert_eq!(got.id, Some(format!("n{n}")));
    }
}

#[tokio::test]
async fn malformed_empty_and_oversize_batches_are_refused_whole() {
    let gw = start().await;
    let _sub = gw.subscribe("/v1/stream?topic=t", &[]).await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"events": []}), 400, "invalid_body"),
        (
            json!({"events": [{"topics": ["t"], "id": "x"}]}),
            400,
            "invalid_body",
        ),
        (
            json!({"events": [event(&["t"], "x", "y")], "extra": 1}),
            400,
            "invalid_body",
        ),
        (json!([event(&["t"], "x", "y")]), 400, "invalid_body"),
        (
            json!({"events": (0..1001).map(|n| json!({"topics": ["t"], "id": n.to_string(), "data": ""})).collect::<Vec<_>>()}),
            413,
            "body_too_large",
        ),
    ];
    for (body, status, code) in cases {
        // The 1,001-event batch is within 8 KiB only once it is small enough: give it room.
        let gw = if body["events"].as_array().is_some_and(|e| e.len() > 1000) {
            let http = HttpConfig {
                max_batch_body: 1 << 20,
                ..config()
            };
            TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await
        } else {
            start().await
        };
        let reply = batch(&gw, API_KEY, &body).await;
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (status, code),
            "{}",
            reply.text()
        );
    }
    // Larger than --max-batch-body (8 KiB here): refused before it is read.
    let events: Vec<Value> = (0..200)
        .map(|n| {
            event(
                &["t"],
                &format!("id-{n}"),
                "0123456789012345678901234567890123456789",
            )
        })
        .collect();
    let reply = batch(&gw, API_KEY, &json!({ "events": events })).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "body_too_large")
    );
    // Not JSON at all.
    let auth = format!("authorization: Bearer {API_KEY}");
    let text = request("POST", "/v1/publish/batch", &[&auth], b"\xff\xfe not json");
    let reply = gw.raw(text.as_bytes()).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "invalid_body")
    );
    // A batch whose bytes are not UTF-8 is refused whole, naming the first bad byte.
    let mut body =
        br#"{"events":[{"topics":["t"],"id":"a","data":"ok"},{"topics":["t"],"id":"b","data":"x"#
            .to_vec();
    let bad = body.len();
    body.extend_from_slice(b"\xc3\x28\"}]}");
    // Written by hand: `request` would make the body valid UTF-8 (lossily).
    let mut raw = format!(
        "POST /v1/publish/batch HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{auth}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let reply = gw.raw(&raw).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "invalid_body"),
        "{}",
        reply.text()
    );
    assert!(
        reply.text().contains(&format!("byte {bad} is not")),
        "{}",
        reply.text()
    );
    // Nothing of any of them was published.
    let first = gw.publish("t", "after", "x").await;
    assert_eq!(first.json()["topics"][0]["seq"], 1, "{}", first.text());
}

#[tokio::test]
async fn an_atomic_batch_publishes_all_or_nothing() {
    let gw = start().await;
    let mut sub = gw.subscribe("/v1/stream?topic=t", &[]).await;
    let body = json!({"atomic": true, "events": [
        event(&["t"], "a1", "x"),
        event(&["bad topic"], "a2", "x"),
        event(&["t"], "a3", "x"),
    ]});
    let reply = batch(&gw, API_KEY, &body).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "invalid_topic")
    );
    let answer = reply.json();
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("event 1 (\"a2\")")),
        "{answer}"
    );
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["skipped", "error", "skipped"]);
    // The same batch without the bad event goes through whole.
    let body =
        json!({"atomic": true, "events": [event(&["t"], "a1", "x"), event(&["t"], "a3", "x")]});
    let reply = batch(&gw, API_KEY, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 2);
    for id in ["a1", "a3"] {
        assert_eq!(
            sub.next_event().await.expect("an event").id.as_deref(),
            Some(id)
        );
    }
}

#[tokio::test]
async fn the_rate_limit_counts_every_event_of_a_batch() {
    let gw = start().await;
    let _sub = gw.subscribe("/v1/stream?topic=t", &[]).await;
    // Burst 3: an atomic batch of 4 can never fit and is refused whole.
    let four: Vec<Value> = (0..4)
        .map(|n| event(&["t"], &format!("r{n}"), "x"))
        .collect();
    let reply = batch(&gw, "slow-secret", &json!({"atomic": true, "events": four})).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (429, "rate_limited")
    );
    // Without `atomic`, the first three go and the rest are refused one by one, in the
    // middle of the batch.
    let reply = batch(&gw, "slow-secret", &json!({"events": four})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(
        (&answer["accepted"], &answer["failed"]),
        (&json!(3), &json!(1))
    );
    assert_eq!(answer["results"][3]["error"]["code"], "rate_limited");
    // The bucket is empty now: an atomic batch of one waits, and says for how long.
    let one = json!({"atomic": true, "events": [event(&["t"], "r9", "x")]});
    let reply = batch(&gw, "slow-secret", &one).await;
    assert_eq!(reply.status, 429);
    assert!(reply.header("retry-after").is_some(), "{:?}", reply.headers);
}

#[tokio::test]
async fn keys_scopes_and_patterns_bound_a_batch_as_a_single_publish() {
    let gw = start().await;
    let _sub = gw
        .subscribe("/v1/stream?topic=billing:eu,orders", &[])
        .await;
    let body =
        json!({"events": [event(&["billing:eu"], "k1", "x"), event(&["orders"], "k2", "x")]});
    let reply = batch(&gw, "billing-secret", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["results"][0]["status"], "accepted");
    assert_eq!(answer["results"][1]["error"]["code"], "topic_not_allowed");
    let reply = batch(&gw, "reader-secret", &body).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (403, "forbidden")
    );
    let reply = batch(&gw, "nobody", &body).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (401, "invalid_api_key")
    );
}

#[tokio::test]
async fn a_batch_sent_after_100_continue_is_published() {
    let gw = start().await;
    let mut sub = gw.subscribe("/v1/stream?topic=t", &[]).await;
    let body = json!({"events": [event(&["t"], "c1", "x")]}).to_string();
    let head = format!(
        "POST /v1/publish/batch HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {API_KEY}\r\ncontent-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let mut continued = [0u8; 25];
    stream
        .read_exact(&mut continued)
        .await
        .expect("100 Continue");
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).await.expect("body");
    let mut rest = String::new();
    stream.read_to_string(&mut rest).await.expect("the answer");
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert_eq!(
        sub.next_event().await.expect("an event").id.as_deref(),
        Some("c1")
    );
}

#[tokio::test]
async fn a_batch_reaching_a_draining_node_publishes_none_of_its_events() {
    let gw = start().await;
    gw.gateway.drain().await;
    let body = json!({"events": [event(&["a"], "d1", "one"), event(&["b"], "d2", "two")]});
    let answer = batch(&gw, API_KEY, &body).await;
    let json = answer.json();
    let codes: Vec<&Value> = json["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| &result["error"]["code"])
        .collect();
    assert_eq!(codes, [&json!("draining"), &json!("draining")], "{json}");
    assert_eq!(json["accepted"], 0, "{json}");
}
