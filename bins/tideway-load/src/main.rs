//! `tideway-load`: drives a running gateway over real sockets and prints what it measured
//! as one JSON object on stdout. `cargo xtask bench` starts the gateway and runs it.
//!
//! Scenarios:
//! - `stalled`: N subscribers that never read, one that reads, E events published; the
//!   gateway's RSS idle, while the stalled ones hold their queues, and after they are
//!   closed; whether the reader got every event.
//! - `drain`: N open streams, then SIGTERM: time until every stream got `tideway.drain`
//!   and until the process exited.
//! - `latency`: one subscriber (on `--sub-addr`, default `--addr`), E publishes on
//!   `--addr` one after another, each timed from before its request to its arrival:
//!   p50, p90, p99 and max. With two nodes of a cluster, that is the cost of the hop.
//! - `drop`: E publishes of `--body` bytes to a topic nobody follows, one after another
//!   on one kept-alive connection: requests/s and the latency of each answer.
//! - `fanout`: N subscribers of one topic read everything while events of `--body` bytes
//!   are published at rising rates (two seconds per step) until p99 publish→receive
//!   passes 250 ms (the 50 ms knee and a little beyond it): per step, delivered events/s,
//!   latency percentiles, lost and duplicated.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// Options shared by the scenarios, from `--name value` pairs.
struct Options {
    addr: SocketAddr,
    /// Where subscribers connect (`latency`); defaults to `addr`.
    sub_addr: SocketAddr,
    key: String,
    pid: u32,
    connections: usize,
    events: usize,
    body: usize,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first().cloned() else {
        bail!(
            "usage: tideway-load <stalled|drain|latency|drop> --addr HOST:PORT --key KEY --pid PID [--sub-addr HOST:PORT] [--connections N] [--events N] [--body BYTES]"
        );
    };
    let value = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr: SocketAddr = value("--addr")
        .context("--addr")?
        .parse()
        .context("--addr HOST:PORT")?;
    let options = Options {
        addr,
        sub_addr: value("--sub-addr")
            .map_or(Ok(addr), |v| v.parse())
            .context("--sub-addr")?,
        key: value("--key").unwrap_or_default(),
        pid: value("--pid").context("--pid")?.parse().context("--pid")?,
        connections: value("--connections")
            .map_or(Ok(1000), |v| v.parse())
            .context("--connections")?,
        events: value("--events")
            .map_or(Ok(2000), |v| v.parse())
            .context("--events")?,
        body: value("--body")
            .map_or(Ok(1024), |v| v.parse())
            .context("--body")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match scenario.as_str() {
            "stalled" => stalled(&options).await,
            "drain" => drain(&options).await,
            "latency" => latency(&options).await,
            "drop" => drop_path(&options).await,
            "fanout" => fanout(&options).await,
            other => bail!("unknown scenario {other:?}"),
        }
    })?;
    println!("{result}");
    Ok(())
}

async fn stalled(options: &Options) -> anyhow::Result<serde_json::Value> {
    let topic = "load-stalled";
    let rss_start = rss_kib(options.pid)?;
    let mut stalled = Vec::with_capacity(options.connections);
    let connect_started = Instant::now();
    for i in 0..options.connections {
        stalled.push(open_stream(options.addr, topic, i, 4096).await?);
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let mut reader = open_stream(options.addr, topic, 0, 256 * 1024).await?;
    wait_metric(
        options.addr,
        "tideway_connections",
        (options.connections + 1) as u64,
    )
    .await?;
    let rss_idle = rss_kib(options.pid)?;

    let target = options.events;
    let reading = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut text = Vec::new();
        let mut events = 0usize;
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok::<usize, std::io::Error>(events);
            }
            text.extend_from_slice(&buf[..n]);
            // Count complete `id:` lines; keep a possible partial line for the next read.
            let cut = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            events += text[..cut].windows(4).filter(|w| w == b"id: ").count();
            text.drain(..cut);
            if events >= target {
                return Ok(events);
            }
        }
    });

    let mut publisher = TcpStream::connect(options.addr).await?;
    publisher.set_nodelay(true)?;
    let body = "x".repeat(options.body);
    let publish_started = Instant::now();
    for n in 0..options.events {
        let status = publish(&mut publisher, &options.key, topic, &format!("e{n}"), &body).await?;
        if status != 202 {
            bail!("publish {n} answered {status}");
        }
    }
    let publish_seconds = publish_started.elapsed().as_secs_f64();
    let delivered = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .context("the reader did not get every event within 60 s")???;
    let cut = metric(options.addr, "tideway_slow_consumers_total").await?;
    let rss_stalled = rss_kib(options.pid)?;
    // Once the write timeout closes them, the stalled connections give their memory back.
    wait_metric(options.addr, "tideway_connections", 0)
        .await
        .ok();
    let rss_closed = rss_kib(options.pid)?;
    drop(stalled);
    let per = |kib: u64| (kib as f64 * 1024.0) / options.connections as f64;
    Ok(json!({
        "scenario": "stalled",
        "stalled_connections": options.connections,
        "events": options.events,
        "body_bytes": options.body,
        "reader_events": delivered,
        "reader_lost": options.events.saturating_sub(delivered),
        "slow_consumers_cut": cut,
        "connect_seconds": connect_seconds,
        "publish_seconds": publish_seconds,
        "rss_kib": { "start": rss_start, "idle": rss_idle, "stalled": rss_stalled, "after_close": rss_closed },
        "bytes_per_idle_connection": per(rss_idle.saturating_sub(rss_start)),
        "bytes_per_stalled_connection": per(rss_stalled.saturating_sub(rss_start)),
    }))
}

async fn latency(options: &Options) -> anyhow::Result<serde_json::Value> {
    let topic = "load-latency";
    let mut subscriber = open_stream(options.sub_addr, topic, 0, 256 * 1024).await?;
    let mut publisher = TcpStream::connect(options.addr).await?;
    publisher.set_nodelay(true)?;
    // The stream counts once the store knows its topic: until then publishes are dropped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while publish(&mut publisher, &options.key, topic, "warm-up", "x").await? != 202 {
        if Instant::now() > deadline {
            bail!("the subscriber's topic never became live");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = "x".repeat(options.body);
    let mut samples = Vec::with_capacity(options.events);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    for n in 0..options.events {
        let id = format!("id: l{n}\n");
        let started = Instant::now();
        let status = publish(&mut publisher, &options.key, topic, &format!("l{n}"), &body).await?;
        if status != 202 {
            bail!("publish {n} answered {status}");
        }
        // Read the stream until this event's id line has arrived.
        while !contains(&pending, id.as_bytes()) {
            let read = tokio::time::timeout(Duration::from_secs(10), subscriber.read(&mut buf))
                .await
                .context("an event within 10 s")??;
            if read == 0 {
                bail!("the stream ended");
            }
            pending.extend_from_slice(&buf[..read]);
        }
        samples.push(started.elapsed().as_secs_f64() * 1e6);
        pending.clear();
    }
    Ok(json!({
        "scenario": "latency",
        "events": options.events,
        "body_bytes": options.body,
        "cross_node": options.addr != options.sub_addr,
        "publish_to_receive_us": percentiles(&mut samples),
    }))
}

async fn drop_path(options: &Options) -> anyhow::Result<serde_json::Value> {
    let mut publisher = TcpStream::connect(options.addr).await?;
    publisher.set_nodelay(true)?;
    let body = "x".repeat(options.body);
    let mut samples = Vec::with_capacity(options.events);
    let started = Instant::now();
    for n in 0..options.events {
        let sent = Instant::now();
        let status = publish(
            &mut publisher,
            &options.key,
            "load-nobody",
            &format!("d{n}"),
            &body,
        )
        .await?;
        if status != 200 {
            bail!("a publish to nobody answered {status}");
        }
        samples.push(sent.elapsed().as_secs_f64() * 1e6);
    }
    let seconds = started.elapsed().as_secs_f64();
    let dropped = metric(options.addr, "tideway_events_dropped_total").await?;
    Ok(json!({
        "scenario": "drop",
        "events": options.events,
        "body_bytes": options.body,
        "requests_per_second": options.events as f64 / seconds,
        "dropped_counted": dropped,
        "answer_us": percentiles(&mut samples),
    }))
}

async fn fanout(options: &Options) -> anyhow::Result<serde_json::Value> {
    use std::sync::{Arc, Mutex};
    let topic = "load-fanout";
    let started_at = Instant::now();
    // Each subscriber records (sequence, latency in µs) of what it reads.
    let records: Arc<Mutex<Vec<(u32, u32, u32)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::with_capacity(options.connections);
    for i in 0..options.connections {
        let mut stream = open_stream(options.addr, topic, i, 256 * 1024).await?;
        let records = records.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut text = Vec::new();
            let mut mine = Vec::new();
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let now = started_at.elapsed().as_micros() as u64;
                text.extend_from_slice(&buf[..n]);
                let cut = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                for line in text[..cut].split(|&b| b == b'\n') {
                    // data: <seq> <sent µs> <padding>
                    if let Some(rest) = line.strip_prefix(b"data: ") {
                        let mut fields = rest.split(|&b| b == b' ');
                        let seq = fields
                            .next()
                            .and_then(|f| std::str::from_utf8(f).ok()?.parse::<u32>().ok());
                        let sent = fields
                            .next()
                            .and_then(|f| std::str::from_utf8(f).ok()?.parse::<u64>().ok());
                        if let (Some(seq), Some(sent)) = (seq, sent) {
                            mine.push((
                                i as u32,
                                seq,
                                now.saturating_sub(sent).min(u32::MAX as u64) as u32,
                            ));
                        }
                    }
                }
                text.drain(..cut);
                if !mine.is_empty() {
                    records
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .append(&mut mine);
                }
            }
            records
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .append(&mut mine);
        }));
    }
    wait_metric(
        options.addr,
        "tideway_connections",
        options.connections as u64,
    )
    .await
    .ok();
    // Several publishers on their own connections, so the publishing side does not
    // saturate before the gateway does.
    const PUBLISHERS: u32 = 4;
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let publisher = TcpStream::connect(options.addr).await?;
        publisher.set_nodelay(true)?;
        publishers.push(publisher);
    }
    let padding = "x".repeat(options.body.saturating_sub(24));
    let mut steps = Vec::new();
    let mut seq: u32 = 0;
    for rate in [5u32, 10, 25, 50, 100, 200, 400, 800, 1600, 3200] {
        let first = seq;
        let step_started = Instant::now();
        let events = rate * 2;
        let mut sending = Vec::new();
        for (p, mut publisher) in publishers.drain(..).enumerate() {
            let (key, padding) = (options.key.clone(), padding.clone());
            sending.push(tokio::spawn(async move {
                // Publisher p sends events p, p + P, p + 2P, ... at its share of the rate.
                for n in (p as u32..events).step_by(PUBLISHERS as usize) {
                    let due =
                        step_started + Duration::from_secs_f64(f64::from(n) / f64::from(rate));
                    tokio::time::sleep_until(due.into()).await;
                    let number = first + n;
                    let body = format!("{number} {} {padding}", started_at.elapsed().as_micros());
                    publish(&mut publisher, &key, topic, &format!("f{number}"), &body).await?;
                }
                Ok::<TcpStream, anyhow::Error>(publisher)
            }));
        }
        for task in sending {
            publishers.push(task.await??);
        }
        seq += events;
        let window = step_started.elapsed().as_secs_f64();
        // Give the last events time to arrive before reading this step's figures.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let taken: Vec<(u32, u32, u32)> = std::mem::take(
            &mut *records
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut latencies: Vec<f64> = Vec::with_capacity(taken.len());
        let mut seen = std::collections::HashSet::with_capacity(taken.len());
        let mut duplicated = 0usize;
        for (reader, s, us) in &taken {
            if *s >= first && *s < seq {
                if !seen.insert((*reader, *s)) {
                    duplicated += 1;
                }
                latencies.push(f64::from(*us));
            }
        }
        let expected = options.connections * events as usize;
        let p = percentiles(&mut latencies);
        let p99 = p["p99"].as_f64().unwrap_or(f64::MAX);
        steps.push(json!({
            "offered_events_per_second": rate,
            "delivered_events_per_second": seen.len() as f64 / window,
            "publish_to_receive_us": p,
            "lost": expected.saturating_sub(seen.len()),
            "duplicated": duplicated,
        }));
        // Past the 50 ms knee the curve goes on a little, to show how latency grows.
        if p99 > 250_000.0 || seen.len() < expected {
            break;
        }
    }
    for reader in readers {
        reader.abort();
    }
    Ok(
        json!({ "scenario": "fanout", "subscribers": options.connections, "body_bytes": options.body, "steps": steps }),
    )
}

/// Sends one publish on a kept-alive connection and reads its answer; returns the status.
async fn publish(
    stream: &mut TcpStream,
    key: &str,
    topic: &str,
    id: &str,
    body: &str,
) -> anyhow::Result<u16> {
    let request = format!(
        "POST /v1/publish HTTP/1.1\r\nhost: load\r\nauthorization: Bearer {key}\r\nx-sse-topic: {topic}\r\nx-sse-id: {id}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    read_response(stream).await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// p50, p90, p99 and max of `samples` (sorted in place), as JSON.
fn percentiles(samples: &mut [f64]) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
    };
    json!({ "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": samples.last() })
}

async fn drain(options: &Options) -> anyhow::Result<serde_json::Value> {
    let mut streams = Vec::with_capacity(options.connections);
    for i in 0..options.connections {
        streams.push(open_stream(options.addr, "load-drain", i, 64 * 1024).await?);
    }
    wait_metric(
        options.addr,
        "tideway_connections",
        options.connections as u64,
    )
    .await?;
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &options.pid.to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -TERM {} failed", options.pid);
    }
    let mut told = 0usize;
    let mut last_stream = 0.0f64;
    let mut readers = Vec::new();
    for mut stream in streams {
        readers.push(tokio::spawn(async move {
            let mut all = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut all)).await;
            all.windows(13).any(|w| w == b"tideway.drain")
        }));
    }
    for reader in readers {
        if reader.await.unwrap_or(false) {
            told += 1;
        }
        last_stream = started.elapsed().as_secs_f64();
    }
    while running(options.pid) && started.elapsed() < Duration::from_secs(60) {
        // Polls the process table; there is no event to await for another process's exit.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(json!({
        "scenario": "drain",
        "connections": options.connections,
        "streams_told_to_reconnect": told,
        "seconds_until_last_stream_closed": last_stream,
        "seconds_until_exit": started.elapsed().as_secs_f64(),
    }))
}

/// Opens an SSE stream with a receive buffer of `recv_buffer` bytes, reads its head, and
/// returns the socket without reading further. Source addresses rotate over 127.0.0.x.
async fn open_stream(
    addr: SocketAddr,
    topic: &str,
    n: usize,
    recv_buffer: u32,
) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(recv_buffer)?;
    let source: std::net::IpAddr = format!("127.0.0.{}", 1 + (n / 20_000) % 250).parse()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket.connect(addr).await?;
    let request = format!("GET /v1/stream?topic={topic} HTTP/1.1\r\nhost: load\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

/// Reads one response with a `Content-Length` body; returns its status. Requests on a
/// connection go one at a time, so nothing follows the body.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("status line")?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Ok(status);
            }
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("the connection closed inside a response");
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

/// One unlabelled-by-name value of `/metrics` (the first sample of `name`).
async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<u64> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: load\r\nconnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("metric {name} not found"))
}

/// Polls `/metrics` until `name` equals `value`, for up to 60 s.
async fn wait_metric(addr: SocketAddr, name: &str, value: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = metric(addr, name).await?;
        if seen == value {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} stayed at {seen}, expected {value}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process still runs: it exists and is not a zombie waiting to be reaped.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The resident set size of a process, in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc/PID/status")
}
