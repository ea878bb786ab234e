//! `tideway-load`: drives a running server over real sockets and prints what it measured
//! as one JSON object on stdout (progress goes to stderr). `cargo xtask bench` starts the
//! servers and runs it; the server is Tideway or, for the side-by-side runs, Nchan
//! (`--target nchan`).
//!
//! Scenarios:
//! - `stalled`: N subscribers that never read, one that reads, E events published; the
//!   gateway's RSS idle, while the stalled ones hold their queues, and after they are
//!   closed; whether the reader got every event.
//! - `drain`: N open streams, then SIGTERM: time until every stream got `tideway.drain`
//!   and until the process exited.
//! - `latency`: one subscriber (on the first `--sub-addr`, default `--addr`), E publishes
//!   on `--addr` one after another, each timed from before its request to its arrival:
//!   p50, p90, p99 and max. With two nodes of a cluster, that is the cost of the hop.
//! - `drop`: publishes of `--body` bytes to a topic nobody follows and to one a reader
//!   follows, from `--concurrency` kept-alive connections; and (Tideway) with `Expect:
//!   100-continue` and no body sent (see `droppath`).
//! - `fanout`, `unicast`: N subscribers (SSE, or WebSocket with `--transport ws`) read
//!   everything while `--publishers` connections publish at rising offered rates until p99
//!   publish→receive passes five times `--knee-ms` (see `steps`). With `--batch N`, each
//!   publisher sends its events N at a time through `POST /v1/publish/batch` (with
//!   `--target nchan`, the bench's reference server's `POST /batch`: Nchan has none).
//! - `connections`: N idle SSE subscribers; connect rate and memory against connections.
//!
//! Memory and CPU time are read from `/proc` for every process in `--pid` (a comma list:
//! nginx is a master and its workers).

mod connections;
mod droppath;
mod procfs;
mod steps;
mod wire;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::{io::AsyncReadExt, net::TcpStream};

use crate::wire::{Target, Transport};

/// Options shared by the scenarios, from `--name value` pairs.
pub(crate) struct Options {
    target: Target,
    transport: Transport,
    addr: SocketAddr,
    /// Where subscribers connect, in turn; defaults to `addr`.
    sub_addrs: Vec<SocketAddr>,
    /// Where the stepped scenarios' publishers connect, in turn; defaults to `addr`.
    pub_addrs: Vec<SocketAddr>,
    key: String,
    /// The server's processes.
    pids: Vec<u32>,
    connections: usize,
    events: usize,
    body: usize,
    publishers: usize,
    concurrency: usize,
    knee_ms: f64,
    rates: Option<Vec<u32>>,
    /// Events per publish request: above 0, `POST /v1/publish/batch` with this many
    /// (Tideway only); 0 publishes one at a time on `/v1/publish`.
    batch: usize,
}

const USAGE: &str = "usage: tideway-load <stalled|drain|latency|drop|fanout|unicast|connections> --addr HOST:PORT --pid PID[,PID...] [--key KEY] [--target tideway|nchan] [--transport sse|ws] [--sub-addr HOST:PORT[,...]] [--pub-addr HOST:PORT[,...]] [--connections N] [--events N] [--body BYTES] [--publishers N] [--concurrency N] [--knee-ms MS] [--rates R,R,...] [--batch N]";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first().cloned() else {
        bail!(USAGE);
    };
    let value = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    fn number<T: std::str::FromStr>(v: Option<String>, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        v.map_or(Ok(default), |v| v.parse())
            .with_context(|| format!("{name}: {USAGE}"))
    }
    fn list<T: std::str::FromStr>(v: &str, name: &str) -> anyhow::Result<Vec<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        v.split(',')
            .map(|p| {
                p.trim()
                    .parse::<T>()
                    .with_context(|| format!("{name}: {USAGE}"))
            })
            .collect()
    }
    let addr: SocketAddr = value("--addr")
        .context(USAGE)?
        .parse()
        .context("--addr HOST:PORT")?;
    let shape = match scenario.as_str() {
        "unicast" => Some(steps::Shape::Unicast),
        "fanout" => Some(steps::Shape::FanOut),
        _ => None,
    };
    let options = Options {
        target: match value("--target").as_deref() {
            None | Some("tideway") => Target::Tideway,
            Some("nchan") => Target::Nchan,
            Some(other) => bail!("--target {other:?}: tideway or nchan"),
        },
        transport: match value("--transport").as_deref() {
            None | Some("sse") => Transport::Sse,
            Some("ws") => Transport::WebSocket,
            Some(other) => bail!("--transport {other:?}: sse or ws"),
        },
        addr,
        sub_addrs: match value("--sub-addr") {
            Some(v) => list(&v, "--sub-addr")?,
            None => vec![addr],
        },
        pub_addrs: match value("--pub-addr") {
            Some(v) => list(&v, "--pub-addr")?,
            None => vec![addr],
        },
        key: value("--key").unwrap_or_default(),
        pids: list(&value("--pid").context(USAGE)?, "--pid")?,
        connections: number(value("--connections"), "--connections", 1000)?,
        events: number(value("--events"), "--events", 2000)?,
        body: number(value("--body"), "--body", 1024)?,
        publishers: number(value("--publishers"), "--publishers", 4)?,
        concurrency: number(value("--concurrency"), "--concurrency", 8)?,
        knee_ms: number(
            value("--knee-ms"),
            "--knee-ms",
            if shape == Some(steps::Shape::Unicast) {
                2.0
            } else {
                50.0
            },
        )?,
        rates: value("--rates").map(|v| list(&v, "--rates")).transpose()?,
        batch: number(value("--batch"), "--batch", 0)?,
    };
    if options.batch > 0 && shape.is_none() {
        bail!(
            "--batch is for fanout and unicast (against Nchan, only the bench's reference server has a batch route)"
        );
    }
    if options.target == Target::Nchan
        && !matches!(
            scenario.as_str(),
            "fanout" | "unicast" | "drop" | "connections"
        )
    {
        bail!("scenario {scenario} runs against Tideway only");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match (scenario.as_str(), shape) {
            (_, Some(shape)) => steps::run(&options, shape).await,
            ("stalled", _) => stalled(&options).await,
            ("drain", _) => drain(&options).await,
            ("latency", _) => latency(&options).await,
            ("drop", _) => droppath::run(&options).await,
            ("connections", _) => connections::run(&options).await,
            (other, _) => bail!("unknown scenario {other:?}"),
        }
    })?;
    println!("{result}");
    Ok(())
}

async fn stalled(options: &Options) -> anyhow::Result<serde_json::Value> {
    let topic = "load-stalled";
    let rss_start = rss_kib(&options.pids)?;
    let mut stalled = Vec::with_capacity(options.connections);
    let connect_started = Instant::now();
    for i in 0..options.connections {
        stalled.push(open_stream(options.addr, topic, i, 4096).await?);
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    let mut reader = open_stream(options.addr, topic, 0, 256 * 1024).await?;
    wire::wait_subscribers(
        Target::Tideway,
        &[options.addr],
        (options.connections + 1) as u64,
    )
    .await?;
    let rss_idle = rss_kib(&options.pids)?;

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
    let cut = wire::metric(options.addr, "tideway_slow_consumers_total").await?;
    let rss_stalled = rss_kib(&options.pids)?;
    // Once the write timeout closes them, the stalled connections give their memory back.
    wire::wait_subscribers(Target::Tideway, &[options.addr], 0)
        .await
        .ok();
    let rss_closed = rss_kib(&options.pids)?;
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
    let mut subscriber = open_stream(options.sub_addrs[0], topic, 0, 256 * 1024).await?;
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
        "cross_node": options.addr != options.sub_addrs[0],
        "publish_to_receive_us": percentiles(&mut samples),
    }))
}

async fn drain(options: &Options) -> anyhow::Result<serde_json::Value> {
    let mut streams = Vec::with_capacity(options.connections);
    for i in 0..options.connections {
        streams.push(open_stream(options.addr, "load-drain", i, 64 * 1024).await?);
    }
    wire::wait_subscribers(Target::Tideway, &[options.addr], options.connections as u64).await?;
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &options.pids[0].to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -TERM {} failed", options.pids[0]);
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
    while procfs::running(options.pids[0]) && started.elapsed() < Duration::from_secs(60) {
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

/// Opens a Tideway SSE stream and sends its request; the answer is left unread.
async fn open_stream(
    addr: SocketAddr,
    topic: &str,
    n: usize,
    recv_buffer: u32,
) -> anyhow::Result<TcpStream> {
    wire::subscribe(Target::Tideway, Transport::Sse, addr, topic, n, recv_buffer).await
}

async fn publish(
    stream: &mut TcpStream,
    key: &str,
    topic: &str,
    id: &str,
    body: &str,
) -> anyhow::Result<u16> {
    Ok(wire::publish(Target::Tideway, stream, key, topic, id, body)
        .await?
        .status)
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

fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    Ok(procfs::memory(pids)?.rss_kib)
}
