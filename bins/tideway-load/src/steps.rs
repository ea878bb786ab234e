//! The stepped delivery scenarios: subscribers read everything while publishers send at
//! rising offered rates, two seconds per step, until p99 publish→receive passes five times
//! the knee threshold (or something is lost).
//!
//! - fan-out: every subscriber follows one topic; each event reaches all of them.
//! - unicast: subscriber `i` follows its own topic `load-u<i>`; event `n` goes to topic
//!   `n mod N`, so each event reaches one subscriber.
//!
//! Each event's data is `<sequence> <µs since the run started> <padding>`; a subscriber
//! notes the time it read it. Per step: delivered events/s, publish→receive percentiles (an
//! HDR histogram), lost and duplicated deliveries, and the server's CPU time.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    Options, procfs,
    wire::{self, Decoder, Target},
};

/// Whom each event goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    FanOut,
    Unicast,
}

impl Shape {
    fn topic(self, n: usize, subscribers: usize) -> String {
        match self {
            Self::FanOut => "load-fanout".to_owned(),
            Self::Unicast => format!("load-u{}", n % subscribers),
        }
    }

    fn default_rates(self) -> Vec<u32> {
        match self {
            Self::FanOut => vec![5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200],
            Self::Unicast => vec![
                500, 1000, 2000, 4000, 8000, 16000, 32000, 48000, 64000, 96000, 128000,
            ],
        }
    }
}

/// (subscriber, sequence, µs from publish to receive) of each delivery.
type Records = Arc<Mutex<Vec<(u32, u32, u32)>>>;

pub(crate) async fn run(options: &Options, shape: Shape) -> anyhow::Result<serde_json::Value> {
    let started_at = Instant::now();
    let subscribers = options.connections;
    let records: Records = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::with_capacity(subscribers);
    let connect_started = Instant::now();
    for i in 0..subscribers {
        let addr = options.sub_addrs[i % options.sub_addrs.len()];
        let stream = wire::subscribe(
            options.target,
            options.transport,
            addr,
            &shape.topic(i, subscribers),
            i,
            256 * 1024,
        )
        .await
        .with_context(|| format!("subscriber {i}"))?;
        readers.push(tokio::spawn(read(
            stream,
            i as u32,
            Decoder::new(options.transport),
            records.clone(),
            started_at,
        )));
    }
    wire::wait_subscribers(
        options.target,
        &distinct(&options.sub_addrs),
        subscribers as u64,
    )
    .await?;
    let connect_seconds = connect_started.elapsed().as_secs_f64();

    let mut publishers = Vec::new();
    for p in 0..options.publishers {
        let addr = options.pub_addrs[p % options.pub_addrs.len()];
        let publisher = TcpStream::connect(addr).await?;
        publisher.set_nodelay(true)?;
        publishers.push((publisher, addr));
    }
    let padding = "x".repeat(options.body.saturating_sub(24));
    let knee_us = options.knee_ms * 1000.0;
    let rates = options
        .rates
        .clone()
        .unwrap_or_else(|| shape.default_rates());
    let mut steps = Vec::new();
    let mut knee: Option<serde_json::Value> = None;
    let mut seq: u32 = 0;
    for rate in rates {
        let first = seq;
        let events = rate * 2;
        let cpu_before = procfs::cpu(&options.pids)?;
        let own_cpu_before = procfs::cpu(&[std::process::id()])?;
        let cut_before = slow_consumers_cut(options).await?;
        let step_started = Instant::now();
        let mut sending = Vec::new();
        let count = options.publishers as u32;
        for (p, (mut publisher, addr)) in publishers.drain(..).enumerate() {
            let (key, padding, target) = (options.key.clone(), padding.clone(), options.target);
            let batch = options.batch;
            sending.push(tokio::spawn(async move {
                // Publisher p sends events p, p + P, p + 2P, ... at its share of the rate;
                // with batches, each request when the first of its events is due.
                let mine: Vec<u32> = (p as u32..events).step_by(count as usize).collect();
                for group in mine.chunks(batch.max(1)) {
                    let n = group[0];
                    let due =
                        step_started + Duration::from_secs_f64(f64::from(n) / f64::from(rate));
                    tokio::time::sleep_until(due.into()).await;
                    let sent_us = started_at.elapsed().as_micros();
                    let event = |n: u32| {
                        let number = first + n;
                        let topic = shape.topic(number as usize, subscribers);
                        (
                            topic,
                            format!("f{number}"),
                            format!("{number} {sent_us} {padding}"),
                        )
                    };
                    let answer = if batch > 0 {
                        let events: Vec<_> = group.iter().map(|&n| event(n)).collect();
                        wire::publish_batch(target, &mut publisher, &key, &events).await?
                    } else {
                        let (topic, id, body) = event(n);
                        wire::publish(target, &mut publisher, &key, &topic, &id, &body).await?
                    };
                    let number = first + n;
                    anyhow::ensure!(
                        (200..300).contains(&answer.status),
                        "publish {number} answered {}",
                        answer.status
                    );
                    if answer.closes {
                        publisher = TcpStream::connect(addr).await?;
                        publisher.set_nodelay(true)?;
                    }
                }
                Ok::<(TcpStream, SocketAddr), anyhow::Error>((publisher, addr))
            }));
        }
        for task in sending {
            publishers.push(task.await??);
        }
        seq += events;
        // At least the step's own length: with batches, the last request of a step can go
        // long before the step's time is up, and what it delivers spreads over the step.
        let window = step_started
            .elapsed()
            .as_secs_f64()
            .max(f64::from(events) / f64::from(rate));
        // Give the last events time to arrive before reading this step's figures.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let used = procfs::cpu(&options.pids)?.since(cpu_before);
        let own = procfs::cpu(&[std::process::id()])?.since(own_cpu_before);
        let cpu = used.total();
        let cut = match (slow_consumers_cut(options).await?, cut_before) {
            (Some(after), Some(before)) => Some(after - before),
            _ => None,
        };
        let taken = std::mem::take(&mut *records.lock().unwrap_or_else(PoisonError::into_inner));
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut seen = HashSet::with_capacity(taken.len());
        let mut duplicated = 0usize;
        for (reader, s, us) in taken {
            if (first..seq).contains(&s) {
                if !seen.insert((reader, s)) {
                    duplicated += 1;
                }
                histogram.saturating_record(u64::from(us).max(1));
            }
        }
        let expected = match shape {
            Shape::FanOut => subscribers * events as usize,
            Shape::Unicast => events as usize,
        };
        let lost = expected.saturating_sub(seen.len());
        let delivered = seen.len() as f64 / window;
        let p99 = histogram.value_at_quantile(0.99) as f64;
        let step = json!({
            "offered_events_per_second": rate,
            "delivered_events_per_second": delivered,
            "publish_to_receive_us": {
                "p50": histogram.value_at_quantile(0.50),
                "p90": histogram.value_at_quantile(0.90),
                "p99": histogram.value_at_quantile(0.99),
                "max": histogram.max(),
            },
            "lost": lost,
            "duplicated": duplicated,
            "slow_consumers_cut": cut,
            "server_cpu_seconds": cpu,
            "server_cpu_system_share": used.system_share(),
            "server_cpu_us_per_delivery": if seen.is_empty() { 0.0 } else { cpu * 1e6 / seen.len() as f64 },
            // The load generator's own, taken from the same cores as the server's.
            "load_generator_cpu_us_per_delivery": if seen.is_empty() { 0.0 } else { own.total() * 1e6 / seen.len() as f64 },
        });
        eprintln!("tideway-load: {step}");
        // The knee: the step that delivered most with p99 within the threshold and
        // nothing lost (past capacity, delivered can fall while latency holds).
        let best = knee.as_ref().map_or(-1.0, |k| {
            k["delivered_events_per_second"].as_f64().unwrap_or(0.0)
        });
        if p99 <= knee_us && lost == 0 && duplicated == 0 && delivered > best {
            knee = Some(step.clone());
        }
        steps.push(step);
        if p99 > knee_us * 5.0 || lost > 0 {
            break;
        }
    }
    for reader in readers {
        reader.abort();
    }
    let memory = procfs::memory(&options.pids)?;
    Ok(json!({
        "scenario": match shape { Shape::FanOut => "fanout", Shape::Unicast => "unicast" },
        "target": format!("{:?}", options.target).to_lowercase(),
        "transport": format!("{:?}", options.transport).to_lowercase(),
        "subscribers": subscribers,
        "publishers": options.publishers,
        "batch": options.batch,
        "body_bytes": options.body,
        "knee_ms": options.knee_ms,
        "connect_seconds": connect_seconds,
        "memory_at_end": memory.json(),
        "knee": knee,
        "steps": steps,
    }))
}

/// Reads one subscriber's connection until it ends, noting each event it gets.
async fn read(
    mut stream: TcpStream,
    me: u32,
    mut decoder: Decoder,
    records: Records,
    started_at: Instant,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut mine = Vec::new();
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let now = started_at.elapsed().as_micros() as u64;
        let fed = decoder.feed(&buf[..n], |data| {
            // <seq> <sent µs> <padding>
            let mut fields = data.split(|&b| b == b' ');
            let number =
                |f: Option<&[u8]>| f.and_then(|f| std::str::from_utf8(f).ok()?.parse::<u64>().ok());
            if let (Some(seq), Some(sent)) = (number(fields.next()), number(fields.next())) {
                let us = now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
                mine.push((me, seq as u32, us));
            }
        });
        let Ok(pings) = fed else { break };
        for ping in &pings {
            if stream.write_all(&wire::pong(ping)).await.is_err() {
                return;
            }
        }
        if !mine.is_empty() {
            records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&mut mine);
        }
    }
}

/// Subscribers Tideway cut off for falling behind so far (streams cut by the gateway),
/// over every node subscribers use; `None` for Nchan, which has no such counter.
async fn slow_consumers_cut(options: &Options) -> anyhow::Result<Option<u64>> {
    if options.target != Target::Tideway {
        return Ok(None);
    }
    let mut cut = 0;
    for addr in distinct(&options.sub_addrs) {
        cut += wire::metric(addr, "tideway_slow_consumers_total").await?;
    }
    Ok(Some(cut))
}

/// The addresses without repeats, in order.
pub(crate) fn distinct(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for addr in addrs {
        if !out.contains(addr) {
            out.push(*addr);
        }
    }
    out
}
