//! One edge policy for both paths: a connection whose first bytes are exactly a bodiless
//! `GET /v1/stream` head, and the plain `Content-Length` publishes of a kept-alive
//! publisher, are served without hyper (`direct`), anything else by hyper. Every request
//! here goes, byte for byte, to a gateway with the direct path and to one without it, and
//! the two answers must be the same: status, headers (but `date` and the framing, which
//! differ by design: the direct path closes the connection after a stream, hyper keeps it)
//! and body (de-chunked; for a stream, what it sends at once).

use std::time::Duration;

use tideway_core::CoreConfig;
use tideway_http::{CorsOrigins, HttpConfig, TokenConfig};
use tideway_store_memory::MemoryConfig;
use tideway_test_util::{API_KEY, HttpReader, TestGateway};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SECRET: &[u8] = b"edge-test-token-secret-of-32-bytes!";

/// A head this small stays within what the direct path peeks at (4 KiB), so its size
/// check is the one that answers.
const MAX_HEAD: usize = 1024;

/// A body larger than this is refused; one just over it still fits what the direct path
/// reads of a publish (16 KiB), so its answer is the handler's, on both paths.
const MAX_BODY: usize = 512;

fn config(direct: bool) -> HttpConfig {
    let mut config = HttpConfig {
        max_header_bytes: MAX_HEAD,
        max_topics: 4,
        max_body: MAX_BODY,
        tokens: TokenConfig {
            secret: SECRET.to_vec(),
            ..TokenConfig::default()
        },
        direct,
        ..HttpConfig::default()
    };
    config.cors.subscribe = CorsOrigins::parse("https://good.example");
    config.cors.publish = CorsOrigins::parse("https://good.example");
    config
}

/// The two gateways: with the direct path, and without it.
async fn pair() -> (TestGateway, TestGateway) {
    let start = |direct| {
        TestGateway::start_with(
            config(direct),
            MemoryConfig::default(),
            CoreConfig::default(),
        )
    };
    (start(true).await, start(false).await)
}

/// What a client saw of one answer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    /// The final status.
    status: u16,
    /// Whether an interim `100 Continue` came first.
    continued: bool,
    /// Sorted, without `date`, `connection` and `transfer-encoding`.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Whether the head said `connection: close` (the direct path always does).
    closes: bool,
}

impl Answer {
    /// An interim `100 Continue` and no final answer after it.
    fn continued_only() -> Self {
        Self {
            status: 100,
            continued: true,
            headers: Vec::new(),
            body: Vec::new(),
            closes: false,
        }
    }
}

/// Sends `bytes` (then half-closes, if `eof`) and reads what comes back: `None` if the
/// connection closed with no answer. Reading stops at the end of a whole body, at the
/// connection's end, or once a stream is quiet for a moment.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8], eof: bool) -> Option<Answer> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    if eof {
        let _ = stream.shutdown().await;
    }
    let mut buf = Vec::new();
    let mut continued = false;
    // An interim `100 Continue` is noted and read past: the answer is the final one (whose
    // `Date` is left out of the comparison like any other's).
    let (head, status, mut rest) = loop {
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut more = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut more)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&more[..n]),
                _ if continued => return Some(Answer::continued_only()),
                _ => return None,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let rest = buf[head_end + 4..].to_vec();
        let status: u16 = head
            .split("\r\n")
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        if status == 100 && !continued {
            continued = true;
            buf = rest;
            continue;
        }
        break (head, status, rest);
    };
    let mut lines = head.split("\r\n");
    lines.next();
    let all: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| all.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let chunked = find("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let length = find("content-length").and_then(|v| v.parse::<usize>().ok());
    let closes = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    // The body: a length is read whole; a stream until it ends or is quiet.
    loop {
        if length.is_some_and(|length| rest.len() >= length) {
            rest.truncate(length.unwrap_or_default());
            break;
        }
        let wait = if chunked {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        let mut more = [0u8; 4096];
        match tokio::time::timeout(wait, stream.read(&mut more)).await {
            Ok(Ok(n)) if n > 0 => rest.extend_from_slice(&more[..n]),
            _ => break,
        }
    }
    // A stream's comments (the hello names the node and the connection's number, which
    // differ between two gateways) carry nothing a client reads.
    let body = if chunked {
        let data = dechunk(&rest);
        let text = String::from_utf8_lossy(&data).into_owned();
        let kept: Vec<&str> = text.split('\n').filter(|l| !l.starts_with(':')).collect();
        kept.join("\n").into_bytes()
    } else {
        rest
    };
    let mut headers: Vec<(String, String)> = all
        .into_iter()
        .filter(|(n, _)| !matches!(n.as_str(), "date" | "connection" | "transfer-encoding"))
        .collect();
    headers.sort();
    Some(Answer {
        status,
        continued,
        headers,
        body,
        closes,
    })
}

/// The data of a chunked body, as far as it is whole.
fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") {
        let Ok(size) = usize::from_str_radix(&String::from_utf8_lossy(&bytes[..end]), 16) else {
            break;
        };
        let start = end + 2;
        if size == 0 || bytes.len() < start + size {
            break;
        }
        data.extend_from_slice(&bytes[start..start + size]);
        bytes = &bytes[(start + size + 2).min(bytes.len())..];
    }
    data
}

/// Sends `bytes` to both gateways and asserts the same answer; returns whether there was
/// one and the direct path served it (it closed the connection where hyper kept it).
async fn same(pair: &(TestGateway, TestGateway), bytes: &[u8], eof: bool) -> (bool, bool) {
    let direct = exchange(pair.0.addr, bytes, eof).await;
    let hyper = exchange(pair.1.addr, bytes, eof).await;
    assert_eq!(
        direct
            .as_ref()
            .map(|a| (a.status, a.continued, &a.headers, &a.body)),
        hyper
            .as_ref()
            .map(|a| (a.status, a.continued, &a.headers, &a.body)),
        "the two paths answered {:?} differently",
        String::from_utf8_lossy(bytes)
    );
    match (direct, hyper) {
        (Some(direct), Some(hyper)) => (true, direct.closes && !hyper.closes),
        _ => (false, false),
    }
}

/// A `GET` head as a browser's `EventSource` sends it: kept alive, no body.
fn get(path: &str, headers: &[&str]) -> Vec<u8> {
    let mut text = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

#[tokio::test]
async fn the_subscribe_suite_answers_alike_on_both_paths() {
    let gateways = pair().await;
    // A subscriber keeps topic `a` alive, so a resume finds its history.
    let _keeper = gateways.0.subscribe("/v1/stream?topic=a", &[]).await;
    let _keeper_b = gateways.1.subscribe("/v1/stream?topic=a", &[]).await;
    for gateway in [&gateways.0, &gateways.1] {
        assert_eq!(gateway.publish("a", "e1", "one").await.status, 202);
        assert_eq!(gateway.publish("a", "e2", "two").await.status, 202);
    }
    let long = format!("x-pad: {}", "p".repeat(MAX_HEAD));
    // (request, whether the direct path takes it)
    let cases: Vec<(Vec<u8>, bool)> = vec![
        (get("/v1/stream?topic=a", &[]), true),
        (get("/v1/stream", &["x-sse-topic: a, b"]), true),
        (get("/v1/stream?topic=a&envelope=json", &[]), true),
        (get("/v1/stream?topic=a", &["last-event-id: e1"]), true),
        (get("/v1/stream?topic=a&lastEventId=e1", &[]), true),
        (get("/v1/stream?topic=a", &["last-event-id: never"]), true),
        (get("/v1/stream?topic=a", &["x-sse-id: my-label"]), true),
        (
            get("/v1/stream?topic=a", &["origin: https://good.example"]),
            true,
        ),
        (
            get("/v1/stream?topic=a", &["origin: https://evil.example"]),
            true,
        ),
        (get("/v1/stream?topic=a", &["content-length: 0"]), true),
        (get("/v1/stream", &[]), true),
        (get("/v1/stream?topic=bad%20topic", &[]), true),
        (get("/v1/stream?topic=a,b,c,d,e", &[]), true),
        (get("/v1/stream?topic=private:x", &[]), true),
        (get("/v1/stream?topic=a&tenant=acme", &[]), true),
        (
            get("/v1/stream?topic=a", &["authorization: Bearer not-a-token"]),
            true,
        ),
        (get("/v1/stream?topic=a", &[&long]), true),
        // Left to hyper: a body, conflicting or doubled lengths, pipelined bytes.
        (
            get(
                "/v1/stream?topic=a",
                &["content-length: 0", "content-length: 5"],
            ),
            false,
        ),
        (
            get(
                "/v1/stream?topic=a",
                &["content-length: 0", "content-length: 0"],
            ),
            false,
        ),
        (get("/v1/stream?topic=a", &["content-length: 3"]), false),
        (
            [get("/v1/stream?topic=a", &[]), get("/healthz", &[])].concat(),
            false,
        ),
        (
            get("/v1/stream?topic=a", &["transfer-encoding: chunked"]),
            false,
        ),
        (get("/v1/stream?topic=a", &["expect: 100-continue"]), false),
    ];
    for (bytes, direct) in &cases {
        let (answered, served_directly) = same(&gateways, bytes, false).await;
        let text = String::from_utf8_lossy(bytes);
        assert!(answered, "no answer to {text:?}");
        assert_eq!(served_directly, *direct, "which path served {text:?}");
    }
    // The ones that must be refused are.
    let status = |bytes: &[u8]| {
        let bytes = bytes.to_vec();
        let addr = gateways.0.addr;
        async move { exchange(addr, &bytes, false).await.map(|a| a.status) }
    };
    assert_eq!(
        status(&get("/v1/stream?topic=a", &[&long])).await,
        Some(431)
    );
    assert_eq!(
        status(&get(
            "/v1/stream?topic=a",
            &["content-length: 0", "content-length: 5"]
        ))
        .await,
        Some(400)
    );
}

/// A `POST /v1/publish` with `headers` (each `name: value`; the test key unless one is
/// given) and `body` with its `Content-Length`, kept alive.
fn post(path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut text = format!("POST {path} HTTP/1.1\r\nhost: localhost\r\n");
    if !headers.iter().any(|h| h.starts_with("authorization")) {
        text.push_str(&format!("authorization: Bearer {API_KEY}\r\n"));
    }
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// How many publishes `gateway` served on the direct path, from its `/metrics`.
async fn served_directly(gateway: &TestGateway) -> u64 {
    let metrics = gateway.get("/metrics", &[]).await.text();
    metrics
        .lines()
        .find(|line| {
            line.starts_with("tideway_direct_requests_total{")
                && line.contains("route=\"/v1/publish\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no direct publish count in {metrics}"))
}

#[tokio::test]
async fn the_publish_suite_answers_alike_on_both_paths() {
    let gateways = pair().await;
    let _keeper = gateways.0.subscribe("/v1/stream?topic=a", &[]).await;
    let _keeper_b = gateways.1.subscribe("/v1/stream?topic=a", &[]).await;
    let long = format!("x-pad: {}", "p".repeat(MAX_HEAD));
    let big = vec![b'x'; MAX_BODY + 1];
    // (request, whether the direct path takes it)
    let cases: Vec<(Vec<u8>, bool)> = vec![
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p1"], b"one"), true),
        (post("/v1/publish", &["x-sse-topic: a, b", "x-sse-id: p2", "x-sse-event: note"], b"two"), true),
        // Again: the id was seen, nothing is published twice.
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p1"], b"one"), true),
        (post("/v1/publish", &["x-sse-topic: nobody", "x-sse-id: p3"], b"x"), true),
        (post("/v1/publish?topic=a", &["x-sse-id: p4"], b"x"), true),
        (post("/v1/publish", &["x-sse-topic: a"], b"no id"), true),
        (post("/v1/publish", &["x-sse-topic: a", &format!("x-sse-id: {}", "i".repeat(300))], b"x"), true),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p5", "x-sse-event: tideway.fake"], b"x"), true),
        (post("/v1/publish", &["x-sse-topic: bad topic!", "x-sse-id: p6"], b"x"), true),
        (post("/v1/publish", &["x-sse-topic: a,b,c,d,e", "x-sse-id: p7"], b"x"), true),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p8"], b"\xff\xfe"), true),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p9"], b""), true),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p10"], &big), true),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p11", &long], b"x"), true),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p12", "authorization: Bearer wrong"], b"x"), true),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p13", "origin: https://good.example"], b"x"), true),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p14", "origin: https://evil.example"], b"x"), true),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: p15", "connection: close"], b"x"), true),
        (
            post(
                "/v1/publish",
                &["x-sse-topic: a", "x-sse-id: p16", "connection: keep-alive, upgrade"],
                b"x",
            ),
            true,
        ),
        // Left to hyper: a body framed otherwise, a doubled length, a wait for
        // `100 Continue`, another version or route.
        (
            b"POST /v1/publish HTTP/1.1\r\nauthorization: Bearer test-key-1\r\nx-sse-topic: a\r\nx-sse-id: h1\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n".to_vec(),
            false,
        ),
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: h2", "content-length: 1"], b"x"), false),
        (post("/v1/publish", &["x-sse-topic: nobody", "x-sse-id: h3", "expect: 100-continue"], b""), false),
        // A live topic: `100 Continue`, then the final answer (seconds apart on a slow
        // machine; its `Date` is not compared).
        (post("/v1/publish", &["x-sse-topic: a", "x-sse-id: h3b", "expect: 100-continue"], b"hello"), false),
        (
            b"POST /v1/publish HTTP/1.0\r\nauthorization: Bearer test-key-1\r\nx-sse-topic: a\r\nx-sse-id: h4\r\ncontent-length: 1\r\n\r\nx".to_vec(),
            false,
        ),
        (post("/v1/publish/batch", &[], br#"{"events":[{"topics":["a"],"id":"h5","data":"x"}]}"#), false),
    ];
    for (bytes, direct) in &cases {
        let before = served_directly(&gateways.0).await;
        let (answered, _) = same(&gateways, bytes, false).await;
        let text = String::from_utf8_lossy(bytes);
        assert!(answered, "no answer to {text:?}");
        let taken = served_directly(&gateways.0).await - before;
        assert_eq!(taken, u64::from(*direct), "which path served {text:?}");
    }
    assert_eq!(
        served_directly(&gateways.1).await,
        0,
        "the other gateway has no direct path"
    );
}

/// Reads an answer that accepted a publish and kept the connection.
async fn accepted(publisher: &mut HttpReader) {
    let answer = publisher.response().await;
    assert_eq!(answer.status, 202, "{}", answer.text());
    assert!(answer.header("connection").is_none(), "kept alive");
}

/// How long until the peer closes `stream` (within ten seconds; anything it sends is read
/// and dropped).
async fn closed_after(stream: &mut TcpStream) -> Duration {
    let started = tokio::time::Instant::now();
    let mut sink = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n) = stream.read(&mut sink).await
            && n > 0
        {}
    })
    .await;
    assert!(closed.is_ok(), "the connection was closed");
    started.elapsed()
}

#[tokio::test]
async fn a_kept_alive_publisher_is_served_directly_until_it_sends_something_else() {
    let gateway =
        TestGateway::start_with(config(true), MemoryConfig::default(), CoreConfig::default()).await;
    let mut sse = gateway.subscribe("/v1/stream?topic=a", &[]).await;
    let publish = |id: &str| {
        post(
            "/v1/publish",
            &["x-sse-topic: a", &format!("x-sse-id: {id}")],
            id.as_bytes(),
        )
    };
    let stream = TcpStream::connect(gateway.addr).await.expect("connect");
    let mut publisher = HttpReader::new(stream);
    publisher
        .stream()
        .write_all(&publish("e1"))
        .await
        .expect("write");
    accepted(&mut publisher).await;
    // Two at once, pipelined; then one whose body comes a moment after its head.
    publisher
        .stream()
        .write_all(&[publish("e2"), publish("e3")].concat())
        .await
        .expect("write");
    accepted(&mut publisher).await;
    accepted(&mut publisher).await;
    let split = publish("e4");
    let (head, body) = split.split_at(split.len() - 2);
    publisher.stream().write_all(head).await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    publisher.stream().write_all(body).await.expect("write");
    accepted(&mut publisher).await;
    assert_eq!(served_directly(&gateway).await, 4);
    // Something else: the connection goes to hyper, which answers it and the publishes
    // after it, on the same connection.
    publisher
        .stream()
        .write_all(&get("/healthz", &[]))
        .await
        .expect("write");
    assert_eq!(publisher.response().await.status, 200);
    publisher
        .stream()
        .write_all(&publish("e5"))
        .await
        .expect("write");
    accepted(&mut publisher).await;
    assert_eq!(served_directly(&gateway).await, 4, "hyper's from then on");
    for id in ["e1", "e2", "e3", "e4", "e5"] {
        let event = sse.next_event().await.expect("an event");
        assert_eq!(event.id.as_deref(), Some(id));
        assert_eq!(event.data.as_deref(), Some(id));
    }
}

#[tokio::test]
async fn an_idle_publisher_is_closed_after_the_header_timeout_and_when_the_server_stops() {
    let http = HttpConfig {
        header_read_timeout: Duration::from_secs(1),
        ..config(true)
    };
    let gateway =
        TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let publish = post("/v1/publish", &["x-sse-topic: nobody", "x-sse-id: 1"], b"x");
    let mut idle = TcpStream::connect(gateway.addr).await.expect("connect");
    idle.write_all(&publish).await.expect("write");
    // The answer, then nothing for the header timeout: closed (a bound, not a speed).
    let took = closed_after(&mut idle).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert_eq!(served_directly(&gateway).await, 1);
    let mut kept = TcpStream::connect(gateway.addr).await.expect("connect");
    kept.write_all(&publish).await.expect("write");
    let mut reader = HttpReader::new(kept);
    assert_eq!(reader.response().await.status, 200);
    gateway.shutdown().await.expect("the server stopped");
    let mut sink = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), reader.stream().read(&mut sink)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed when the server stopped: {read:?}"
    );
}

#[tokio::test]
async fn a_publisher_gets_the_whole_header_timeout_after_each_answer() {
    let http = HttpConfig {
        header_read_timeout: Duration::from_secs(1),
        ..config(true)
    };
    let gateway =
        TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let mut reader = HttpReader::new(TcpStream::connect(gateway.addr).await.expect("connect"));
    // Requests that span more than one timeout, each well within its own.
    for id in 1..=3 {
        let publish = post(
            "/v1/publish",
            &["x-sse-topic: nobody", &format!("x-sse-id: {id}")],
            b"x",
        );
        reader.stream().write_all(&publish).await.expect("write");
        assert_eq!(reader.response().await.status, 200, "request {id}");
        if id < 3 {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }
    assert_eq!(served_directly(&gateway).await, 3);
    // Then idle: closed a whole timeout after the last answer, not the first request's
    // timeout moved on. (A bound, not a speed: a loaded machine only makes it later.)
    let took = closed_after(reader.stream()).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
}

#[tokio::test]
async fn a_head_that_trickles_in_gets_one_header_timeout_not_two() {
    let http = HttpConfig {
        header_read_timeout: Duration::from_secs(2),
        ..config(true)
    };
    let gateway =
        TestGateway::start_with(http, MemoryConfig::default(), CoreConfig::default()).await;
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    let started = tokio::time::Instant::now();
    // Silent for most of the timeout, then the first bytes of a head (the direct path
    // sees a partial head and hands the connection to hyper), then nothing more.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stream.write_all(b"GET /v1/str").await.expect("write");
    let mut sink = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was closed");
    // One timeout of 2 s from the accept closes it near 2 s; hyper's own full timeout
    // from the handover would close it near 3.2 s. (A bound, not a speed: a loaded
    // machine only makes it later.)
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "closed early, after {took:?}"
    );
    assert!(
        took < Duration::from_millis(2900),
        "closed after {took:?}: two timeouts"
    );
}

/// Hostile heads — doubled and conflicting headers, bodies, pipelined bytes, bytes that
/// are not UTF-8, oversize and cut-short heads — get the same answer from both paths
/// (which, for many, means the direct path left them to hyper). Ordinary heads are
/// generated more often, so that the direct path serves some: the test says how many.
#[test]
fn hostile_heads_answer_alike() {
    let heads = (
        proptest::prop_oneof![
            3 => proptest::strategy::Just("/v1/stream?topic=a"),
            1 => proptest::sample::select(vec![
                "/v1/stream", "/v1/stream?topic=a%2Cb", "/v1/stream?topic=",
                "/v1/stream?topic=a&topic=a", "/v1/stream?topic=%FF", "/v1/stream?topic=a#frag",
                "/v1/stream/", "/V1/STREAM?topic=a", "//v1/stream?topic=a",
            ]),
        ],
        versions(),
        proptest::collection::vec(
            proptest::prop_oneof![
                // What a client may well send: the direct path takes these.
                3 => proptest::sample::select(vec![
                    &b"host: x"[..], b"content-length: 0", b"x-sse-topic: b",
                    b"x-sse-topic: bad topic!", b"last-event-id: e1", b"last-event-id: \xff\xfe",
                    b"x-sse-id: \x80label", b"origin: https://good.example",
                    b"origin: https://evil.example", b"origin: null", b"accept: text/event-stream",
                    b"connection: close", b"x-empty:",
                ]),
                // What it should not: most of these are hyper's.
                1 => hyper_headers(),
            ],
            0..6,
        ),
        proptest::prop_oneof![3 => proptest::strategy::Just(0usize), 1 => 0usize..1400],
        trailers(),
        proptest::option::weighted(0.1, 0usize..200),
    );
    served_alike(
        "heads",
        &heads,
        |(target, version, headers, pad, trailer, cut)| {
            let mut bytes = format!("GET {target} {version}\r\n").into_bytes();
            for header in &headers {
                bytes.extend_from_slice(header);
                bytes.extend_from_slice(b"\r\n");
            }
            if pad > 0 {
                bytes.extend_from_slice(format!("x-pad: {}\r\n", "p".repeat(pad)).as_bytes());
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(trailer);
            let eof = cut_short(&mut bytes, cut);
            runtime()
                .block_on(async { same(gateways().await, &bytes, eof).await })
                .1
        },
    );
}

/// Hostile publishes — doubled and conflicting lengths, other framings, bodies that are
/// not UTF-8 or too large, pipelined bytes, heads cut short — get the same answer from
/// both paths. Ordinary publishes are generated more often, so that the direct path serves
/// some: the test says how many.
#[test]
fn hostile_publishes_answer_alike() {
    let publishes = (
        proptest::prop_oneof![
            3 => proptest::strategy::Just("/v1/publish"),
            1 => proptest::sample::select(vec![
                "/v1/publish?topic=a", "/v1/publish/", "/V1/PUBLISH", "//v1/publish",
                "/v1/publish#x", "/v1/publish?x=%FF",
            ]),
        ],
        versions(),
        proptest::collection::vec(
            proptest::prop_oneof![
                3 => proptest::sample::select(vec![
                    &b"x-sse-topic: a"[..], b"x-sse-topic: a, b", b"x-sse-topic: bad topic!",
                    b"x-sse-id: e1", b"x-sse-id: \x80id", b"x-sse-event: note",
                    b"x-sse-event: tideway.x", b"authorization: Bearer test-key-2",
                    b"authorization: Bearer nope", b"origin: https://good.example",
                    b"origin: https://evil.example", b"connection: close",
                    b"connection: keep-alive", b"content-type: text/plain", b"x-empty:",
                ]),
                1 => hyper_headers(),
            ],
            0..6,
        ),
        proptest::prop_oneof![
            3 => proptest::strategy::Just(b"hello".to_vec()),
            1 => proptest::sample::select(vec![
                Vec::new(), b"\xff\xfe".to_vec(), vec![b'x'; MAX_BODY + 1], b"a\nb\r\nc".to_vec(),
            ]),
        ],
        trailers(),
        proptest::option::weighted(0.1, 0usize..300),
    );
    served_alike(
        "publishes",
        &publishes,
        |(target, version, headers, body, trailer, cut)| {
            let mut bytes =
                format!("POST {target} {version}\r\nauthorization: Bearer {API_KEY}\r\n")
                    .into_bytes();
            for header in &headers {
                bytes.extend_from_slice(header);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(trailer);
            let eof = cut_short(&mut bytes, cut);
            runtime().block_on(async {
                let pair = publish_gateways().await;
                let before = served_directly(&pair.0).await;
                same(pair, &bytes, eof).await;
                served_directly(&pair.0).await > before
            })
        },
    );
}

/// The protocol versions of a generated request: mostly HTTP/1.1.
fn versions() -> impl proptest::strategy::Strategy<Value = &'static str> {
    proptest::prop_oneof![
        3 => proptest::strategy::Just("HTTP/1.1"),
        1 => proptest::sample::select(vec!["HTTP/1.0", "HTTP/1.2", "http/1.1"]),
    ]
}

/// Header lines a direct path must leave to hyper (or hyper refuses): other body
/// framings, lengths that are not one plain number, upgrades, `Expect`, malformed lines.
fn hyper_headers() -> impl proptest::strategy::Strategy<Value = &'static [u8]> {
    proptest::sample::select(vec![
        &b"content-length: 5"[..],
        b"content-length: -1",
        b"content-length: 0, 0",
        b"transfer-encoding: chunked",
        b"transfer-encoding: identity",
        b"upgrade: websocket",
        b"expect: 100-continue",
        b"connection: keep-alive, upgrade",
        b" leading-space: x",
        b"no-colon",
        b"bad\x01name: x",
    ])
}

/// What a generated request may carry after itself: nothing, stray bytes, or a pipelined
/// request.
fn trailers() -> impl proptest::strategy::Strategy<Value = &'static [u8]> {
    proptest::prop_oneof![
        3 => proptest::strategy::Just(&b""[..]),
        1 => proptest::sample::select(vec![&b"abc"[..], b"GET /healthz HTTP/1.1\r\n\r\n"]),
    ]
}

/// Cuts `bytes` short at `cut` (the client sends part of a request, then closes its side):
/// whether it was.
fn cut_short(bytes: &mut Vec<u8>, cut: Option<usize>) -> bool {
    if let Some(cut) = cut {
        bytes.truncate(cut.min(bytes.len().saturating_sub(1)));
    }
    cut.is_some()
}

/// Runs 64 generated cases of `what`; `case` sends one to both gateways (asserting the
/// same answer) and says whether the direct path served it. At least three must have been.
fn served_alike<S: proptest::strategy::Strategy>(
    what: &str,
    strategy: &S,
    case: impl Fn(S::Value) -> bool,
) {
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 64,
        ..Default::default()
    });
    let taken = std::cell::Cell::new(0);
    let result = runner.run(strategy, |value| {
        if case(value) {
            taken.set(taken.get() + 1);
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let taken = taken.get();
    eprintln!("{taken} of the generated {what} were served directly");
    assert!(
        taken >= 3,
        "only {taken} of the generated {what} were served directly"
    );
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// The pair the publish property shares across its cases (its own: a publish to `a` would
/// show on the streams the heads property opens), each with a subscriber of `a` that reads
/// everything (one that read nothing would be cut off once its buffers filled, on each
/// path at its own moment, and the topic's publishes answered differently after).
async fn publish_gateways() -> &'static (TestGateway, TestGateway) {
    static PAIR: tokio::sync::OnceCell<(TestGateway, TestGateway)> =
        tokio::sync::OnceCell::const_new();
    PAIR.get_or_init(|| async {
        let pair = pair().await;
        for addr in [pair.0.addr, pair.1.addr] {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(&get("/v1/stream?topic=a", &[]))
                .await
                .expect("write");
            // The head and hello come once the subscription is in place.
            let mut sink = vec![0u8; 4096];
            let _ = stream.read(&mut sink).await;
            tokio::spawn(async move {
                while let Ok(n) = stream.read(&mut sink).await
                    && n > 0
                {}
            });
        }
        pair
    })
    .await
}

/// The pair the property shares across its cases, started on its runtime.
async fn gateways() -> &'static (TestGateway, TestGateway) {
    static PAIR: tokio::sync::OnceCell<(TestGateway, TestGateway)> =
        tokio::sync::OnceCell::const_new();
    PAIR.get_or_init(pair).await
}
