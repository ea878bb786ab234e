//! Redis as managed services and operators run it: over TLS with a CA of its own
//! (`rediss://`, `--redis-ca-cert`), and behind Sentinel with a failover during a test.

use std::{path::Path, time::Duration};

use tideway_test_util::{RedisSentinel, TidewayProcess, TlsRedis};

fn node(redis_args: &[&str], id: &str) -> TidewayProcess {
    let mut args = vec!["--adapter", "redis", "--node-ttl", "2s", "--node-id", id];
    args.extend(redis_args);
    TidewayProcess::start(
        Path::new(env!("CARGO_BIN_EXE_tideway")),
        &args,
        std::iter::empty::<(&str, &str)>(),
    )
}

#[tokio::test]
async fn redis_over_tls_trusting_a_ca_of_its_own() {
    let redis = TlsRedis::start();
    let url = redis.url();
    let ca = redis.ca();
    let ca = ca.to_str().unwrap();
    let flags = ["--redis-url", url.as_str(), "--redis-ca-cert", ca];
    let (n1, n2) = (node(&flags, "t1"), node(&flags, "t2"));
    let mut sse = n2.client.subscribe("/v1/stream?topic=secure", &[]).await;
    let reply = n1.client.publish("secure", "s1", "over TLS").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let event = sse.next_event().await.expect("the event");
    assert_eq!(
        (event.id.as_deref(), event.data.as_deref()),
        (Some("s1"), Some("over TLS"))
    );

    // Without the CA, the server's certificate is not trusted: the node does not start,
    // and says why.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--api-keys",
            "k",
            "--adapter",
            "redis",
        ])
        .args(["--redis-url", &url])
        .output()
        .expect("run tideway");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&url), "the error names the Redis: {stderr}");
}

/// Reads `sse` until `last` arrives; on `tideway.resync` (the stream ends so the client
/// resumes) opens a new stream on `node` after the last id received. Returns the ids in
/// the order received and the `tideway.*` events seen.
async fn read_until(
    node: &TidewayProcess,
    mut sse: tideway_test_util::Sse,
    last: &str,
) -> (Vec<String>, Vec<String>) {
    let (mut ids, mut told) = (Vec::new(), Vec::new());
    loop {
        let block = tokio::time::timeout(Duration::from_secs(20), sse.next_event())
            .await
            .expect("events keep coming");
        let Some(block) = block else {
            // The stream ended (after its tideway.* event): resume as a client does.
            let header = format!("last-event-id: {}", ids.last().cloned().unwrap_or_default());
            sse = node
                .client
                .subscribe("/v1/stream?topic=ha", &[&header])
                .await;
            continue;
        };
        match block.event.as_deref() {
            Some(system) if system.starts_with("tideway.") => told.push(system.to_owned()),
            _ => {
                let id = block.id.clone().unwrap_or_default();
                ids.push(id.clone());
                if id == last {
                    return (ids, told);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_keeps_delivering_or_tells() {
    let redis = RedisSentinel::start();
    let url = redis.url();
    let flags = ["--redis-url", url.as_str()];
    let (n1, n2) = (node(&flags, "s1"), node(&flags, "s2"));
    let sse = n2.client.subscribe("/v1/stream?topic=ha", &[]).await;
    let mut accepted = Vec::new();
    let before = redis.primary_port();
    for n in 0..10 {
        let id = format!("before-{n}");
        assert_eq!(n1.client.publish("ha", &id, "x").await.status, 202);
        accepted.push(id);
    }
    tokio::task::block_in_place(|| redis.failover());
    assert_ne!(redis.primary_port(), before, "the replica took over");
    // Publishers retry what the gateway refuses (503 while it finds the new primary).
    for n in 0..10 {
        let id = format!("after-{n}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = n1.client.publish("ha", &id, "x").await.status;
            if status == 202 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishes accepted again after the failover (last status {status})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        accepted.push(id);
    }
    let (ids, told) = read_until(&n2, sse, "after-9").await;
    eprintln!(
        "after the failover: {} events received, told {told:?}",
        ids.len()
    );
    // Every accepted event arrived once, in order — or the subscriber was told.
    let mut deduped = ids.clone();
    deduped.dedup();
    assert_eq!(deduped, ids, "no duplicates: {ids:?}");
    if told.is_empty() {
        assert_eq!(ids, accepted, "nothing lost without a word");
    } else {
        let missing: Vec<&String> = accepted.iter().filter(|a| !ids.contains(a)).collect();
        assert!(
            told.iter()
                .any(|t| t == "tideway.gap" || t == "tideway.resync"),
            "missing {missing:?}, told {told:?}"
        );
        let positions: Vec<usize> = ids
            .iter()
            .filter_map(|id| accepted.iter().position(|a| a == id))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "in order: {ids:?}"
        );
    }
}
