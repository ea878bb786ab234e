//! Shared fixtures for Tideway's tests: a real gateway on a free port, raw HTTP over a
//! `TcpStream`, and an SSE reader that parses what a client would see.
//!
//! Nothing here sleeps to synchronise: readers await bytes under a timeout, and
//! [`wait_until`] polls a condition until a deadline and says what it saw last.
#![forbid(unsafe_code)]

mod certs;
mod cluster;
pub mod conformance;
mod injecting;
mod process;
mod redis;
mod redis_ha;
mod worker;

pub use certs::TestCa;
pub use cluster::RedisCluster;

/// Where the nodes of a multi-process test keep their shared state: one `redis-server`,
/// a Redis Cluster, or the Durable-Object Worker.
pub trait SharedStore {
    /// The flags that make a `tideway` process node `id` on it.
    fn node_args(&self, id: &str) -> Vec<String>;
}

impl SharedStore for RedisServer {
    fn node_args(&self, id: &str) -> Vec<String> {
        RedisServer::node_args(self, id)
    }
}

impl SharedStore for RedisCluster {
    fn node_args(&self, id: &str) -> Vec<String> {
        RedisCluster::node_args(self, id)
    }
}

impl SharedStore for Worker {
    fn node_args(&self, id: &str) -> Vec<String> {
        Worker::node_args(self, id)
    }
}
pub use injecting::Injecting;
pub use process::TidewayProcess;
pub use redis::RedisServer;
pub use redis_ha::{RedisSentinel, SENTINEL_SERVICE, TlsRedis};
pub use worker::{WORKER_SECRET, Worker};

use std::{future::Future, net::SocketAddr, time::Duration};

use bytes::{Buf, BytesMut};
use tideway_core::{CoreConfig, Event, Gateway, NodeRecord, Route, unix_millis};
use tideway_http::{ApiKeys, HttpConfig};
use tideway_protocol::{
    EventData, EventId, TopicList,
    sse::{Block, ParseError, parse_block},
};
use tideway_store_memory::{MemoryConfig, MemoryStore};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

/// How long any single wait of a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The API key every test gateway accepts.
pub const API_KEY: &str = "test-key-1";

/// A gateway serving on `127.0.0.1` on a free port, with the in-memory store. It derefs
/// to a [`Client`] of itself.
pub struct TestGateway {
    client: Client,
    /// Its engine, for looking at state directly.
    pub gateway: Gateway<MemoryStore>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl std::ops::Deref for TestGateway {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Speaks raw HTTP to a gateway at `addr`, in-process or another process.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// Where the gateway listens.
    pub addr: SocketAddr,
}

impl TestGateway {
    /// Starts a gateway with the default settings and [`API_KEY`] (plus a second key).
    pub async fn start() -> Self {
        Self::start_with(
            HttpConfig::default(),
            MemoryConfig::default(),
            CoreConfig::default(),
        )
        .await
    }

    /// Starts a gateway with these settings; the API keys are always [`API_KEY`] and
    /// `test-key-2`.
    pub async fn start_with(http: HttpConfig, memory: MemoryConfig, core: CoreConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let node = NodeRecord {
            id: "test-node".into(),
            hostname: "localhost".into(),
            advertise_host: addr.ip().to_string(),
            started_at: unix_millis(),
            connections: 0,
            topics: 0,
            last_heartbeat: None,
        };
        let gateway = Gateway::start(MemoryStore::new(memory), node, core)
            .await
            .expect("start gateway");
        // Keys the test set stay; the two test keys are always there too.
        let keys = ApiKeys::parse(&format!("{API_KEY},test-key-2"))
            .merged((*http.api_keys.current()).clone())
            .expect("a test's keys take neither the test keys' names nor their secrets");
        http.api_keys.replace(keys);
        let config = http;
        let (shutdown, signal) = oneshot::channel::<()>();
        let server = tokio::spawn(tideway_http::run(
            listener,
            gateway.clone(),
            config,
            async {
                let _ = signal.await;
            },
        ));
        Self {
            client: Client { addr },
            gateway,
            shutdown: Some(shutdown),
            server,
        }
    }

    /// Sends the shutdown signal and waits for the drain to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(TIMEOUT * 2, &mut self.server)
            .await
            .expect("drain within the timeout")
            .expect("server task")
    }

    /// Publishes an event with each of `ids` to `topic` through the engine itself, not
    /// HTTP: microseconds each, so a test can queue a burst faster than any reader or
    /// poll keeps up. Panics if the topic has no subscriber.
    pub async fn publish_in_process(&self, topic: &str, ids: impl IntoIterator<Item = String>) {
        let topics = TopicList::parse(topic.as_bytes(), 8).expect("a valid topic");
        for id in ids {
            let id = EventId::parse(id.as_bytes()).expect("a valid id");
            let Route::Live(live) = self.gateway.route(&topics, &id).await.expect("route") else {
                panic!("{topic} has no subscriber");
            };
            let event = Event {
                id,
                event_type: None,
                data: EventData::parse("x".into()).expect("utf-8"),
                published_at: 0,
            };
            self.gateway.publish(live, event).await.expect("publish");
        }
    }
}

impl Client {
    /// Sends raw request bytes on a new connection and reads the whole response.
    pub async fn raw(&self, request: &[u8]) -> Response {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        stream.write_all(request).await.expect("write request");
        let mut reader = HttpReader::new(stream);
        reader.response().await
    }

    /// `GET path` with extra header lines (each `name: value`).
    pub async fn get(&self, path: &str, headers: &[&str]) -> Response {
        self.raw(request("GET", path, headers, b"").as_bytes())
            .await
    }

    /// `GET path` with the test API key.
    pub async fn admin(&self, path: &str) -> Response {
        self.get(path, &[&format!("authorization: Bearer {API_KEY}")])
            .await
    }

    /// Publishes `body` to `topics` with id `id` and the test API key.
    pub async fn publish(&self, topics: &str, id: &str, body: &str) -> Response {
        let headers = [
            format!("authorization: Bearer {API_KEY}"),
            format!("x-sse-topic: {topics}"),
            format!("x-sse-id: {id}"),
        ];
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let text = request("POST", "/v1/publish", &headers, body.as_bytes());
        self.raw(text.as_bytes()).await
    }

    /// Opens an SSE stream at `path` (with its query) with extra header lines and waits
    /// for the response head and the stream's first block.
    pub async fn subscribe(&self, path: &str, headers: &[&str]) -> Sse {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let mut sse = Sse::open(stream, path, headers).await;
        if sse.status != 200 {
            let body = sse.error_body().await;
            panic!("subscribe {path} answered {}: {body}", sse.status);
        }
        let hello = sse.next_block().await.expect("the stream's first block");
        assert!(
            hello.retry.is_some(),
            "the first block carries retry: {hello:?}"
        );
        sse
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Formats a request with `Connection: close` and a `Content-Length` when there is a body.
pub fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(&String::from_utf8_lossy(body));
    text
}

/// The head of a `GET path` kept alive: `fixed` header lines (each ending in CRLF), then
/// `headers` (each `name: value`).
fn get_head(path: &str, fixed: &str, headers: &[&str]) -> String {
    let mut text = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{fixed}");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// A whole HTTP response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads HTTP/1.1 responses from a stream, de-chunking bodies.
pub struct HttpReader {
    stream: TcpStream,
    buf: BytesMut,
}

impl HttpReader {
    /// Reads from `stream`.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8192),
        }
    }

    /// The stream, to write further requests on it.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        let read = tokio::time::timeout(TIMEOUT, self.stream.read_buf(&mut self.buf))
            .await
            .expect("the server answered within the timeout")
            .expect("read from the server");
        read > 0
    }

    /// Reads a response head: status and headers.
    pub async fn head(&mut self) -> (u16, Vec<(String, String)>) {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.advance(end + 4);
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or_default();
                let status = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
                let headers = lines
                    .filter_map(|line| line.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                if status == 100 {
                    continue;
                }
                return (status, headers);
            }
            assert!(
                self.fill().await,
                "the connection closed before a response head"
            );
        }
    }

    /// Reads a whole response: head and body (by length, by chunks, or to the end).
    pub async fn response(&mut self) -> Response {
        let (status, headers) = self.head().await;
        let body = self.body(&headers).await;
        Response {
            status,
            headers,
            body,
        }
    }

    /// Reads the body that follows a head with these headers.
    pub async fn body(&mut self, headers: &[(String, String)]) -> Vec<u8> {
        let chunked =
            find_header(headers, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length = find_header(headers, "content-length").and_then(|v| v.parse::<usize>().ok());
        let mut body = Vec::new();
        if chunked {
            while let Some(chunk) = self.chunk().await {
                body.extend_from_slice(&chunk);
            }
        } else if let Some(length) = length {
            while self.buf.len() < length {
                assert!(self.fill().await, "the connection closed inside the body");
            }
            body = self.buf.split_to(length).to_vec();
        } else {
            while self.fill().await {}
            body = self.buf.split().to_vec();
        }
        body
    }

    /// The next chunk of a chunked body; `None` after the last one.
    pub async fn chunk(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let size_line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                while self.buf.len() < end + 2 + size + 2 {
                    assert!(self.fill().await, "the connection closed inside a chunk");
                }
                self.buf.advance(end + 2);
                let chunk = self.buf.split_to(size).to_vec();
                self.buf.advance(2);
                return (size > 0).then_some(chunk);
            }
            if !self.fill().await {
                return None;
            }
        }
    }
}

/// An open SSE stream, read as a client would.
pub struct Sse {
    reader: HttpReader,
    /// The response status.
    pub status: u16,
    /// The response headers.
    pub headers: Vec<(String, String)>,
    events: BytesMut,
    ended: bool,
}

impl Sse {
    /// Sends `GET path` on `stream` and reads the response head.
    pub async fn open(mut stream: TcpStream, path: &str, headers: &[&str]) -> Self {
        let text = get_head(path, "accept: text/event-stream\r\n", headers);
        stream
            .write_all(text.as_bytes())
            .await
            .expect("write request");
        let mut reader = HttpReader::new(stream);
        let (status, headers) = reader.head().await;
        Self {
            reader,
            status,
            headers,
            events: BytesMut::new(),
            ended: false,
        }
    }

    /// The body of a refused subscribe, for failure messages.
    pub async fn error_body(&mut self) -> String {
        if self.status == 200 {
            return String::new();
        }
        let headers = self.headers.clone();
        String::from_utf8_lossy(&self.reader.body(&headers).await).into_owned()
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The next block of the stream (events, comments, retry hints); `None` at its end.
    pub async fn next_block(&mut self) -> Option<Block> {
        loop {
            match parse_block(&self.events) {
                Ok((block, used)) => {
                    self.events.advance(used);
                    return Some(block);
                }
                Err(ParseError::Incomplete) => {}
                Err(err) => panic!("the stream is not SSE: {err}"),
            }
            if self.ended {
                return None;
            }
            match self.reader.chunk().await {
                Some(chunk) => self.events.extend_from_slice(&chunk),
                None => self.ended = true,
            }
        }
    }

    /// The next block that carries data, skipping heartbeats; `None` at the stream's end.
    pub async fn next_event(&mut self) -> Option<Block> {
        loop {
            let block = self.next_block().await?;
            if block.data.is_some() {
                return Some(block);
            }
        }
    }
}

/// Ports [`free_port`] hands out are in `PORTS_FIRST..PORTS_END`; a Redis Cluster node's
/// bus listens on its port + [`CLUSTER_BUS_OFFSET`], so every bus port falls in the range
/// above, which this never hands out. With one range, a gateway given a port a
/// cluster's bus took a moment later failed to bind while the test, finding the bus
/// listening there, talked HTTP to Redis and was reset.
pub const PORTS_FIRST: u16 = 10_000;
/// See [`PORTS_FIRST`].
pub const PORTS_END: u16 = 20_000;
/// Where Redis Cluster puts a node's bus: its port plus this.
pub const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// A port on 127.0.0.1 that nothing listens on now and that this process has not handed
/// out before, chosen in `PORTS_FIRST..PORTS_END`, below the kernel's ephemeral range: a
/// port from that range (what binding port 0 gives) can be taken by any process's
/// outgoing connection between this check and the server's own bind, which a load test
/// on the same machine makes likely. Falls back to port 0's choice when the range leaves
/// no room.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher as _, RandomState};
    // Two tests of one process must not be given the same port before either binds it.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let end = PORTS_END.min(low);
    if end > PORTS_FIRST + 1000 {
        let span = u64::from(end - PORTS_FIRST);
        let random = RandomState::new();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for n in 0..200u64 {
            let port = PORTS_FIRST + (random.hash_one((std::process::id(), n)) % span) as u16;
            if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Blocks until something listens on `addr` (a process just started), or fails after
/// [`TIMEOUT`]. Polls: another process's start offers no event to await.
pub fn wait_listening(addr: &str) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` until it gives `Some`, or fails after [`TIMEOUT`] with what
/// `describe` says about the last state seen.
pub async fn wait_until<T, F, Fut>(what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match condition().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::task::yield_now().await,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A message a WebSocket subscriber received.
#[derive(Debug)]
pub enum WsMessage {
    /// A text frame, parsed as JSON.
    Text(serde_json::Value),
    /// A close frame: code and reason.
    Close(u16, String),
}

/// A WebSocket client over a raw `TcpStream`; it answers pings as it reads.
pub struct Ws {
    socket: fastwebsockets::WebSocket<TcpStream>,
}

impl Client {
    /// Opens a WebSocket at `path` with extra header lines; panics unless it upgrades.
    pub async fn ws(&self, path: &str, headers: &[&str]) -> Ws {
        match self.ws_handshake(path, headers).await {
            Ok(ws) => ws,
            Err(response) => panic!("no upgrade: {} {}", response.status, response.text()),
        }
    }

    /// Opens a WebSocket, or returns the refusal.
    pub async fn ws_handshake(&self, path: &str, headers: &[&str]) -> Result<Ws, Response> {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let upgrade = "connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let text = get_head(path, upgrade, headers);
        stream
            .write_all(text.as_bytes())
            .await
            .expect("write handshake");
        // Read the head a byte at a time so no frame bytes are taken from the socket.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tokio::time::timeout(TIMEOUT, stream.read_u8())
                .await
                .expect("a handshake answer within the timeout")
                .expect("read the handshake answer");
            head.push(byte);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if head.starts_with("HTTP/1.1 101") {
            let mut socket =
                fastwebsockets::WebSocket::after_handshake(stream, fastwebsockets::Role::Client);
            socket.set_auto_pong(true);
            socket.set_auto_close(true);
            return Ok(Ws { socket });
        }
        // A refusal: re-read it as a whole response from the head we took.
        let mut reader = HttpReader::new(stream);
        reader.buf.extend_from_slice(head.as_bytes());
        Err(reader.response().await)
    }
}

impl Ws {
    /// The next text or close frame, skipping pings and pongs; `None` when the
    /// connection ends without a close frame.
    pub async fn next_message(&mut self) -> Option<WsMessage> {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.socket.read_frame())
                .await
                .expect("a WebSocket frame within the timeout")
                .ok()?;
            match frame.opcode {
                fastwebsockets::OpCode::Text => {
                    let value =
                        serde_json::from_slice(&frame.payload).expect("text frames are JSON");
                    return Some(WsMessage::Text(value));
                }
                fastwebsockets::OpCode::Close => {
                    let payload = &frame.payload[..];
                    let code = payload
                        .get(..2)
                        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                    let reason =
                        String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                    return Some(WsMessage::Close(code, reason));
                }
                _ => continue,
            }
        }
    }

    /// The next text frame as JSON; panics on anything else.
    pub async fn next_json(&mut self) -> serde_json::Value {
        match self.next_message().await {
            Some(WsMessage::Text(value)) => value,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The raw socket, to stop answering pings by not reading through `Ws`.
    pub fn into_inner(self) -> TcpStream {
        self.socket.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A bus port (node port + offset) must land above every port handed out.
    const _: () = assert!(PORTS_END <= PORTS_FIRST + CLUSTER_BUS_OFFSET);

    #[test]
    fn free_ports_are_distinct_and_never_another_ports_cluster_bus() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        for (i, port) in ports.iter().enumerate() {
            assert!(
                (PORTS_FIRST..PORTS_END).contains(port),
                "{port} is outside the range"
            );
            assert!(!ports[..i].contains(port), "{port} was handed out twice");
            assert!(
                !ports.contains(&(port + CLUSTER_BUS_OFFSET)),
                "{port}'s bus port was handed out"
            );
        }
    }
}
