//! The scenarios: each a cluster, a load, and one fault in the middle of it.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tideway_test_util::{RedisCluster, RedisServer, SharedStore, Worker};

use crate::{
    check::{Entry, Verdict, check},
    cluster::{Ledger, Node, Subscriber, publisher, start_node},
};

/// One scenario of the run.
pub(crate) struct Scenario {
    /// Its name, as the command line picks it.
    pub(crate) name: &'static str,
    /// What it does, for the report.
    pub(crate) what: &'static str,
}

/// Every scenario, in the order they run.
pub(crate) const ALL: &[Scenario] = &[
    Scenario {
        name: "redis-restart",
        what: "Redis killed and started again empty while a publisher runs; fresh and resumed streams on two nodes",
    },
    Scenario {
        name: "pubsub-kill",
        what: "CLIENT KILL TYPE pubsub (every node's subscription connection) twice while a publisher runs; nodes fill the hole from history, so no stream may end and no gap be sent",
    },
    Scenario {
        name: "redis-pause",
        what: "Redis frozen (SIGSTOP) for 2.5 s, longer than --node-ttl 1s, then thawed",
    },
    Scenario {
        name: "batch-redis-faults",
        what: "batches of 8 through POST /v1/publish/batch while Redis drops every command connection (CLIENT KILL TYPE normal), then the pub/sub ones, then is frozen for 2.5 s; the publisher sends again from the first failed event, and its events must land in its order",
    },
    Scenario {
        name: "node-pause",
        what: "a node holding subscribers frozen (SIGSTOP) for 2.5 s, longer than --node-ttl 1s, while Redis keeps everything; it is reaped, publishes skip it, and on thawing it must tell its streams before delivering anything newer",
    },
    Scenario {
        name: "node-kill",
        what: "kill -9 of a node holding subscribers; its clients resume on another node",
    },
    Scenario {
        name: "resume-race",
        what: "two-topic subscribers resuming every 100 ms, alternately on two nodes, while a publisher alternates the topics",
    },
    Scenario {
        name: "three-publishers",
        what: "three nodes publishing at once to shared topics, subscribers on every node",
    },
    Scenario {
        name: "eviction",
        what: "--history 20 on a busy topic beside a quiet one; a subscriber away long enough for the busy history to evict",
    },
    Scenario {
        name: "resume-storm",
        what: "kill -9 of a node with 40 subscribers, all resuming on another node at once",
    },
    Scenario {
        name: "cluster-primary-kill",
        what: "Redis Cluster (3 primaries, 3 replicas), 3 nodes publishing to 24 topics over every shard: a primary killed with SIGKILL, its replica promoted",
    },
    Scenario {
        name: "cluster-batch-primary-kill",
        what: "Redis Cluster: batches through POST /v1/publish/batch from 3 nodes, 20 events in a row to each topic (one script per run on its shard), while a primary is killed with SIGKILL and its replica promoted; each publisher sends again from its first failed event, and its events must land in its order",
    },
    Scenario {
        name: "cluster-reshard",
        what: "Redis Cluster: 4000 slots moved from the primary holding the most topics to another (redis-cli --cluster reshard) while 3 nodes publish; nodes notice the move, subscribe again and read back what they missed",
    },
    Scenario {
        name: "cluster-pubsub-kill",
        what: "Redis Cluster: CLIENT KILL TYPE pubsub on every process twice while 3 nodes publish; nodes fill the holes from history, so no stream may end and no gap be sent",
    },
    Scenario {
        name: "worker-restart",
        what: "the Durable-Object Worker (workerd) killed with SIGKILL and started again on its storage while a publisher runs; 3 nodes",
    },
    Scenario {
        name: "batch-worker-restart",
        what: "batches of 8 through POST /v1/publish/batch while the Durable-Object Worker (workerd) is killed with SIGKILL and started again on its storage; 3 nodes; the publisher sends again from the first failed event, and its events must land in its order",
    },
    Scenario {
        name: "worker-node-kill",
        what: "Durable-Object Worker: kill -9 of a node with subscribers, which resume on another node",
    },
    Scenario {
        name: "clock-skew",
        what: "a node whose wall clock is 20 s behind (faketime); nothing may be reaped, cut or reported",
    },
];

/// Runs one scenario and reports it as JSON.
pub(crate) async fn run(scenario: &Scenario, tideway: &Path) -> Value {
    let started = Instant::now();
    let outcome = match scenario.name {
        "redis-restart" => redis_restart(tideway).await,
        "pubsub-kill" => pubsub_kill(tideway).await,
        "redis-pause" => redis_pause(tideway).await,
        "batch-redis-faults" => batch_redis_faults(tideway).await,
        "node-pause" => node_pause(tideway).await,
        "node-kill" => node_kill(tideway).await,
        "resume-race" => resume_race(tideway).await,
        "three-publishers" => three_publishers(tideway).await,
        "eviction" => eviction(tideway).await,
        "resume-storm" => resume_storm(tideway).await,
        "clock-skew" => clock_skew(tideway).await,
        "worker-restart" => worker_restart(tideway).await,
        "batch-worker-restart" => batch_worker_restart(tideway).await,
        "worker-node-kill" => node_kill_on(Run::start_worker(tideway, 3, &[])).await,
        "cluster-primary-kill" => crate::sharded::primary_kill(tideway).await,
        "cluster-batch-primary-kill" => crate::sharded::batch_primary_kill(tideway).await,
        "cluster-reshard" => crate::sharded::reshard(tideway).await,
        "cluster-pubsub-kill" => crate::sharded::pubsub_kill(tideway).await,
        _ => Err("no such scenario".to_owned()),
    };
    let mut report = match outcome {
        Ok(outcome) => outcome.report(),
        Err(skipped) => json!({ "passed": true, "skipped": skipped }),
    };
    report["name"] = json!(scenario.name);
    report["what"] = json!(scenario.what);
    report["seconds"] = json!(started.elapsed().as_secs_f64());
    report
}

/// What a scenario leaves for the checker.
pub(crate) struct Outcome {
    subscribers: Vec<Subscriber>,
    ledger: Arc<Ledger>,
    /// Each topic's newest event id at the end.
    newest: HashMap<String, String>,
    /// Whether the fault must pass unnoticed: no gap, no stream ended.
    quiet: bool,
    /// What else the scenario wants to say.
    pub(crate) notes: Vec<String>,
    /// What the scenario expected to see and did not.
    pub(crate) unmet: Vec<String>,
}

impl Outcome {
    fn report(&self) -> Value {
        let accepted = self.ledger.accepted();
        let mut total = Verdict::default();
        let mut ends = 0;
        let mut errors = 0;
        let mut findings = Vec::new();
        for (n, subscriber) in self.subscribers.iter().enumerate() {
            let log = subscriber
                .record
                .log
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default();
            let verdict = check(&log, &subscriber.topics, &accepted, &self.newest);
            total.events += verdict.events;
            total.gaps += verdict.gaps;
            total.lost += verdict.lost;
            total.duplicates += verdict.duplicates;
            total.reorders += verdict.reorders;
            findings.extend(
                verdict
                    .findings
                    .iter()
                    .map(|f| format!("subscriber {n} ({}): {f}", subscriber.topics.join(","))),
            );
            ends += subscriber.record.ends.load(Relaxed);
            errors += subscriber.record.errors.load(Relaxed);
        }
        let exact = total.lost == 0 && total.duplicates == 0 && total.reorders == 0 && errors == 0;
        let quiet_ok = !self.quiet || (total.gaps == 0 && ends == 0);
        let events_flowed = total.events > 0 && !self.newest.is_empty();
        json!({
            "passed": exact && quiet_ok && events_flowed && self.unmet.is_empty(),
            "subscribers": self.subscribers.len(),
            "publishes_accepted": self.ledger.publishes_accepted.load(Relaxed),
            "publishes_dropped": self.ledger.publishes_dropped.load(Relaxed),
            "publishes_failed": self.ledger.publishes_failed.load(Relaxed),
            "events_received": total.events,
            "gaps_received": total.gaps,
            "streams_ended_to_resume": ends,
            "subscribe_errors": errors,
            "lost_silently": total.lost,
            "duplicated": total.duplicates,
            "reordered": total.reorders,
            "findings": findings,
            "expected_quiet": self.quiet,
            "notes": self.notes,
            "unmet": self.unmet,
        })
    }
}

/// Which topics publish `n` goes to: a, b, then both.
fn rotate(n: u64) -> &'static [&'static str] {
    match n % 3 {
        0 => &["a"],
        1 => &["b"],
        _ => &["a", "b"],
    }
}

fn alternate(n: u64) -> &'static [&'static str] {
    if n.is_multiple_of(2) { &["a"] } else { &["b"] }
}

fn mostly_busy(n: u64) -> &'static [&'static str] {
    if n.is_multiple_of(40) {
        &["quiet"]
    } else {
        &["busy"]
    }
}

fn redis_args(redis: &impl SharedStore, id: &str, extra: &[&str]) -> Vec<String> {
    let mut args = redis.node_args(id);
    let tuning = ["--node-ttl", "1s", "--topic-grace", "5s"];
    args.extend(tuning.iter().chain(extra).map(|s| (*s).to_owned()));
    args
}

/// A scenario's parts: a Redis (one server, or a Redis Cluster), gateway nodes sharing
/// it, and what publishers were told.
pub(crate) struct Run<R = RedisServer> {
    pub(crate) redis: R,
    pub(crate) nodes: Vec<Node>,
    pub(crate) ledger: Arc<Ledger>,
}

impl Run {
    /// Redis and `count` nodes `n1`, `n2`, … with `extra` flags.
    fn start(tideway: &Path, count: usize, extra: &[&str]) -> Self {
        Self::on(RedisServer::start(), tideway, count, extra)
    }
}

impl Run<RedisCluster> {
    /// A six-process Redis Cluster and `count` nodes on it with `extra` flags.
    pub(crate) fn start_cluster(tideway: &Path, count: usize, extra: &[&str]) -> Self {
        Self::on(RedisCluster::start(), tideway, count, extra)
    }
}

impl Run<Worker> {
    /// The Durable-Object Worker on workerd and `count` nodes on it with `extra` flags.
    fn start_worker(tideway: &Path, count: usize, extra: &[&str]) -> Self {
        Self::on(Worker::start(), tideway, count, extra)
    }
}

impl<R: SharedStore> Run<R> {
    fn on(redis: R, tideway: &Path, count: usize, extra: &[&str]) -> Self {
        let nodes = (1..=count)
            .map(|i| start_node(tideway, &redis_args(&redis, &format!("n{i}"), extra), None))
            .collect();
        Self {
            redis,
            nodes,
            ledger: Arc::default(),
        }
    }

    pub(crate) fn addr(&self, node: usize) -> String {
        self.nodes[node].addr.clone()
    }

    /// `count` subscribers of `topics` on node `node`.
    pub(crate) async fn subscribe(
        &self,
        node: usize,
        topics: &[&str],
        count: usize,
    ) -> Vec<Subscriber> {
        let mut all = Vec::with_capacity(count);
        for _ in 0..count {
            all.push(Subscriber::start(&self.nodes[node].addr, topics).await);
        }
        all
    }

    /// A publisher named `name` on node `node`: `count` events, one every `every_ms`.
    pub(crate) fn publish(
        &self,
        node: usize,
        name: &str,
        count: u64,
        every_ms: u64,
        plan: fn(u64) -> &'static [&'static str],
    ) -> tokio::task::JoinHandle<()> {
        let every = Duration::from_millis(every_ms);
        publisher(
            &self.nodes[node].addr,
            name,
            count,
            every,
            plan,
            self.ledger.clone(),
        )
    }

    /// A batch publisher named `name` on node `node`: `count` events, 8 to a batch, a
    /// batch every 20 ms (see [`crate::cluster::batch_publisher`]).
    pub(crate) fn publish_batches(
        &self,
        node: usize,
        name: &str,
        count: u64,
        plan: fn(u64) -> &'static [&'static str],
    ) -> (tokio::task::JoinHandle<()>, Arc<crate::cluster::BatchOrder>) {
        crate::cluster::batch_publisher(
            &self.nodes[node].addr,
            name,
            count,
            8,
            Duration::from_millis(20),
            plan,
            self.ledger.clone(),
        )
    }

    /// The sum over the live nodes of a counter of `/metrics`.
    pub(crate) async fn metric(&self, name: &str) -> u64 {
        let mut sum = 0;
        for node in &self.nodes {
            let Ok(addr) = node.addr.parse() else {
                continue;
            };
            let metrics = tideway_test_util::Client { addr }
                .get("/metrics", &[])
                .await;
            sum += metrics
                .text()
                .lines()
                // `name{node="…"} value`
                .filter(|line| {
                    line.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('{'))
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        sum
    }

    /// Waits for every subscriber to hold its topics' newest events as node `node` reports
    /// them (or gives up after a while, and the checker counts what is missing), then stops
    /// them.
    pub(crate) async fn settle(
        &self,
        node: usize,
        mut subscribers: Vec<Subscriber>,
        quiet: bool,
        notes: Vec<String>,
    ) -> Outcome {
        let admin = tideway_test_util::Client {
            addr: self.nodes[node].addr.parse().expect("an address"),
        };
        let mut topics: Vec<String> = subscribers.iter().flat_map(|s| s.topics.clone()).collect();
        topics.sort();
        topics.dedup();
        let mut newest = HashMap::new();
        for topic in &topics {
            let tail = admin
                .admin(&format!("/v1/admin/topics/{topic}/tail?limit=1"))
                .await;
            if tail.status == 200
                && let Some(id) = tail.json()["items"][0]["id"].as_str()
            {
                newest.insert(topic.clone(), id.to_owned());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let done = subscribers.iter().all(|s| {
                s.topics.iter().all(|t| {
                    newest
                        .get(t)
                        .is_none_or(|id| s.last_on(t).as_ref() == Some(id))
                })
            });
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for subscriber in &mut subscribers {
            subscriber.stop().await;
        }
        Outcome {
            subscribers,
            ledger: self.ledger.clone(),
            newest,
            quiet,
            notes,
            unmet: Vec::new(),
        }
    }
}

async fn redis_restart(tideway: &Path) -> Result<Outcome, String> {
    let mut run = Run::start(tideway, 2, &[]);
    let mut subs = run.subscribe(1, &["a", "b"], 4).await;
    subs.extend(run.subscribe(0, &["a"], 2).await);
    let load = run.publish(0, "p", 400, 5, rotate);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Two of them resume (on the same node) before the restart: their floor is a
    // position of the Redis about to go.
    for subscriber in subs.iter_mut().take(2) {
        subscriber.move_to(&run.addr(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    run.redis.restart();
    let _ = load.await;
    Ok(run.settle(1, subs, false, Vec::new()).await)
}

async fn pubsub_kill(tideway: &Path) -> Result<Outcome, String> {
    let run = Run::start(tideway, 2, &[]);
    let mut subs = run.subscribe(1, &["a", "b"], 4).await;
    subs.extend(run.subscribe(0, &["a", "b"], 2).await);
    let load = run.publish(0, "p", 500, 4, rotate);
    let mut notes = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let killed = run.redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        notes.push(format!("CLIENT KILL TYPE pubsub: {killed}"));
    }
    let _ = load.await;
    // The nodes read what they missed back from history: nobody is told, no stream ends.
    let mut outcome = run.settle(1, subs, true, notes).await;
    let repairs = run.metric("tideway_delivery_repairs_total").await;
    let recovered = run.metric("tideway_events_recovered_total").await;
    outcome.notes.push(format!(
        "holes filled from history: {repairs}, events recovered: {recovered}"
    ));
    if recovered == 0 {
        outcome
            .unmet
            .push("no node recovered an event from history after the kills".to_owned());
    }
    Ok(outcome)
}

async fn redis_pause(tideway: &Path) -> Result<Outcome, String> {
    let run = Run::start(tideway, 2, &[]);
    let mut subs = run.subscribe(1, &["a", "b"], 4).await;
    subs.extend(run.subscribe(0, &["a"], 2).await);
    let load = run.publish(0, "p", 500, 5, rotate);
    tokio::time::sleep(Duration::from_millis(700)).await;
    run.redis.pause();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    run.redis.resume();
    let _ = load.await;
    Ok(run.settle(1, subs, false, Vec::new()).await)
}

async fn batch_redis_faults(tideway: &Path) -> Result<Outcome, String> {
    let run = Run::start(tideway, 2, &[]);
    let mut subs = run.subscribe(1, &["a", "b"], 4).await;
    subs.extend(run.subscribe(0, &["a"], 2).await);
    let (load, order) = run.publish_batches(0, "p", 1200, rotate);
    let mut notes = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for kind in ["normal", "pubsub", "normal"] {
        let killed = run.redis.command(&["CLIENT", "KILL", "TYPE", kind]);
        notes.push(format!("CLIENT KILL TYPE {kind}: {killed}"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    run.redis.pause();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    run.redis.resume();
    let _ = load.await;
    let outcome = run.settle(1, subs, false, notes).await;
    Ok(batch_order_kept(outcome, &[order]))
}

async fn batch_worker_restart(tideway: &Path) -> Result<Outcome, String> {
    let mut run = Run::start_worker(tideway, 3, &[]);
    let mut subs = run.subscribe(1, &["a", "b"], 4).await;
    subs.extend(run.subscribe(2, &["a"], 2).await);
    let (load, order) = run.publish_batches(0, "p", 1200, rotate);
    let notes = restart_worker_after(&mut run, Duration::from_millis(700)).await;
    let _ = load.await;
    let outcome = run.settle(1, subs, false, notes).await;
    Ok(batch_order_kept(outcome, &[order]))
}

/// Adds to `outcome` what the batch publishers saw of their events' order: none may land
/// out of it or past a failed event of its batch, and some batch must have met the fault.
pub(crate) fn batch_order_kept(
    mut outcome: Outcome,
    orders: &[Arc<crate::cluster::BatchOrder>],
) -> Outcome {
    let sum = |count: fn(&crate::cluster::BatchOrder) -> u64| -> u64 {
        orders.iter().map(|order| count(order)).sum()
    };
    let resent = sum(|o| o.resent.load(Relaxed));
    outcome
        .notes
        .push(format!("batches sent again after a failure: {resent}"));
    let out_of_order = sum(|o| o.out_of_order.load(Relaxed));
    if out_of_order > 0 {
        outcome.unmet.push(format!(
            "{out_of_order} events landed out of their publisher's order"
        ));
    }
    let past = sum(|o| o.accepted_after_a_failure.load(Relaxed));
    if past > 0 {
        outcome.unmet.push(format!(
            "{past} events were published past a failed event of their batch"
        ));
    }
    if resent == 0 {
        outcome
            .unmet
            .push("no batch met a fault: nothing here was tested".to_owned());
    }
    outcome
}

async fn node_pause(tideway: &Path) -> Result<Outcome, String> {
    let run = Run::start(tideway, 2, &[]);
    let mut subs = run.subscribe(1, &["a", "b"], 4).await;
    subs.extend(run.subscribe(0, &["a"], 2).await);
    let load = run.publish(0, "p", 500, 5, rotate);
    tokio::time::sleep(Duration::from_millis(700)).await;
    run.nodes[1].pause();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    run.nodes[1].resume();
    let _ = load.await;
    let mut outcome = run.settle(0, subs, false, Vec::new()).await;
    let told: u64 = outcome
        .subscribers
        .iter()
        .take(4)
        .map(|s| s.record.ends.load(Relaxed))
        .sum();
    outcome
        .notes
        .push(format!("streams of the frozen node told to resume: {told}"));
    if told == 0 {
        outcome.unmet.push(
            "the frozen node's streams were not told, though publishes skipped it".to_owned(),
        );
    }
    Ok(outcome)
}

async fn node_kill(tideway: &Path) -> Result<Outcome, String> {
    node_kill_on(Run::start(tideway, 3, &[])).await
}

async fn node_kill_on<R: SharedStore>(mut run: Run<R>) -> Result<Outcome, String> {
    let mut subs = run.subscribe(2, &["a", "b"], 3).await;
    subs.extend(run.subscribe(1, &["a", "b"], 3).await);
    let load = run.publish(0, "p", 400, 5, rotate);
    tokio::time::sleep(Duration::from_millis(800)).await;
    run.nodes[2].kill();
    for subscriber in subs.iter_mut().take(3) {
        subscriber.move_to(&run.addr(1)).await;
    }
    let _ = load.await;
    Ok(run.settle(1, subs, false, Vec::new()).await)
}

/// Waits `delay`, then kills workerd with SIGKILL and starts it again on its storage;
/// says how long it was away.
async fn restart_worker_after(run: &mut Run<Worker>, delay: Duration) -> Vec<String> {
    tokio::time::sleep(delay).await;
    // Blocks this thread until workerd answers again, a few seconds.
    let started = Instant::now();
    tokio::task::block_in_place(|| run.redis.restart());
    vec![format!(
        "the Worker was down and starting again for {} ms",
        started.elapsed().as_millis()
    )]
}

async fn worker_restart(tideway: &Path) -> Result<Outcome, String> {
    let mut run = Run::start_worker(tideway, 3, &[]);
    let mut subs = run.subscribe(1, &["a", "b"], 4).await;
    subs.extend(run.subscribe(2, &["a"], 2).await);
    let load = run.publish(0, "p", 800, 5, rotate);
    let notes = restart_worker_after(&mut run, Duration::from_millis(700)).await;
    let _ = load.await;
    let mut outcome = run.settle(1, subs, false, notes).await;
    let repairs = run.metric("tideway_delivery_repairs_total").await;
    let recovered = run.metric("tideway_events_recovered_total").await;
    outcome.notes.push(format!(
        "holes filled from history: {repairs}, events recovered: {recovered}"
    ));
    Ok(outcome)
}

async fn resume_race(tideway: &Path) -> Result<Outcome, String> {
    let run = Run::start(tideway, 3, &[]);
    let mut subs = run.subscribe(1, &["a", "b"], 4).await;
    let load = run.publish(0, "p", 600, 2, alternate);
    let mut moves = 0;
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let addr = run.addr(1 + moves % 2);
        for subscriber in &mut subs {
            subscriber.move_to(&addr).await;
        }
        moves += 1;
    }
    let _ = load.await;
    let notes = vec![format!("{moves} rounds of resumes")];
    Ok(run.settle(1, subs, false, notes).await)
}

async fn three_publishers(tideway: &Path) -> Result<Outcome, String> {
    let run = Run::start(tideway, 3, &[]);
    let mut subs = Vec::new();
    for node in 0..3 {
        subs.extend(run.subscribe(node, &["a", "b"], 2).await);
    }
    let loads: Vec<_> = (0..3)
        .map(|node| run.publish(node, &format!("p{node}"), 300, 3, rotate))
        .collect();
    for load in loads {
        let _ = load.await;
    }
    Ok(run.settle(0, subs, true, Vec::new()).await)
}

async fn eviction(tideway: &Path) -> Result<Outcome, String> {
    let run = Run::start(tideway, 2, &["--history", "20"]);
    let mut subs = run.subscribe(1, &["quiet", "busy"], 3).await;
    let load = run.publish(0, "p", 600, 2, mostly_busy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // It goes away right after an event of the quiet topic, so its cursor is there and
    // the busy topic's history is what cannot prove continuity.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !subs[0].last_was("quiet") {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    subs[0].stop().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    subs[0].move_to(&run.addr(1)).await;
    let _ = load.await;
    let mut outcome = run.settle(1, subs, false, Vec::new()).await;
    let told = outcome.subscribers[0].record.log.lock().is_ok_and(|log| {
        log.iter().any(|e| {
            matches!(e, Entry::Gap { reason, topics } if reason == "history_evicted" && topics == &["busy".to_owned()])
        })
    });
    if told {
        outcome
            .notes
            .push("the subscriber away was told history_evicted, naming busy only".into());
    } else {
        outcome
            .unmet
            .push("the subscriber away was not told history_evicted naming busy".into());
    }
    Ok(outcome)
}

async fn resume_storm(tideway: &Path) -> Result<Outcome, String> {
    let mut run = Run::start(tideway, 3, &[]);
    let subs = run.subscribe(2, &["a", "b"], 40).await;
    let mut keepers = run.subscribe(1, &["a", "b"], 1).await;
    let load = run.publish(0, "p", 400, 4, rotate);
    tokio::time::sleep(Duration::from_millis(700)).await;
    run.nodes[2].kill();
    let survivor = run.addr(1);
    let moving: Vec<_> = subs
        .into_iter()
        .map(|mut subscriber| {
            let addr = survivor.clone();
            tokio::spawn(async move {
                subscriber.move_to(&addr).await;
                subscriber
            })
        })
        .collect();
    let mut subs = Vec::new();
    for handle in moving {
        subs.push(handle.await.map_err(|e| e.to_string())?);
    }
    subs.append(&mut keepers);
    let _ = load.await;
    Ok(run.settle(1, subs, false, Vec::new()).await)
}

async fn clock_skew(tideway: &Path) -> Result<Outcome, String> {
    if crate::cluster::faketime_library().is_none() {
        return Err("libfaketime is not installed (apt-get install faketime)".to_owned());
    }
    let mut run = Run::start(tideway, 1, &[]);
    let skewed = redis_args(&run.redis, "n2", &[]);
    run.nodes.push(start_node(tideway, &skewed, Some("-20")));
    let mut subs = run.subscribe(1, &["a", "b"], 4).await;
    subs.extend(run.subscribe(0, &["a", "b"], 2).await);
    let load = run.publish(0, "p", 400, 8, rotate);
    let _ = load.await;
    // The skew is real: the node reports a start 20 s before the other's.
    let admin = tideway_test_util::Client {
        addr: run.addr(0).parse().expect("an address"),
    };
    let nodes = admin.admin("/v1/admin/nodes").await.json();
    let started = |id: &str| {
        nodes["items"]
            .as_array()
            .and_then(|all| all.iter().find(|n| n["id"] == id))
            .and_then(|n| n["startedAt"].as_i64())
            .unwrap_or(0)
    };
    let behind = started("n1") - started("n2");
    let mut outcome = run.settle(1, subs, true, Vec::new()).await;
    if (15_000..25_000).contains(&behind) {
        outcome
            .notes
            .push(format!("n2's clock ran {behind} ms behind n1's"));
    } else {
        outcome
            .unmet
            .push(format!("n2's clock was not 20 s behind ({behind} ms)"));
    }
    Ok(outcome)
}
