//! REFERENCE SERVER FOR THE BENCH ONLY — not Tideway, not for any other use.
//!
//! `xtask/ref-server.c` shows how far a figure is from what this machine allows; this one
//! does the same work in Tideway's shape — tokio's multi-threaded runtime, a task per
//! connection, and a publisher that queues the event for each subscriber and wakes the
//! subscriber's task, which writes everything queued in one write — so the distance
//! between the two references is what that shape costs, and the distance from this one to
//! Tideway is what Tideway's own work costs (checks, history, resume, its HTTP framing).
//!
//! Nchan's routes, as the C reference serves them (`tideway-load --target nchan`):
//!
//! - `GET /sub/<topic>`: an SSE stream, unchunked, until the close;
//! - `POST /pub/<topic>`: the body framed once as `data: <body>\n\n` and queued for each
//!   of the topic's subscribers; 201 if it had any, else 202;
//! - anything else: `subscribers: <n>`, and the connection closes.
//!
//! No auth, no limits, no history, no resume, no checks beyond what the load generator
//! sends: it trusts its peer completely. Built and started by `cargo xtask bench`.

#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    io,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// One subscriber: what is queued for it, and its task's wake-up.
#[derive(Default)]
struct Subscriber {
    queued: Mutex<Vec<u8>>,
    wake: Notify,
}

/// Each topic's subscribers.
type Topics = Arc<Mutex<HashMap<Vec<u8>, Vec<Arc<Subscriber>>>>>;

fn main() -> io::Result<()> {
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: ref-tokio PORT (the bench's tokio reference server)");
        std::process::exit(2);
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            let topics = Topics::default();
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                tokio::spawn(connection(stream, topics.clone()));
            }
        })
}

/// `mutex`'s content: no critical section here can leave it half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request's head and body lengths once all of it is in `buf`.
fn request(buf: &[u8]) -> Option<(usize, usize)> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body = buf[..head]
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at_checked(15)?;
            name.eq_ignore_ascii_case(b"content-length:").then(|| {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    (buf.len() >= head + body).then_some((head, body))
}

async fn connection(mut stream: TcpStream, topics: Topics) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..read]);
        while let Some((head, body)) = request(&buf) {
            let path = buf[..head].split(|&b| b == b' ').nth(1).unwrap_or_default();
            if let Some(topic) = path.strip_prefix(b"/sub/") {
                let subscriber = Arc::new(Subscriber::default());
                lock(&topics)
                    .entry(topic.to_vec())
                    .or_default()
                    .push(subscriber.clone());
                return subscribe(stream, &subscriber).await;
            }
            if let Some(topic) = path.strip_prefix(b"/pub/") {
                let data = &buf[head..head + body];
                let mut frame = Vec::with_capacity(data.len() + 8);
                frame.extend_from_slice(b"data: ");
                frame.extend_from_slice(data);
                frame.extend_from_slice(b"\n\n");
                let subscribers = lock(&topics).get(topic).cloned().unwrap_or_default();
                for subscriber in &subscribers {
                    lock(&subscriber.queued).extend_from_slice(&frame);
                    subscriber.wake.notify_one();
                }
                let answer: &[u8] = if subscribers.is_empty() {
                    b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"
                };
                stream.write_all(answer).await?;
            } else {
                let count: usize = lock(&topics).values().map(Vec::len).sum();
                let text = format!("subscribers: {count}\n");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                stream.write_all(answer.as_bytes()).await?;
                return stream.shutdown().await;
            }
            buf.drain(..head + body);
        }
    }
}

/// Streams what is queued for `subscriber` until a write fails. The subscriber stays in
/// its topic's list after that (the bench's subscribers stay to the end of a scenario).
async fn subscribe(mut stream: TcpStream, subscriber: &Subscriber) -> io::Result<()> {
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n",
        )
        .await?;
    loop {
        subscriber.wake.notified().await;
        let queued = std::mem::take(&mut *lock(&subscriber.queued));
        stream.write_all(&queued).await?;
    }
}
