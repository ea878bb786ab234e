//! The bytes on the socket: subscribing and publishing on Tideway or on Nchan, reading
//! answers, and taking event payloads out of an SSE stream or WebSocket frames.
//!
//! HTTP/1.1 is written by hand rather than through an HTTP client so the load generator
//! controls, and can count, every byte it sends (`Expect: 100-continue` without a body).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// The server under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Target {
    Tideway,
    /// nginx with Nchan, configured as `cargo xtask bench` writes it: publishers `POST
    /// /pub/<channel>`, subscribers `GET /sub/<channel>`, counters at `/nchan_status`.
    Nchan,
}

/// How a subscriber receives events.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Transport {
    Sse,
    WebSocket,
}

/// Opens connection number `n` with a receive buffer of `recv_buffer` bytes; past 20,000,
/// from further source addresses 127.0.0.x (20,000 each, well inside one address's
/// ephemeral ports).
pub(crate) async fn connect(
    addr: SocketAddr,
    n: usize,
    recv_buffer: u32,
) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(recv_buffer)?;
    // The first 20,000 let `connect` pick the port: binding to port 0 first searches for a
    // port no socket holds at all, which slows to milliseconds once tens of thousands of
    // earlier connections sit in TIME_WAIT.
    if n >= 20_000 {
        let source: std::net::IpAddr = format!("127.0.0.{}", 1 + (n / 20_000) % 250).parse()?;
        socket.bind(SocketAddr::new(source, 0))?;
    }
    Ok(socket.connect(addr).await?)
}

/// Opens a subscription to `topic` and sends its request; the answer is left unread.
pub(crate) async fn subscribe(
    target: Target,
    transport: Transport,
    addr: SocketAddr,
    topic: &str,
    n: usize,
    recv_buffer: u32,
) -> anyhow::Result<TcpStream> {
    let mut stream = connect(addr, n, recv_buffer).await?;
    let request = match (target, transport) {
        (Target::Tideway, Transport::Sse) => {
            format!("GET /v1/stream?topic={topic} HTTP/1.1\r\nhost: load\r\n\r\n")
        }
        (Target::Tideway, Transport::WebSocket) => format!(
            "GET /v1/ws?topic={topic} HTTP/1.1\r\nhost: load\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
        (Target::Nchan, Transport::Sse) => {
            format!("GET /sub/{topic} HTTP/1.1\r\nhost: load\r\naccept: text/event-stream\r\n\r\n")
        }
        (Target::Nchan, Transport::WebSocket) => {
            bail!("the Nchan scenarios subscribe over SSE only")
        }
    };
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

/// The request of one publish of `body` to `topic`.
pub(crate) fn publish_request(
    target: Target,
    key: &str,
    topic: &str,
    id: &str,
    body: &str,
) -> String {
    match target {
        Target::Tideway => format!(
            "POST /v1/publish HTTP/1.1\r\nhost: load\r\nauthorization: Bearer {key}\r\nx-sse-topic: {topic}\r\nx-sse-id: {id}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
        Target::Nchan => format!(
            "POST /pub/{topic} HTTP/1.1\r\nhost: load\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    }
}

/// A batch publish of `events` (topic, id, data): Tideway's `POST /v1/publish/batch`, or,
/// for `Target::Nchan`, the bench's reference server's `POST /batch` (a `<topic> <data>`
/// line per event; Nchan itself has no batch route).
///
/// Tideway's JSON is written straight into the request, each string escaped by
/// `serde_json`, rather than built as a `serde_json::Value` first: the load generator
/// shares the machine with the server, so what it spends per event is taken from the
/// server's figures, and the reference's line format costs next to nothing to write.
pub(crate) fn batch_request(
    target: Target,
    key: &str,
    events: &[(String, String, String)],
) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(
        events
            .iter()
            .map(|(topic, id, data)| topic.len() + id.len() + data.len() + 40)
            .sum::<usize>()
            + 16,
    );
    let head = if target == Target::Nchan {
        for (topic, _, data) in events {
            body.extend_from_slice(topic.as_bytes());
            body.push(b' ');
            body.extend_from_slice(data.as_bytes());
            body.push(b'\n');
        }
        format!(
            "POST /batch HTTP/1.1\r\nhost: load\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
    } else {
        body.extend_from_slice(br#"{"events":["#);
        for (n, (topic, id, data)) in events.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(br#"{"topics":["#);
            serde_json::to_writer(&mut body, topic)?;
            body.extend_from_slice(br#"],"id":"#);
            serde_json::to_writer(&mut body, id)?;
            body.extend_from_slice(br#","data":"#);
            serde_json::to_writer(&mut body, data)?;
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        format!(
            "POST /v1/publish/batch HTTP/1.1\r\nhost: load\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
    };
    let mut request = Vec::with_capacity(head.len() + body.len());
    request.extend_from_slice(head.as_bytes());
    request.extend_from_slice(&body);
    Ok(request)
}

/// Sends one batch publish on a kept-alive connection and reads its answer.
pub(crate) async fn publish_batch(
    target: Target,
    stream: &mut TcpStream,
    key: &str,
    events: &[(String, String, String)],
) -> anyhow::Result<Answer> {
    stream
        .write_all(&batch_request(target, key, events)?)
        .await?;
    read_response(stream).await
}

/// Sends one publish on a kept-alive connection and reads its answer.
pub(crate) async fn publish(
    target: Target,
    stream: &mut TcpStream,
    key: &str,
    topic: &str,
    id: &str,
    body: &str,
) -> anyhow::Result<Answer> {
    let request = publish_request(target, key, topic, id, body);
    stream.write_all(request.as_bytes()).await?;
    read_response(stream).await
}

/// The head of an answer, as far as the load generator needs it.
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// Whether the server said it closes the connection after this answer.
    pub(crate) closes: bool,
    /// Interim `100 Continue` answers that came before the final one.
    pub(crate) continues: usize,
}

/// Reads one answer with a `Content-Length` body, skipping interim 1xx answers. Requests
/// on a connection go one at a time, so nothing follows the body. Each byte is searched
/// once for the head's end, and the head is read once, however many reads the body takes
/// (a batch's answer is several kilobytes).
pub(crate) async fn read_response(stream: &mut TcpStream) -> anyhow::Result<Answer> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let mut continues = 0;
    // How far `buf` has been searched for the head's end, and the final answer's head
    // once read: its status, where its body ends and whether the server closes.
    let mut searched: usize = 0;
    let mut head: Option<(u16, usize, bool)> = None;
    loop {
        while head.is_none() {
            let from = searched.saturating_sub(3);
            let Some(at) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
                searched = buf.len();
                break;
            };
            let end = from + at;
            let text = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("status line")?;
            if (100..200).contains(&status) {
                continues += usize::from(status == 100);
                buf.drain(..end + 4);
                searched = 0;
                continue;
            }
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            let length: usize = header("content-length:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let closes = header("connection:").is_some_and(|v| v == "close");
            head = Some((status, end + 4 + length, closes));
        }
        if let Some((status, body_end, closes)) = head
            && buf.len() >= body_end
        {
            return Ok(Answer {
                status,
                closes,
                continues,
            });
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("the connection closed inside a response");
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

/// Subscribers the server counts, for waiting until all are in.
pub(crate) async fn subscribers(target: Target, addr: SocketAddr) -> anyhow::Result<u64> {
    match target {
        Target::Tideway => {
            let text = get(addr, "/metrics").await?;
            // One sample per transport.
            Ok(text
                .lines()
                .filter(|l| l.starts_with("tideway_connections{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum())
        }
        Target::Nchan => {
            let text = get(addr, "/nchan_status").await?;
            text.lines()
                .find_map(|l| l.strip_prefix("subscribers:"))
                .and_then(|v| v.trim().parse().ok())
                .context("`subscribers:` in /nchan_status")
        }
    }
}

/// Polls until the server counts `value` subscribers over `addrs`, for up to 60 s.
pub(crate) async fn wait_subscribers(
    target: Target,
    addrs: &[SocketAddr],
    value: u64,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut seen = 0;
        for addr in addrs {
            seen += subscribers(target, *addr).await?;
        }
        if seen == value {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{seen} subscribers counted, expected {value}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One unlabelled-by-name value of Tideway's `/metrics` (the first sample of `name`).
pub(crate) async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<u64> {
    let text = get(addr, "/metrics").await?;
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("metric {name} not found"))
}

/// The whole answer (head included) of `GET path` on a connection of its own.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: load\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// Takes event payloads out of what a subscriber receives, across reads.
pub(crate) enum Decoder {
    /// `data:` lines of an SSE stream (a chunked body's size lines are not `data:` lines).
    Sse { pending: Vec<u8> },
    /// The `data` of Tideway's JSON text frames, after the `101` head.
    WebSocket { pending: Vec<u8>, head_done: bool },
}

/// What a WebSocket reader must answer.
pub(crate) struct Ping(pub(crate) Vec<u8>);

impl Decoder {
    pub(crate) fn new(transport: Transport) -> Self {
        match transport {
            Transport::Sse => Self::Sse {
                pending: Vec::new(),
            },
            Transport::WebSocket => Self::WebSocket {
                pending: Vec::new(),
                head_done: false,
            },
        }
    }

    /// Feeds received bytes; calls `payload` with each complete event's data and returns
    /// the pings to answer.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        mut payload: impl FnMut(&[u8]),
    ) -> anyhow::Result<Vec<Ping>> {
        let mut pings = Vec::new();
        match self {
            Self::Sse { pending } => {
                pending.extend_from_slice(bytes);
                let cut = pending
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                for line in pending[..cut].split(|&b| b == b'\n') {
                    if let Some(rest) = line.strip_prefix(b"data: ") {
                        payload(rest);
                    }
                }
                pending.drain(..cut);
            }
            Self::WebSocket { pending, head_done } => {
                pending.extend_from_slice(bytes);
                if !*head_done {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        return Ok(pings);
                    };
                    if !pending.starts_with(b"HTTP/1.1 101") {
                        bail!("the WebSocket handshake was refused");
                    }
                    pending.drain(..end + 4);
                    *head_done = true;
                }
                let mut at = 0;
                while let Some((opcode, payload_at, len)) = frame_header(&pending[at..]) {
                    let start = at + payload_at;
                    if pending.len() < start + len {
                        break;
                    }
                    let body = &pending[start..start + len];
                    match opcode {
                        0x1 => {
                            if let Some(data) = json_data(body) {
                                payload(data);
                            }
                        }
                        0x9 => pings.push(Ping(body.to_vec())),
                        _ => {}
                    }
                    at = start + len;
                }
                pending.drain(..at);
            }
        }
        Ok(pings)
    }
}

/// The opcode, the payload's offset and its length of the server frame at the start of
/// `bytes`, once its header is complete. Server frames are not masked.
fn frame_header(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let opcode = first & 0x0f;
    match second & 0x7f {
        126 => Some((
            opcode,
            4,
            usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
        )),
        127 => {
            let len: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            Some((opcode, 10, usize::try_from(u64::from_be_bytes(len)).ok()?))
        }
        len => Some((opcode, 2, usize::from(len))),
    }
}

/// The string value of `"data"` in a Tideway WebSocket envelope (the load generator's
/// payloads hold no escapes).
fn json_data(frame: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"data\":\"";
    let at = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = frame[at..].iter().position(|&b| b == b'"')?;
    Some(&frame[at..at + len])
}

/// The masked pong a client sends back for a ping (a zero mask leaves the bytes as they are).
pub(crate) fn pong(ping: &Ping) -> Vec<u8> {
    let mut frame = vec![0x8a];
    // Control frames carry at most 125 bytes.
    let len = ping.0.len().min(125);
    frame.push(0x80 | len as u8);
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&ping.0[..len]);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_payloads_across_reads() {
        let mut decoder = Decoder::new(Transport::Sse);
        let mut seen = Vec::new();
        let mut take = |p: &[u8]| seen.push(String::from_utf8_lossy(p).into_owned());
        decoder
            .feed(b"HTTP/1.1 200 OK\r\n\r\n1a\r\nid: 1\ndata: 1 2", &mut take)
            .unwrap();
        decoder
            .feed(b"0 x\n\n\r\nid: 2\ndata: 2 5 y\n\n", &mut take)
            .unwrap();
        assert_eq!(seen, ["1 20 x", "2 5 y"]);
    }

    #[test]
    fn websocket_payloads_and_pings() {
        let mut decoder = Decoder::new(Transport::WebSocket);
        let text = br#"{"topic":"t","id":"7","event":null,"data":"7 99 pad"}"#;
        let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[0x81, text.len() as u8]);
        bytes.extend_from_slice(text);
        bytes.extend_from_slice(&[0x89, 2, b'h', b'i']);
        let long = vec![b'z'; 300];
        let mut long_frame = br#"{"data":""#.to_vec();
        long_frame.extend_from_slice(&long);
        long_frame.extend_from_slice(b"\"}");
        bytes.extend_from_slice(&[0x81, 126]);
        bytes.extend_from_slice(&(long_frame.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&long_frame);
        let mut seen = Vec::new();
        let mut pings = Vec::new();
        // Byte by byte: every split of a frame or of the head must work.
        for byte in &bytes {
            pings.extend(
                decoder
                    .feed(std::slice::from_ref(byte), |p| seen.push(p.to_vec()))
                    .unwrap(),
            );
        }
        assert_eq!(seen, [b"7 99 pad".to_vec(), long]);
        assert_eq!(pings.len(), 1);
        assert_eq!(pong(&pings[0]), [0x8a, 0x82, 0, 0, 0, 0, b'h', b'i']);
    }

    #[test]
    fn batch_bodies_are_the_json_and_lines_they_stand_for() {
        let events = [
            ("t-1".to_owned(), "f1".to_owned(), "1 20 x".to_owned()),
            (
                "t\"2".to_owned(),
                "f\\2".to_owned(),
                "2 5 \u{1}\n\u{e9}".to_owned(),
            ),
        ];
        let split = |request: Vec<u8>| {
            let text = String::from_utf8(request).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length = format!("content-length: {}\r\n", body.len());
            assert!(format!("{head}\r\n").contains(&length), "{head}");
            body.to_owned()
        };
        let json = split(batch_request(Target::Tideway, "k", &events).unwrap());
        let events_json: Vec<_> = events
            .iter()
            .map(|(t, i, d)| serde_json::json!({"topics": [t], "id": i, "data": d}))
            .collect();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            serde_json::json!({ "events": events_json })
        );
        let lines = split(batch_request(Target::Nchan, "k", &events[..1]).unwrap());
        assert_eq!(lines, "t-1 1 20 x\n");
    }

    #[tokio::test]
    async fn answers_are_read_whole_across_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = "b".repeat(40_000);
        let answers = [
            format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            "HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_owned(),
        ];
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for answer in answers {
                // As a server answers: once the request (here one byte) has come.
                socket.read_exact(&mut [0]).await.unwrap();
                // A few bytes at a time, so heads and bodies are split across reads.
                for piece in answer.as_bytes().chunks(7) {
                    socket.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"1").await.unwrap();
        let first = read_response(&mut stream).await.unwrap();
        assert_eq!(
            (first.status, first.closes, first.continues),
            (200, false, 1)
        );
        stream.write_all(b"2").await.unwrap();
        let second = read_response(&mut stream).await.unwrap();
        assert_eq!(
            (second.status, second.closes, second.continues),
            (202, true, 0)
        );
        server.await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"");
    }

    #[test]
    fn refused_handshakes_are_errors() {
        let mut decoder = Decoder::new(Transport::WebSocket);
        assert!(
            decoder
                .feed(b"HTTP/1.1 426 Upgrade Required\r\n\r\n", |_| {})
                .is_err()
        );
    }
}
