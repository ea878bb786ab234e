//! The drop-path scenario: publishes of `--body` bytes from `--concurrency` kept-alive
//! connections, each sending its share one request at a time; the first two kinds below
//! run three times each, interleaved, and report the median.
//!
//! - `to_nobody`: to a topic nobody follows: the server's cheapest answer;
//! - `delivered`: the same publishes to a topic one reader follows, for the ratio of the two;
//! - `expect_continue` (Tideway): to nobody, with `Expect: 100-continue` and the body held
//!   back: every answer must come without a `100 Continue`, and the body bytes the client
//!   wrote, counted on its socket, must be zero — the gateway never read a body.

use std::{net::SocketAddr, time::Instant};

use anyhow::bail;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    Options, procfs,
    wire::{self, Target, Transport},
};

pub(crate) async fn run(options: &Options) -> anyhow::Result<serde_json::Value> {
    // One reader on the delivered topic, draining what comes.
    let mut reader = wire::subscribe(
        options.target,
        Transport::Sse,
        options.addr,
        "load-delivered",
        0,
        1 << 20,
    )
    .await?;
    let draining = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    wire::wait_subscribers(options.target, &[options.addr], 1).await?;
    // A subscriber the server counts may not be live in its store yet (through Redis the
    // topic's join lands a moment later): warm up until a publish is delivered, so every
    // timed one is.
    let mut warm = TcpStream::connect(options.addr).await?;
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = wire::publish(
            options.target,
            &mut warm,
            &options.key,
            "load-delivered",
            "warm",
            "x",
        )
        .await?;
        // Tideway answers a dropped publish 200, a delivered one 202; Nchan 202 and 201.
        let delivered = match options.target {
            Target::Tideway => answer.status == 202,
            Target::Nchan => answer.status == 201,
        };
        if delivered {
            break;
        }
        if Instant::now() > deadline {
            bail!("the reader's topic never became live");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Three rounds of each, interleaved, and the median of each: a single run of a few
    // seconds on two shared cores varies by tens of percent.
    let (mut nobody_runs, mut delivered_runs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        nobody_runs.push(publishes(options, "load-nobody", false).await?);
        delivered_runs.push(publishes(options, "load-delivered", false).await?);
    }
    let to_nobody = median(nobody_runs);
    let delivered = median(delivered_runs);
    draining.abort();
    let expect_continue = match options.target {
        Target::Tideway => Some(publishes(options, "load-nobody", true).await?),
        // nginx reads every publisher's body; it answers `100 Continue` and waits for it.
        Target::Nchan => None,
    };
    let dropped_counted = match options.target {
        Target::Tideway => Some(wire::metric(options.addr, "tideway_events_dropped_total").await?),
        Target::Nchan => None,
    };
    let ratio = to_nobody["requests_per_second"].as_f64().unwrap_or(0.0)
        / delivered["requests_per_second"]
            .as_f64()
            .unwrap_or(f64::MAX);
    Ok(json!({
        "scenario": "drop",
        "target": format!("{:?}", options.target).to_lowercase(),
        "events": options.events,
        "body_bytes": options.body,
        "concurrency": options.concurrency,
        "to_nobody": to_nobody,
        "delivered": delivered,
        "drop_to_delivered_ratio": ratio,
        "expect_continue": expect_continue,
        "dropped_counted": dropped_counted,
    }))
}

const ROUNDS: usize = 3;

/// The run with the median requests/s, with every run's figure beside it.
fn median(mut runs: Vec<serde_json::Value>) -> serde_json::Value {
    let rate = |v: &serde_json::Value| v["requests_per_second"].as_f64().unwrap_or(0.0);
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let all: Vec<f64> = runs.iter().map(rate).collect();
    let mut middle = runs.swap_remove(runs.len() / 2);
    middle["runs_requests_per_second"] = json!(all);
    middle
}

/// `options.events` publishes to `topic` over `options.concurrency` connections.
async fn publishes(
    options: &Options,
    topic: &'static str,
    expect: bool,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let cpu_before = procfs::cpu(&options.pids)?;
    let mut tasks = Vec::new();
    let per = options.events / options.concurrency.max(1);
    for c in 0..options.concurrency.max(1) {
        let (addr, target, key) = (options.addr, options.target, options.key.clone());
        let body = "x".repeat(options.body);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut stream = connect(addr).await?;
            for n in 0..per {
                let id = format!("d{c}-{n}");
                let request = if expect {
                    // The head alone: content-length promises a body that is never sent.
                    format!(
                        "POST /v1/publish HTTP/1.1\r\nhost: load\r\nauthorization: Bearer {key}\r\nx-sse-topic: {topic}\r\nx-sse-id: {id}\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
                        body.len()
                    )
                } else {
                    wire::publish_request(target, &key, topic, &id, &body)
                };
                stream.write_all(request.as_bytes()).await?;
                if !expect {
                    tally.body_bytes_sent += body.len() as u64;
                }
                let answer = wire::read_response(&mut stream).await?;
                tally.continues += answer.continues as u64;
                *tally.statuses.entry(answer.status).or_default() += 1;
                if answer.closes {
                    tally.reconnects += 1;
                    stream = connect(addr).await?;
                }
            }
            Ok::<Tally, anyhow::Error>(tally)
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await??;
        total.body_bytes_sent += tally.body_bytes_sent;
        total.continues += tally.continues;
        total.reconnects += tally.reconnects;
        for (status, n) in tally.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let used = procfs::cpu(&options.pids)?.since(cpu_before);
    let requests = per * options.concurrency.max(1);
    let ok = total
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum::<u64>();
    if ok != requests as u64 {
        bail!("publishes to {topic} answered {:?}", total.statuses);
    }
    Ok(json!({
        "requests": requests,
        "requests_per_second": requests as f64 / seconds,
        "statuses": total.statuses,
        "continues_received": total.continues,
        "body_bytes_sent": total.body_bytes_sent,
        "reconnects": total.reconnects,
        "server_cpu_us_per_request": used.total() * 1e6 / requests as f64,
        "server_cpu_system_share": used.system_share(),
    }))
}

#[derive(Default)]
struct Tally {
    statuses: std::collections::BTreeMap<u16, u64>,
    continues: u64,
    body_bytes_sent: u64,
    reconnects: u64,
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
