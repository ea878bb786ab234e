//! The idle-connections scenario: N SSE subscribers connect, in batches of 2,000 with up to
//! 500 connects in flight, and then only hold their streams open. A subscriber counts as
//! connected once the first bytes of its stream arrived. After each batch, once the server
//! counts every subscriber, the server's memory is sampled: memory against connections.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::{io::AsyncReadExt, net::TcpStream, sync::Semaphore};

use crate::{
    Options, procfs,
    wire::{self, Transport},
};

const BATCH: usize = 2_000;
const IN_FLIGHT: usize = 500;

pub(crate) async fn run(options: &Options) -> anyhow::Result<serde_json::Value> {
    let start = procfs::memory(&options.pids)?;
    let mut open: Vec<TcpStream> = Vec::with_capacity(options.connections);
    let mut samples = vec![json!({ "connections": 0, "memory": start.json() })];
    let mut connecting = Duration::ZERO;
    let mut first_10000 = None;
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    while open.len() < options.connections {
        let batch = BATCH.min(options.connections - open.len());
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(batch);
        for n in open.len()..open.len() + batch {
            let (limit, target, addr) = (limit.clone(), options.target, options.addr);
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire_owned().await?;
                let mut stream =
                    wire::subscribe(target, Transport::Sse, addr, "load-idle", n, 4096).await?;
                let mut first = [0u8; 512];
                let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut first))
                    .await
                    .context("the stream's first bytes within 30 s")??;
                if read == 0 || !first.starts_with(b"HTTP/1.1 200") {
                    bail!(
                        "subscriber {n} was refused: {}",
                        String::from_utf8_lossy(&first[..read])
                    );
                }
                Ok::<TcpStream, anyhow::Error>(stream)
            }));
        }
        for task in tasks {
            open.push(task.await??);
        }
        connecting += started.elapsed();
        if open.len() >= 10_000 && first_10000.is_none() {
            first_10000 = Some(connecting.as_secs_f64());
        }
        wire::wait_subscribers(options.target, &[options.addr], open.len() as u64).await?;
        // Let the server settle the last connections' state before sampling.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let memory = procfs::memory(&options.pids)?;
        eprintln!("tideway-load: {} connections, {memory:?}", open.len());
        samples.push(json!({ "connections": open.len(), "memory": memory.json() }));
    }
    let end = procfs::memory(&options.pids)?;
    let per = |start: u64, end: u64| {
        (end.saturating_sub(start) as f64 * 1024.0) / options.connections as f64
    };
    drop(open);
    Ok(json!({
        "scenario": "connections",
        "target": format!("{:?}", options.target).to_lowercase(),
        "connections": options.connections,
        "connect_seconds": connecting.as_secs_f64(),
        "connects_per_second": options.connections as f64 / connecting.as_secs_f64(),
        "seconds_to_connect_first_10000": first_10000,
        "memory_start": start.json(),
        "memory_end": end.json(),
        "bytes_per_connection_pss": per(start.pss_kib, end.pss_kib),
        "bytes_per_connection_rss": per(start.rss_kib, end.rss_kib),
        "samples": samples,
    }))
}
