//! SSE subscribers served without hyper's per-connection machinery.
//!
//! An idle SSE subscriber is the gateway's commonest connection, and hyper keeps a read
//! buffer and a header write buffer of 8 KiB each for a connection's whole life: most of
//! what an idle subscriber cost (18 KiB in all). So when a connection's first bytes are a
//! complete `GET /v1/stream` head over HTTP/1.1 with no body, no upgrade and no
//! `Expect`, this module answers it itself: the same handler (`App::subscribe_direct`)
//! builds the response, and this writes it — head, then the body as chunks — and closes
//! the connection when the stream ends. Nothing else is read from the client but its
//! close.
//!
//! Writes are batched: everything the stream has ready when the socket can take more goes
//! out as one chunk in one `write`, so a subscriber that fell behind catches up in a few
//! large segments instead of one per event (the cost of a write is per segment, not per
//! byte). A buffer is given back once written, so an idle subscriber holds none.
//!
//! Anything else goes to hyper untouched: the head is only peeked, so nothing is consumed
//! unless this module takes the connection.

use std::{io, time::SystemTime};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{HeaderName, HeaderValue, Method, Request, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{app::Peer, response::Response};

/// How much of a connection's first bytes are looked at. A subscribe head is a few hundred
/// bytes (a token in a header adds a few hundred more); a larger one goes to hyper.
const PEEK: usize = 4096;

/// The most a single write carries; more that is ready waits for the next one.
const MAX_BATCH: usize = 64 * 1024;

/// The route served here.
const STREAM_PATH: &str = "/v1/stream";

/// Reads the first request's head from `stream` if it is a subscribe this module serves
/// (and `enabled`); `None` leaves the connection as it was, for hyper.
pub(crate) async fn take_subscribe(
    stream: &mut TcpStream,
    enabled: bool,
) -> io::Result<Option<Request<()>>> {
    if !enabled {
        return Ok(None);
    }
    let mut buf = vec![0u8; PEEK];
    let seen = stream.peek(&mut buf).await?;
    let Some((request, head_len)) = parse_subscribe(&buf[..seen]) else {
        return Ok(None);
    };
    // The head is in the socket's receive queue; take exactly it.
    stream.read_exact(&mut buf[..head_len]).await?;
    Ok(Some(request))
}

/// The subscribe request in `bytes` and the length of its head, if `bytes` are exactly one
/// whole `GET /v1/stream` head this module serves.
///
/// The edge policy: this path takes only what hyper would serve the same way, and leaves
/// the rest to hyper, which is the one judge of everything else. So it refuses to take a
/// head followed by other bytes (a pipelined request or a body hyper reads or refuses), a
/// body announced in any way (`Transfer-Encoding`, a `Content-Length` other than one
/// `0`: two of them, even equal, are hyper's to refuse), an upgrade, an `Expect`, another
/// method, version or path, and anything httparse or the `http` types refuse.
pub(crate) fn parse_subscribe(bytes: &[u8]) -> Option<(Request<()>, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(bytes).ok()? else {
        return None;
    };
    if head_len != bytes.len() {
        return None;
    }
    let path = parsed.path?;
    let route = path.split_once('?').map_or(path, |(route, _)| route);
    if parsed.method != Some("GET") || route != STREAM_PATH || parsed.version != Some(1) {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(Version::HTTP_11)
        .body(())
        .ok()?;
    let map = request.headers_mut();
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        map.append(name, value);
    }
    let mut lengths = map.get_all(http::header::CONTENT_LENGTH).iter();
    let no_body = match (lengths.next(), lengths.next()) {
        (None, _) => true,
        (Some(length), None) => length.as_bytes() == b"0",
        (Some(_), Some(_)) => false,
    };
    let hyper_only = [
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::header::EXPECT,
    ];
    if !no_body || hyper_only.iter().any(|name| map.contains_key(name)) {
        return None;
    }
    Some((request, head_len))
}

/// Writes `response` on `stream` and, for a stream body, keeps writing until the body
/// ends, the client goes away or `peer.kill` fires.
pub(crate) async fn serve(mut stream: TcpStream, response: Response, peer: &Peer) {
    let (parts, mut body) = response.into_parts();
    let length = body.size_hint().exact();
    let mut out = Vec::with_capacity(512);
    head(&mut out, &parts, length);
    // The head's headers are written; they need not live as long as the stream.
    drop(parts);
    if length.is_some() {
        // A whole answer (an error): head and body in one write.
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                out.extend_from_slice(&data);
            }
        }
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
        return;
    }
    let mut ended = false;
    let mut data: Vec<Bytes> = Vec::new();
    loop {
        // With nothing to write, wait for the next frame, watching for the client's close
        // and for a kill. (The head goes out with the first frames.)
        if out.is_empty() {
            let first = tokio::select! {
                frame = body.frame() => frame,
                () = client_gone(&stream) => return,
                () = peer.kill.notified() => return killed(peer),
            };
            match first {
                Some(Ok(frame)) => data.extend(frame.into_data().ok()),
                Some(Err(never)) => match never {},
                None => ended = true,
            }
        }
        // Whatever else is ready goes out in the same write.
        let mut size: usize = data.iter().map(Bytes::len).sum();
        while !ended && size < MAX_BATCH {
            match body.frame().now_or_never() {
                Some(Some(Ok(frame))) => {
                    if let Ok(bytes) = frame.into_data() {
                        size += bytes.len();
                        data.push(bytes);
                    }
                }
                Some(Some(Err(never))) => match never {},
                Some(None) => ended = true,
                None => break,
            }
        }
        chunk(&mut out, &data, ended);
        tokio::select! {
            written = stream.write_all(&out) => if written.is_err() { return },
            () = peer.kill.notified() => return killed(peer),
        }
        if ended {
            let _ = stream.shutdown().await;
            return;
        }
        // An idle subscriber holds no buffer; allocating the next one costs far less
        // than the write it is for.
        out = Vec::new();
        data = Vec::new();
    }
}

/// Logs the close of a cut-off subscriber's connection, as the hyper path does.
fn killed(peer: &Peer) {
    tracing::info!(peer = %peer.addr, "closed a connection whose subscriber stopped reading");
}

/// Completes when the client closed its side (or the connection failed). Anything it
/// sends meanwhile is read and ignored.
async fn client_gone(stream: &TcpStream) {
    let mut sink = [0u8; 64];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The status line and headers of `parts`, with `Date`, the framing of the body and
/// `Connection: close` (the connection ends with the response).
fn head(out: &mut Vec<u8>, parts: &http::response::Parts, length: Option<u64>) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n");
    match length {
        Some(length) => {
            out.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
}

/// Appends `data` as one chunk of a chunked body, and the last chunk when `last`.
fn chunk(out: &mut Vec<u8>, data: &[Bytes], last: bool) {
    let size: usize = data.iter().map(Bytes::len).sum();
    if size > 0 {
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        for bytes in data {
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(b"\r\n");
    }
    if last {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_whole_bodiless_subscribe_heads() {
        let head = b"GET /v1/stream?topic=a HTTP/1.1\r\nhost: x\r\nlast-event-id: 7\r\n\r\n";
        let (request, len) = parse_subscribe(head).unwrap();
        assert_eq!(len, head.len());
        assert_eq!(request.uri().query(), Some("topic=a"));
        assert_eq!(request.headers()["last-event-id"], "7");
        let zero = b"GET /v1/stream?topic=a HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_subscribe(zero).is_some());
        // Bytes after the head (a pipelined request, a body) are hyper's to read.
        let mut more = head.to_vec();
        more.extend_from_slice(b"GET /healthz");
        assert!(parse_subscribe(&more).is_none());

        for other in [
            &b"GET /v1/stream?topic=a HTTP/1.1\r\nhost: x\r\n"[..],
            b"GET /v1/stream?topic=a HTTP/1.0\r\nhost: x\r\n\r\n",
            b"POST /v1/stream?topic=a HTTP/1.1\r\nhost: x\r\n\r\n",
            b"HEAD /v1/stream?topic=a HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET /v1/streams?topic=a HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET /v1/ws?topic=a HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc",
            b"GET /v1/stream HTTP/1.1\r\ncontent-length: 3\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 5\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\ncontent-length: +0\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            b"GET /v1/stream HTTP/1.1\r\nbad header\r\n\r\n",
            b"",
        ] {
            assert!(
                parse_subscribe(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn chunks_carry_every_frame_once() {
        let mut out = Vec::new();
        chunk(
            &mut out,
            &[
                Bytes::from_static(b"data: a\n\n"),
                Bytes::from_static(b"data: b\n\n"),
            ],
            false,
        );
        assert_eq!(out, b"12\r\ndata: a\n\ndata: b\n\n\r\n");
        out.clear();
        chunk(&mut out, &[], true);
        assert_eq!(out, b"0\r\n\r\n");
    }

    proptest::proptest! {
        /// Whatever a client sends first, looking at it never panics, and a head taken is
        /// all of the bytes seen.
        #[test]
        fn any_first_bytes_are_safe(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Some((_, len)) = parse_subscribe(&bytes) {
                proptest::prop_assert_eq!(len, bytes.len());
            }
        }

        /// A subscribe head cut anywhere before its end is not taken.
        #[test]
        fn partial_heads_are_left_to_hyper(cut in 0usize..60) {
            let head = b"GET /v1/stream?topic=abc HTTP/1.1\r\nhost: x\r\n\r\n";
            let cut = cut.min(head.len() - 1);
            proptest::prop_assert!(parse_subscribe(&head[..cut]).is_none());
        }
    }
}
