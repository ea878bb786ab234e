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
//! byte). A buffer is given back once written, so an idle subscriber holds none; and the
//! usual write, one frame with nothing waiting, needs none: the frame goes out from where
//! it lies, between its chunk's size line and CRLF, in one vectored write, and only what
//! the socket does not take is copied.
//!
//! Anything else goes to hyper untouched: the head is only peeked, so nothing is consumed
//! unless this module takes the connection.
//!
//! Publishers are served here too ([`publishes`]): a connection whose first bytes start a
//! `POST /v1/publish` is read by this module for as long as each request on it is exactly
//! one whole publish with its `Content-Length` body (see [`parse_publish`]); each is
//! answered by the same handler as hyper's (`App::publish_direct`) and the connection is
//! kept alive. hyper's per-request machinery (its dispatcher, header map, read-ahead
//! buffer, body channel and header timer) held about an eighth of the gateway's samples
//! at the unicast knee; served here, a unicast event costs about 7% less CPU
//! (docs/performance.md). The head is not turned into `http` types at all: the handler
//! reads it as [`RawHead`], views of the read buffer behind the same `Headers` trait as
//! hyper's header map, and the body as a slice of the same buffer (about a quarter of
//! the user-space instructions of a unicast event went, counted by callgrind). At the
//! first request that is anything else, the
//! connection goes to hyper with the bytes already read in front of it ([`Rewound`]), and
//! hyper is the judge from then on.

use std::{
    cell::RefCell,
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::future::Either;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tideway_core::Store;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
    sync::watch,
    time::Instant,
};

use crate::{
    app::{App, Peer},
    cors,
    head::Headers,
    response::{JsonAnswer, Response},
};

/// How much of a connection's first bytes are looked at. A subscribe head is a few hundred
/// bytes (a token in a header adds a few hundred more); a larger one goes to hyper.
const PEEK: usize = 4096;

/// The most a single write carries; more that is ready waits for the next one.
const MAX_BATCH: usize = 64 * 1024;

/// The routes served here.
const STREAM_PATH: &str = "/v1/stream";
const PUBLISH_PATH: &str = "/v1/publish";

/// The most of one publish (head and body) read here; a larger one goes to hyper.
const MAX_PUBLISH: usize = 16 * 1024;

/// What a connection's first bytes are, for this module.
pub(crate) enum First {
    /// One whole bodiless subscribe head, now read from the connection.
    Subscribe(Box<Request<()>>),
    /// The start of a publish: for [`publishes`], nothing read yet.
    Publish,
    /// Anything else: hyper's, nothing read.
    Other,
}

/// Looks at the first bytes of `stream` (when `enabled`): reads the head of a subscribe
/// this module serves, and says whether a publish starts; otherwise leaves the connection
/// as it was, for hyper.
pub(crate) async fn take_first(stream: &mut TcpStream, enabled: bool) -> io::Result<First> {
    if !enabled {
        return Ok(First::Other);
    }
    let mut buf = vec![0u8; PEEK];
    let seen = stream.peek(&mut buf).await?;
    let seen = &buf[..seen];
    if let Some((request, head_len)) = parse_subscribe(seen) {
        // The head is in the socket's receive queue; take exactly it.
        stream.read_exact(&mut buf[..head_len]).await?;
        return Ok(First::Subscribe(Box::new(request)));
    }
    let publish = seen
        .strip_prefix(b"POST /v1/publish")
        .is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'?')));
    Ok(if publish {
        First::Publish
    } else {
        First::Other
    })
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
    let mut headers = NO_HEADERS;
    let (head, head_len) = parse_head(bytes, &mut headers, "GET", STREAM_PATH).ok()?;
    if head_len != bytes.len() || body_length(&head)? != 0 {
        return None;
    }
    Some((head.to_request().ok()?, head_len))
}

/// Why the bytes read so far are not a request served here.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unserved {
    /// Not whole yet: more is read.
    Partial,
    /// Anything else: hyper's.
    Hyper,
}

/// The most headers a head served here has; one with more is hyper's.
const MAX_HEADERS: usize = 64;

/// Room for a head's headers, left uninitialised: httparse writes the ones it finds.
/// Filling all 64 slots for the six or so a publish has was most of the publish loop's
/// own instructions (docs/performance.md).
pub(crate) type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Empty [`HeaderSlots`] (`let mut headers = NO_HEADERS;`): a constant, so each use is
/// the uninitialised array itself, with nothing written or copied.
const NO_HEADERS: HeaderSlots<'static> = [const { MaybeUninit::uninit() }; MAX_HEADERS];

/// A request head as this module read it: views of the connection's read buffer, no copy
/// and no header map. Only a head [`parse_head`] accepted is one, so everything in it is
/// what the `http` types would accept too.
pub(crate) struct RawHead<'b, 'h> {
    method: &'b str,
    /// The request target, origin-form (`/path?query`).
    target: &'b str,
    headers: &'h [httparse::Header<'b>],
}

impl RawHead<'_, '_> {
    /// The request target's length, for the head-size limit.
    pub(crate) fn target_len(&self) -> usize {
        self.target.len()
    }

    /// The same head as an `http` request, for the handlers that take one.
    fn to_request(&self) -> Result<Request<()>, Unserved> {
        let mut request = Request::builder()
            .method(Method::from_bytes(self.method.as_bytes()).map_err(|_| Unserved::Hyper)?)
            .uri(self.target)
            .version(Version::HTTP_11)
            .body(())
            .map_err(|_| Unserved::Hyper)?;
        let map = request.headers_mut();
        for header in self.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(header.name.as_bytes()),
                HeaderValue::from_bytes(header.value),
            ) else {
                return Err(Unserved::Hyper);
            };
            map.append(name, value);
        }
        Ok(request)
    }
}

impl Headers for RawHead<'_, '_> {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|header| (header.name.as_bytes(), header.value))
    }
}

/// The head at the start of `bytes` (its headers parsed into `headers`), and its length,
/// if it is a `method` request for `route` over HTTP/1.1 that this module may serve: no
/// `Transfer-Encoding`, `Upgrade` or `Expect`, a target of plain URI characters, and
/// header names and values the `http` types accept.
fn parse_head<'b, 'h>(
    bytes: &'b [u8],
    headers: &'h mut HeaderSlots<'b>,
    method: &str,
    route: &str,
) -> Result<(RawHead<'b, 'h>, usize), Unserved> {
    let mut parsed = httparse::Request::new(&mut []);
    let head_len = match parsed.parse_with_uninit_headers(bytes, headers) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => return Err(Unserved::Partial),
        Err(_) => return Err(Unserved::Hyper),
    };
    let (Some(sent), Some(target)) = (parsed.method, parsed.path) else {
        return Err(Unserved::Hyper);
    };
    let asked = target.split_once('?').map_or(target, |(route, _)| route);
    if sent != method
        || asked != route
        || parsed.version != Some(1)
        || !target.bytes().fold(true, |ok, b| ok & plain_uri_byte(b))
    {
        return Err(Unserved::Hyper);
    }
    // Header names and values are not checked again: httparse refuses a name that is not
    // a token and a value byte that is a control other than tab, as the `http` types do
    // (`a_head_taken_is_one_the_http_types_accept` holds the two to each other).
    let head = RawHead {
        method: sent,
        target,
        headers: parsed.headers,
    };
    // One pass over the headers, each name looked at only if its length is one of the
    // three's (three lookups were three passes: a third of this function beyond httparse).
    let hyper_only = |name: &[u8]| match name.len() {
        17 => name.eq_ignore_ascii_case(b"transfer-encoding"),
        7 => name.eq_ignore_ascii_case(b"upgrade"),
        6 => name.eq_ignore_ascii_case(b"expect"),
        _ => false,
    };
    if head.each().any(|(name, _)| hyper_only(name)) {
        return Err(Unserved::Hyper);
    }
    Ok((head, head_len))
}

/// A byte of a request target this module takes as it is: letters, digits and the URI
/// punctuation that means the same escaped or not to every parser (RFC 3986's unreserved
/// and sub-delims, `:@/?%`). A target with anything else is hyper's to judge.
fn plain_uri_byte(b: u8) -> bool {
    const PLAIN: [bool; 256] = byte_table(b"-._~!$&'()*+,;=:@/?%");
    PLAIN[usize::from(b)]
}

/// A table of the bytes that are ASCII letters, digits or one of `more`.
const fn byte_table(more: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < more.len() {
        table[more[i] as usize] = true;
        i += 1;
    }
    table
}

/// The body's length a head announces: 0 without `Content-Length`, else its one value,
/// plain ASCII digits. `None` (hyper's to judge) for two of them, even equal, a sign, a
/// space or a list.
fn body_length(head: &impl Headers) -> Option<usize> {
    let mut lengths = head.values("content-length");
    match (lengths.next(), lengths.next()) {
        (None, _) => Some(0),
        (Some(digits), None) => {
            if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(digits).ok()?.parse().ok()
        }
        (Some(_), Some(_)) => None,
    }
}

/// One whole `POST /v1/publish` at the start of `bytes` (its headers parsed into
/// `headers`): its head, the head's length and the body's. Not yet whole but within
/// [`MAX_PUBLISH`]: [`Unserved::Partial`]; anything else (another request, a body
/// announced otherwise than by one plain `Content-Length`, more than [`MAX_PUBLISH`]
/// bytes): [`Unserved::Hyper`]. The edge policy is the subscribe path's: take only what
/// hyper would serve the same way. A publish here is a `POST /v1/publish` over HTTP/1.1
/// whose body is announced by exactly one `Content-Length` of plain digits, with no
/// `Transfer-Encoding`, `Upgrade` or `Expect` (a publish that waits for `100 Continue` is
/// the drop path's, hyper's); head and body within [`MAX_PUBLISH`]. Bytes after it (the
/// next request, pipelined) are left where they are.
pub(crate) fn parse_publish<'b, 'h>(
    bytes: &'b [u8],
    headers: &'h mut HeaderSlots<'b>,
) -> Result<(RawHead<'b, 'h>, usize, usize), Unserved> {
    match parse_head(bytes, headers, "POST", PUBLISH_PATH) {
        Ok((head, head_len)) => match body_length(&head) {
            Some(body_len) if head_len + body_len > MAX_PUBLISH => Err(Unserved::Hyper),
            Some(body_len) if head_len + body_len > bytes.len() => Err(Unserved::Partial),
            Some(body_len) => Ok((head, head_len, body_len)),
            None => Err(Unserved::Hyper),
        },
        Err(Unserved::Partial) if bytes.len() < MAX_PUBLISH => Err(Unserved::Partial),
        Err(_) => Err(Unserved::Hyper),
    }
}

/// A connection handed to hyper, with what was read of its next request.
pub(crate) struct Handover {
    pub(crate) io: Rewound,
    /// How long its next request's head has been awaited, which hyper's header timeout
    /// counts too.
    pub(crate) waited: Duration,
}

/// Serves publishes on `stream` (whose first bytes start one) until it closes, the
/// server stops, or a request arrives that is not exactly one whole publish: then the
/// connection is returned for hyper, with the bytes read of that request in front.
///
/// A request's head and body must arrive within `header_read_timeout` of the moment the
/// connection was ready for it (the accept, or the previous answer); a connection idle that
/// long is closed, as hyper closes its idle ones. A request cut short by the timeout or by
/// the client's close goes to hyper, which answers it its way.
pub(crate) async fn publishes<S: Store>(
    mut stream: TcpStream,
    app: &App<S>,
    peer: &Peer,
    stopping: &watch::Receiver<bool>,
    header_read_timeout: Duration,
    accepted: Instant,
) -> Option<Handover> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut waiting_since = accepted;
    // Both armed once for the connection's life. Made anew for every request, as a
    // `timeout_at` and a `wait_for` are, each takes a lock shared by every connection
    // (tokio's timer driver; the stop signal's waiter list) to register and again to
    // drop. The deadline is the first request's; when it passes it is moved to the
    // request waited for then, so a busy connection does not move it on every request.
    let deadline = tokio::time::sleep_until(accepted + header_read_timeout);
    let mut stop_watch = stopping.clone();
    let stopped = async move {
        // A closed channel means the server is gone: stop as well.
        let _ = stop_watch.wait_for(|&stop| stop).await;
    };
    tokio::pin!(deadline, stopped);
    let handover = |stream, buf: BytesMut, since: Instant| {
        Some(Handover {
            io: Rewound {
                read: buf.freeze(),
                stream,
            },
            waited: since.elapsed(),
        })
    };
    // The answers' buffer, kept for the connection's life (a publisher's connection
    // answers request after request).
    let mut out = Vec::new();
    // Whether `deadline`, as last armed, has been polled with this task's waker: it wakes
    // the task when it fires, so until then a wait need not poll it again (a poll is the
    // timer's bookkeeping, once per request).
    let mut deadline_armed = false;
    loop {
        let mut headers = NO_HEADERS;
        let (head, head_len, body_len) = match parse_publish(&buf, &mut headers) {
            Ok(whole) => whole,
            Err(Unserved::Hyper) => return handover(stream, buf, waiting_since),
            Err(Unserved::Partial) => {
                buf.reserve(4096.min(MAX_PUBLISH - buf.len()).max(1));
                let idle = buf.is_empty();
                let awaited = std::future::poll_fn(|cx| {
                    if let Poll::Ready(read) = std::pin::pin!(stream.read_buf(&mut buf)).poll(cx) {
                        return Poll::Ready(Awaited::Read(read));
                    }
                    if !deadline_armed || deadline.is_elapsed() {
                        if deadline.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Awaited::Deadline);
                        }
                        deadline_armed = true;
                    }
                    // An idle connection closes when the server stops; a request under
                    // way is read to its end first.
                    if idle && stopped.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Awaited::Stop);
                    }
                    Poll::Pending
                })
                .await;
                // What was read; `None` when the deadline came first.
                let read = match awaited {
                    Awaited::Read(read) => Some(read),
                    Awaited::Deadline => None,
                    Awaited::Stop => return None,
                };
                match read {
                    None if Instant::now() < waiting_since + header_read_timeout => {
                        // Armed for an earlier request: this one's time is not up.
                        deadline.as_mut().reset(waiting_since + header_read_timeout);
                        deadline_armed = false;
                        continue;
                    }
                    Some(Ok(0)) | None if idle => return None,
                    Some(Ok(0)) | None => return handover(stream, buf, waiting_since),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => {
                        tracing::debug!(peer = %peer.addr, error = %err, "connection failed");
                        return None;
                    }
                }
            }
        };
        // Head and body are read where they lie in the buffer: the handler copies the
        // body once, at its own length (as it does hyper's), and the request's bytes are
        // let go of before the next read.
        let body = &buf[head_len..head_len + body_len];
        let close = wants_close(&head);
        let answer = app.publish_direct(&head, body).await;
        buf.advance(head_len + body_len);
        // A publish's answer is whole: head and body in one write.
        out.clear();
        let close = match answer {
            Ok((answer, cors)) => {
                let close = close || answer.close || *stopping.borrow();
                json_whole(&mut out, &answer, &cors, close);
                close
            }
            Err(response) => {
                let close = close || wants_close(response.headers()) || *stopping.borrow();
                whole(&mut out, response, close).await;
                close
            }
        };
        if stream.write_all(&out).await.is_err() {
            return None;
        }
        if close {
            let _ = stream.shutdown().await;
            return None;
        }
        waiting_since = Instant::now();
    }
}

/// What a publisher's connection waited for came first.
enum Awaited {
    /// Bytes of a request, its end, or a failure.
    Read(io::Result<usize>),
    /// The deadline for the request's head and body.
    Deadline,
    /// The server is stopping (waited for only while no request is under way).
    Stop,
}

/// Whether `headers` ask for the connection to close after this exchange.
fn wants_close(headers: &impl Headers) -> bool {
    headers.values("connection").any(|value| {
        value
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// A connection with bytes already read from it in front: what hyper reads first.
pub(crate) struct Rewound {
    read: Bytes,
    stream: TcpStream,
}

impl Rewound {
    /// `stream` with nothing read from it.
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            read: Bytes::new(),
            stream,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Writes `response` on `stream` and, for a stream body, keeps writing until the body
/// ends, the client goes away or `peer.kill` fires.
///
/// Not an `async fn`: the response is taken apart before the future is made, so a
/// subscriber's future (which lives as long as the subscriber) holds its body and not the
/// whole response — an `async fn` keeps its arguments for its whole life. It owns the
/// connection's `peer`, so it can be a task of its own (see `server::run`).
pub(crate) fn serve(
    stream: TcpStream,
    response: Response,
    peer: Peer,
) -> impl Future<Output = ()> + Send + 'static {
    if response.body().size_hint().exact().is_some() {
        // A whole answer (an error): head and body in one write. Boxed: the future of a
        // stream, which lives as long as its subscriber, need not keep room for it.
        return Either::Left(Box::pin(async move {
            let mut stream = stream;
            let mut out = Vec::new();
            whole(&mut out, response, true).await;
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
            drop(peer);
        }));
    }
    let (parts, body) = response.into_parts();
    // The head goes out with the first frames.
    let mut unsent = Vec::with_capacity(512);
    head(&mut unsent, parts.status, parts.headers.each(), None, true);
    Either::Right(stream_body(stream, body, unsent, peer))
}

/// How a streamed body's connection finished.
#[derive(PartialEq, Eq)]
enum Finished {
    /// The body ended and its last chunk went out: the connection is shut down.
    Ended,
    /// The client went away, the connection failed or it was killed: nothing more to say.
    Dropped,
}

/// Writes `unsent` (the head) and the chunks of `body` until it ends, then shuts the
/// connection down.
async fn stream_body(
    mut stream: TcpStream,
    mut body: crate::response::Body,
    mut unsent: Vec<u8>,
    peer: Peer,
) {
    let peer = &peer;
    let finished = 'streaming: {
        // Armed once for the stream's life: made anew for every event, each of the two cost a
        // lock to register and another to drop, per event and subscriber.
        let gone = client_gone(&stream);
        let kill = peer.kill.notified();
        tokio::pin!(gone, kill);
        let mut ended = false;
        // Whether the body's last poll, made with this task's waker, found nothing: it will
        // wake the task when a frame comes, so the wait below need not ask it again first
        // (a poll of the body is its queue's lock and its heartbeat's timer, per event).
        // Cleared by anything else the task awaits, whose wake-up may have been the body's.
        let mut body_waits = false;
        loop {
            // With nothing to write, wait for the next frame, watching for the client's close
            // and for a kill.
            let mut first = None;
            if unsent.is_empty() {
                let frame = std::future::poll_fn(|cx| {
                    if !std::mem::take(&mut body_waits)
                        && let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx)
                    {
                        return Poll::Ready(Ok(frame));
                    }
                    if kill.as_mut().poll(cx).is_ready() {
                        killed(peer);
                        return Poll::Ready(Err(()));
                    }
                    match gone.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Err(())),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await;
                let Ok(frame) = frame else {
                    break 'streaming Finished::Dropped;
                };
                match frame {
                    Some(Ok(frame)) => first = frame.into_data().ok(),
                    Some(Err(never)) => match never {},
                    None => ended = true,
                }
            }
            // Whatever else is ready goes out in the same write. Polled with the task's
            // own waker, so the last poll, which finds nothing, is the wait's too.
            let mut more: Vec<Bytes> = Vec::new();
            let mut size = first.as_ref().map_or(0, Bytes::len);
            while !ended && size < MAX_BATCH {
                let polled =
                    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)))
                        .await;
                match polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(bytes) = frame.into_data() {
                            size += bytes.len();
                            match first {
                                None => first = Some(bytes),
                                Some(_) => more.push(bytes),
                            }
                        }
                    }
                    Poll::Ready(Some(Err(never))) => match never {},
                    Poll::Ready(None) => ended = true,
                    Poll::Pending => {
                        body_waits = true;
                        break;
                    }
                }
            }
            let mut sent = 0;
            // The usual case, one frame and nothing waiting: written at once as one chunk
            // (an empty one would read as the last chunk, so it takes the path below),
            // with nothing allocated. Only what the socket does not take is copied into
            // `unsent`, and goes out below.
            if let Some(frame) = &first
                && !frame.is_empty()
                && more.is_empty()
                && unsent.is_empty()
                && !ended
            {
                match try_write_chunk(&stream, frame) {
                    Ok((0, _)) => break 'streaming Finished::Dropped,
                    Ok((n, whole)) if n == whole => continue,
                    Ok((n, _)) => sent = n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break 'streaming Finished::Dropped,
                }
            }
            // Several frames, the head, the last chunk, or what the socket did not take:
            // one allocation, of the size written.
            unsent.reserve_exact(size + CHUNK_FRAMING);
            if let Some(frame) = first {
                more.insert(0, frame);
            }
            chunk(&mut unsent, &more, ended);
            // At once when the socket takes it all (the usual case), else as it drains.
            while sent < unsent.len() {
                match stream.try_write(&unsent[sent..]) {
                    Ok(0) => break 'streaming Finished::Dropped,
                    Ok(n) => sent += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        body_waits = false;
                        tokio::select! {
                            biased;
                            () = &mut kill => {
                                killed(peer);
                                break 'streaming Finished::Dropped;
                            }
                            ready = std::future::poll_fn(|cx| stream.poll_write_ready(cx)) => {
                                if ready.is_err() {
                                    break 'streaming Finished::Dropped;
                                }
                            }
                        }
                    }
                    Err(_) => break 'streaming Finished::Dropped,
                }
            }
            if ended {
                break 'streaming Finished::Ended;
            }
            // An idle subscriber holds no buffer; allocating the next one costs far less
            // than the write it is for.
            unsent = Vec::new();
        }
    };
    if finished == Finished::Ended {
        let _ = stream.shutdown().await;
    }
}

/// `response`, whose body is whole, appended to `out` as the bytes of one write: the head
/// (with the body's length, and `Connection: close` when `close`), then the body.
async fn whole(out: &mut Vec<u8>, response: Response, close: bool) {
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    out.reserve(512 + body.len());
    head(
        out,
        parts.status,
        parts.headers.each(),
        Some(body.len() as u64),
        close,
    );
    out.extend_from_slice(&body);
}

/// A JSON answer with its CORS headers, appended to `out` as [`whole`] appends a
/// response: the same head and body, without making a response first.
fn json_whole(out: &mut Vec<u8>, answer: &JsonAnswer, cors: &cors::Allowed, close: bool) {
    let content_type = (
        http::header::CONTENT_TYPE.as_str().as_bytes(),
        JsonAnswer::CONTENT_TYPE.as_bytes(),
    );
    out.reserve(512 + answer.body.len());
    head(
        out,
        answer.status,
        std::iter::once(content_type).chain(cors.headers()),
        Some(answer.body.len() as u64),
        close,
    );
    out.extend_from_slice(&answer.body);
}

/// Logs the close of a cut-off subscriber's connection, as the hyper path does.
fn killed(peer: &Peer) {
    tracing::info!(peer = %peer.addr, "closed a connection whose subscriber stopped reading");
}

/// Completes when the client closed its side (or the connection failed). Anything it
/// sends meanwhile is read and ignored.
///
/// Polls the socket's read readiness directly: the waker is kept by the socket's
/// registration, not in this future, which an idle subscriber holds for its whole life.
/// (Only the last waker given to `poll_read_ready` is woken: this stream's task is the
/// only one that reads the socket.)
fn client_gone(stream: &TcpStream) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        loop {
            match stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            let mut sink = [0u8; 64];
            match stream.try_read(&mut sink) {
                Ok(0) => return Poll::Ready(()),
                // Read and ignored; or not readable after all (the readiness is cleared):
                // either way, look again.
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    })
}

/// The status line and `headers`, with `Date`, the framing of the body and, when the
/// connection ends with the response, `Connection: close`.
fn head<'a>(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    length: Option<u64>,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    date(out);
    out.extend_from_slice(b"\r\n");
    match length {
        Some(length) => {
            // Into the buffer itself, without `fmt`'s machinery (a tenth of a publish's
            // own instructions went to formatting its two numbers).
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the `Date` header's value for now, formatted once a second per thread (as
/// hyper does: it changes once a second, and publishes are many).
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
}

/// The most bytes [`chunk`] adds around its data: a size line (16 hex digits at most, and
/// CRLF), the CRLF after the data, and the last chunk.
const CHUNK_FRAMING: usize = 16 + 2 + 2 + 5;

/// A chunk's size line: `size` in lower-case hex digits without leading zeros, and CRLF,
/// in a buffer of its own and its length.
fn size_line(size: usize) -> ([u8; 18], usize) {
    let mut line = [0u8; 18];
    let digits = ((usize::BITS - size.leading_zeros()).div_ceil(4).max(1)) as usize;
    for (at, digit) in (0..digits).rev().enumerate() {
        line[at] = b"0123456789abcdef"[(size >> (digit * 4)) & 0xf];
    }
    line[digits..digits + 2].copy_from_slice(b"\r\n");
    (line, digits + 2)
}

/// The largest chunk [`try_write_chunk`] copies to write in one piece. A socket's `send`
/// of one buffer costs the kernel less than a `writev` of three (`writev` goes through the
/// file layer first: about 4% of the gateway's CPU at the unicast bench's 32k events/s,
/// by `perf`), and copying a frame of this size costs less than that difference.
const CONTIGUOUS_CHUNK: usize = 2048;

/// Writes `frame` on `stream` as one chunk (its size line, the frame, CRLF), as much as
/// the socket takes without waiting: returns how many bytes it took and the chunk's length.
/// A chunk of up to [`CONTIGUOUS_CHUNK`] bytes is copied to the stack and sent in one
/// piece; a larger one is written from where its frame lies.
fn try_write_chunk(stream: &TcpStream, frame: &[u8]) -> io::Result<(usize, usize)> {
    let (line, line_len) = size_line(frame.len());
    let parts: [&[u8]; 3] = [&line[..line_len], frame, b"\r\n"];
    let whole: usize = parts.iter().map(|part| part.len()).sum();
    if whole <= CONTIGUOUS_CHUNK {
        let mut chunk = [0u8; CONTIGUOUS_CHUNK];
        let mut at = 0;
        for part in parts {
            chunk[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        return stream.try_write(&chunk[..whole]).map(|n| (n, whole));
    }
    stream
        .try_write_vectored(&parts.map(io::IoSlice::new))
        .map(|n| (n, whole))
}

/// Appends `data` as one chunk of a chunked body, and the last chunk when `last`.
fn chunk(out: &mut Vec<u8>, data: &[Bytes], last: bool) {
    let size: usize = data.iter().map(Bytes::len).sum();
    if size > 0 {
        let (line, len) = size_line(size);
        out.extend_from_slice(&line[..len]);
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
    use http::header;

    use crate::head::head_size;

    /// The lengths of head and body of the publish `bytes` begins with, if taken.
    fn publish_len(bytes: &[u8]) -> Result<(usize, usize), Unserved> {
        let mut headers = NO_HEADERS;
        parse_publish(bytes, &mut headers).map(|(_, head, body)| (head, body))
    }

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
    fn takes_only_whole_plain_publishes() {
        let publish = b"POST /v1/publish HTTP/1.1\r\nx-sse-topic: a\r\nx-sse-id: 1\r\ncontent-length: 3\r\n\r\nabc";
        let mut headers = NO_HEADERS;
        let (raw, head, body) =
            parse_publish(publish, &mut headers).expect("a plain publish is taken");
        assert_eq!((head + body, body), (publish.len(), 3));
        assert_eq!(raw.get("x-sse-id"), Some(&b"1"[..]));
        assert_eq!(raw.target, "/v1/publish");
        // The next request, pipelined, is left where it is.
        let mut two = publish.to_vec();
        two.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(matches!(publish_len(&two), Ok((h, b)) if h + b == publish.len()));
        // No length: an empty body (the handler refuses an empty event as it would).
        let empty = b"POST /v1/publish?topic=a HTTP/1.1\r\nx-sse-id: 1\r\n\r\n";
        assert!(matches!(publish_len(empty), Ok((_, 0))));
        // Cut anywhere before its end, it is partial: more is read.
        for cut in 0..publish.len() {
            assert!(
                matches!(publish_len(&publish[..cut]), Err(Unserved::Partial)),
                "cut at {cut}"
            );
        }
        for other in [
            &b"POST /v1/publish/batch HTTP/1.1\r\ncontent-length: 2\r\n\r\n[]"[..],
            b"POST /v1/publish HTTP/1.0\r\ncontent-length: 1\r\n\r\na",
            b"PUT /v1/publish HTTP/1.1\r\ncontent-length: 1\r\n\r\na",
            b"GET /v1/publish HTTP/1.1\r\n\r\n",
            b"POST /v1/publish HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
            b"POST /v1/publish HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\na",
            b"POST /v1/publish HTTP/1.1\r\ncontent-length: +1\r\n\r\na",
            b"POST /v1/publish HTTP/1.1\r\ncontent-length: 1, 1\r\n\r\na",
            b"POST /v1/publish HTTP/1.1\r\ncontent-length: \r\n\r\n",
            b"POST /v1/publish HTTP/1.1\r\ncontent-length: 99999999999\r\n\r\n",
            b"POST /v1/publish HTTP/1.1\r\ncontent-length: 20000\r\n\r\n",
            b"POST /v1/publish HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"POST /v1/publish HTTP/1.1\r\nupgrade: x\r\ncontent-length: 1\r\n\r\na",
            b"POST /v1/publish HTTP/1.1\r\nbad header\r\n\r\n",
            b"POST http://x/v1/publish HTTP/1.1\r\ncontent-length: 1\r\n\r\na",
        ] {
            assert!(
                matches!(publish_len(other), Err(Unserved::Hyper)),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        // A head that never ends within the limit is hyper's.
        let mut endless = b"POST /v1/publish HTTP/1.1\r\nx-pad: ".to_vec();
        endless.resize(MAX_PUBLISH, b'p');
        assert!(matches!(publish_len(&endless), Err(Unserved::Hyper)));
    }

    #[test]
    fn byte_tables_hold_exactly_their_bytes() {
        for b in 0..=255u8 {
            let alnum = b.is_ascii_alphanumeric();
            assert_eq!(
                plain_uri_byte(b),
                alnum || b"-._~!$&'()*+,;=:@/?%".contains(&b),
                "{b:#x}"
            );
        }
    }

    #[test]
    fn close_is_a_token_of_connection() {
        let headers = |value: &'static str| {
            let mut map = http::HeaderMap::new();
            map.insert(header::CONNECTION, HeaderValue::from_static(value));
            map
        };
        assert!(wants_close(&headers("close")));
        assert!(wants_close(&headers("keep-alive, Close")));
        assert!(!wants_close(&headers("keep-alive")));
        assert!(!wants_close(&headers("closed")));
        assert!(!wants_close(&http::HeaderMap::new()));
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

    /// A frame written at once is the chunk [`chunk`] would write for it, on either side
    /// of [`CONTIGUOUS_CHUNK`]: copied and sent in one piece, or written in three parts.
    #[tokio::test]
    async fn a_frame_written_at_once_is_its_chunk() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // Around a frame of 256..4,095 bytes, a chunk adds 7: three hex digits and CRLF
        // before it, CRLF after.
        let at_limit = CONTIGUOUS_CHUNK - 7;
        for len in [1, 255, at_limit - 1, at_limit, at_limit + 1, 4000] {
            let frame = Bytes::from(vec![b'x'; len]);
            let mut expected = Vec::new();
            chunk(&mut expected, std::slice::from_ref(&frame), false);
            client.writable().await.unwrap();
            let (took, whole) = try_write_chunk(&client, &frame).unwrap();
            assert_eq!(
                (took, whole),
                (expected.len(), expected.len()),
                "frame of {len}"
            );
            let mut read = vec![0; whole];
            server.read_exact(&mut read).await.unwrap();
            assert_eq!(read, expected, "frame of {len}");
        }
    }

    proptest::proptest! {
        /// A chunk's size line is its data's length in hex, whatever the frames.
        #[test]
        fn a_chunk_says_its_size_in_hex(sizes in proptest::collection::vec(0usize..5000, 0..5), last: bool) {
            let data: Vec<Bytes> = sizes.iter().map(|&n| Bytes::from(vec![b'x'; n])).collect();
            let total: usize = sizes.iter().sum();
            let mut out = Vec::new();
            chunk(&mut out, &data, last);
            let mut expected = Vec::new();
            if total > 0 {
                expected.extend_from_slice(format!("{total:x}\r\n").as_bytes());
                expected.extend(std::iter::repeat_n(b'x', total));
                expected.extend_from_slice(b"\r\n");
            }
            if last {
                expected.extend_from_slice(b"0\r\n\r\n");
            }
            proptest::prop_assert_eq!(out, expected);
        }

        /// A size line is the size as `fmt` writes it in hex, from zero to the largest.
        #[test]
        fn a_size_line_is_fmt_lower_hex(n in proptest::prop_oneof![proptest::num::usize::ANY, 0usize..300, proptest::strategy::Just(usize::MAX)]) {
            let (line, len) = size_line(n);
            let expected = format!("{n:x}\r\n");
            proptest::prop_assert_eq!(&line[..len], expected.as_bytes());
        }

        /// Whatever a client sends first, looking at it never panics, and a head taken is
        /// all of the bytes seen.
        #[test]
        fn any_first_bytes_are_safe(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Some((_, len)) = parse_subscribe(&bytes) {
                proptest::prop_assert_eq!(len, bytes.len());
            }
        }

        /// Whatever a publisher sends, looking at it never panics, and a publish taken lies
        /// within the bytes seen and the limit.
        #[test]
        fn any_publish_bytes_are_safe(
            head in proptest::sample::select(vec![
                &b"POST /v1/publish HTTP/1.1\r\n"[..], b"POST /v1/publish?topic=a HTTP/1.1\r\n", b"",
            ]),
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        ) {
            let mut all = head.to_vec();
            all.extend_from_slice(&bytes);
            match publish_len(&all) {
                Ok((head, body)) => {
                    proptest::prop_assert!(head + body <= all.len().min(MAX_PUBLISH));
                }
                Err(Unserved::Partial) => proptest::prop_assert!(all.len() < MAX_PUBLISH),
                Err(Unserved::Hyper) => {}
            }
        }

        /// Whatever names and values a publish's headers carry, a head taken here is one
        /// the `http` types accept as it is (what `RawHead` promises the handlers).
        #[test]
        fn a_head_taken_is_one_the_http_types_accept(
            sent in proptest::collection::vec(
                (
                    // Mostly bytes a name or value may hold, with the ones near the edges
                    // of what the `http` types take.
                    proptest::collection::vec(
                        proptest::sample::select(b"aZ9-_!~|`^.\"(@ \t\x00\x7f\x80\xff".to_vec()),
                        1..8,
                    ),
                    proptest::collection::vec(
                        proptest::sample::select(b"aZ9 \t\"\\,;=\x00\x01\x1f\x7f\x80\xff".to_vec()),
                        0..12,
                    ),
                ),
                0..6,
            ),
            target in "/v1/publish(\\?[ -~]{0,12})?",
        ) {
            let mut bytes = format!("POST {target} HTTP/1.1\r\n").into_bytes();
            for (name, value) in &sent {
                let name: Vec<u8> = name.iter().copied().filter(|&b| !b"\r\n:".contains(&b)).collect();
                let value: Vec<u8> = value.iter().copied().filter(|&b| !b"\r\n".contains(&b)).collect();
                bytes.extend_from_slice(&name);
                bytes.extend_from_slice(b": ");
                bytes.extend_from_slice(&value);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"\r\n");
            let mut headers = NO_HEADERS;
            if let Ok((raw, _, _)) = parse_publish(&bytes, &mut headers) {
                let method = raw.to_request().map(|request| request.method().clone());
                proptest::prop_assert_eq!(
                    method,
                    Ok(Method::POST),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }

        /// A head read here answers every header question as the `http` header map of
        /// the same head does: names in any case, repeated headers in order, the size
        /// the head-size limit counts.
        #[test]
        fn a_raw_head_reads_as_a_header_map(
            sent in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "x-sse-topic", "X-SSE-Topic", "x-sse-id", "X-Sse-Id", "authorization",
                        "Authorization", "origin", "connection", "x-other",
                    ]),
                    "[ -~\t]{0,12}",
                ),
                0..12,
            ),
        ) {
            let mut bytes = b"POST /v1/publish?x=1 HTTP/1.1\r\n".to_vec();
            for (name, value) in &sent {
                bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            bytes.extend_from_slice(b"\r\n");
            let mut headers = NO_HEADERS;
            let (raw, _, _) = parse_publish(&bytes, &mut headers).expect("a plain publish");
            let request = raw.to_request().expect("the same head as a request");
            let map = request.headers();
            for name in ["x-sse-topic", "x-sse-id", "authorization", "origin", "connection", "x-other", "absent"] {
                let from_raw: Vec<&[u8]> = raw.values(name).collect();
                let from_map: Vec<&[u8]> = Headers::values(map, name).collect();
                proptest::prop_assert_eq!(&from_raw, &from_map, "{}", name);
                proptest::prop_assert_eq!(raw.get(name), map.get(name).map(HeaderValue::as_bytes));
            }
            proptest::prop_assert_eq!(
                head_size(&raw, raw.target_len()),
                head_size(map, request.uri().to_string().len())
            );
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
