//! The scenarios on a Redis Cluster (`--redis-cluster`): six `redis-server` processes
//! (three primaries, a replica each), three gateway nodes, topics spread over the
//! cluster's slots, subscribers and publishers on every node.

use std::{path::Path, time::Duration};

use tideway_test_util::RedisCluster;

use crate::{
    cluster::Subscriber,
    scenarios::{Outcome, Run},
};

/// Topics whose keys land on every shard.
const SPREAD: [&str; 24] = [
    "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
    "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23",
];

/// Which topics publish `n` goes to: one topic at a time around the spread, and every
/// fifth publish to two neighbours (on different shards, as often as not).
fn spread(n: u64) -> &'static [&'static str] {
    let i = (n % 23) as usize;
    if n.is_multiple_of(5) {
        &SPREAD[i..i + 2]
    } else {
        &SPREAD[i..i + 1]
    }
}

/// The cluster, three nodes, a subscriber of every topic on every node and two
/// subscribers of two topics each.
async fn start(tideway: &Path) -> (Run<RedisCluster>, Vec<Subscriber>) {
    let run = Run::start_cluster(tideway, 3, &[]);
    let mut subscribers = Vec::new();
    for node in 0..3 {
        for topic in SPREAD {
            subscribers.extend(run.subscribe(node, &[topic], 1).await);
        }
    }
    subscribers.extend(run.subscribe(1, &["s0", "s12"], 2).await);
    (run, subscribers)
}

/// A publisher on every node, each `count` events 10 ms apart.
fn load(run: &Run<RedisCluster>, count: u64) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3)
        .map(|node| run.publish(node, &format!("p{node}"), count, 10, spread))
        .collect()
}

async fn finish(
    run: &Run<RedisCluster>,
    loads: Vec<tokio::task::JoinHandle<()>>,
    subscribers: Vec<Subscriber>,
    quiet: bool,
    mut notes: Vec<String>,
) -> Outcome {
    for load in loads {
        let _ = load.await;
    }
    notes.push(format!(
        "repairs {}, events recovered {}, delivery interruptions {}",
        run.metric("tideway_delivery_repairs_total").await,
        run.metric("tideway_events_recovered_total").await,
        run.metric("tideway_delivery_interruptions_total").await,
    ));
    run.settle(0, subscribers, quiet, notes).await
}

/// Waits `delay`, kills a primary with SIGKILL and waits for its replica to take over;
/// says which.
async fn kill_a_primary_after(run: &mut Run<RedisCluster>, delay: Duration) -> Vec<String> {
    tokio::time::sleep(delay).await;
    let victim = run.redis.primaries()[0];
    run.redis.kill(victim);
    tokio::task::block_in_place(|| run.redis.wait_failover(victim));
    vec![format!(
        "killed the primary on port {victim}; primaries now {:?}",
        run.redis.primaries()
    )]
}

/// A primary killed with SIGKILL while every node publishes; its replica takes over.
pub(crate) async fn primary_kill(tideway: &Path) -> Result<Outcome, String> {
    let (mut run, subscribers) = start(tideway).await;
    let loads = load(&run, 300);
    let notes = kill_a_primary_after(&mut run, Duration::from_millis(800)).await;
    Ok(finish(&run, loads, subscribers, false, notes).await)
}

/// Which topic event `n` of a batch publisher goes to: 20 in a row to one topic, then
/// the next, around the spread.
fn runs(n: u64) -> &'static [&'static str] {
    let i = ((n / 20) % 24) as usize;
    &SPREAD[i..=i]
}

/// [`primary_kill`] with batch publishers whose batches hold runs of one topic.
pub(crate) async fn batch_primary_kill(tideway: &Path) -> Result<Outcome, String> {
    let (mut run, subscribers) = start(tideway).await;
    let (loads, orders): (Vec<_>, Vec<_>) = (0..3)
        .map(|node| run.publish_batches(node, &format!("b{node}"), 480, runs))
        .unzip();
    let notes = kill_a_primary_after(&mut run, Duration::from_millis(800)).await;
    let outcome = finish(&run, loads, subscribers, false, notes).await;
    Ok(crate::scenarios::batch_order_kept(outcome, &orders))
}

/// Slots the reshard moves, of the about 5461 each primary starts with.
const SLOTS_MOVED: u32 = 4000;

/// Most of one primary's slots moved to another while every node publishes.
pub(crate) async fn reshard(tideway: &Path) -> Result<Outcome, String> {
    let (run, subscribers) = start(tideway).await;
    let loads = load(&run, 400);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let primaries = run.redis.primaries();
    let owners = |run: &Run<RedisCluster>| -> Vec<Option<u16>> {
        SPREAD
            .iter()
            .map(|t| run.redis.owner_of(&format!("t:{t}")))
            .collect()
    };
    let before = owners(&run);
    // From the primary holding the most topics, most of its slots: some topic moves.
    let from = primaries
        .iter()
        .copied()
        .max_by_key(|p| before.iter().filter(|o| **o == Some(*p)).count())
        .unwrap_or(primaries[0]);
    let to = primaries
        .iter()
        .copied()
        .find(|p| *p != from)
        .unwrap_or(from);
    let moved = tokio::task::block_in_place(|| run.redis.reshard(from, to, SLOTS_MOVED));
    let after = owners(&run);
    let mut outcome = finish(&run, loads, subscribers, false, Vec::new()).await;
    let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    match moved {
        Ok(()) => outcome.notes.push(format!(
            "moved {SLOTS_MOVED} slots from {from} to {to}: {changed} of the {} topics changed shard",
            SPREAD.len()
        )),
        Err(printed) => outcome.unmet.push(format!("the reshard failed: {printed}")),
    }
    if changed == 0 {
        outcome
            .unmet
            .push("no topic changed shard: the reshard proved nothing".to_owned());
    }
    Ok(outcome)
}

/// Every node's sharded subscriptions killed (`CLIENT KILL TYPE pubsub` on every
/// process) twice while every node publishes: the nodes read what they missed back from
/// history, so no stream may end and no gap be sent.
pub(crate) async fn pubsub_kill(tideway: &Path) -> Result<Outcome, String> {
    let (run, subscribers) = start(tideway).await;
    let loads = load(&run, 300);
    let mut killed = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        killed.push(
            run.redis
                .on_every_process(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .join(" "),
        );
    }
    let notes = vec![format!("connections killed per process: {killed:?}")];
    Ok(finish(&run, loads, subscribers, true, notes).await)
}
