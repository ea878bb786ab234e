//! The real parts of a scenario: `tideway` nodes, recording subscribers and publishers.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tideway_client::{BatchEvent, BatchOutcome, Client, Message, Published, SubscriptionOptions};
use tideway_test_util::TidewayProcess;
use tokio::task::JoinHandle;

use crate::check::Entry;

/// The publishers' key on every node.
pub(crate) const KEY: &str = tideway_test_util::API_KEY;

/// One `tideway` process.
pub(crate) type Node = TidewayProcess;

/// Starts a node with `args`; with `clock_offset`, its wall clock that far off
/// (libfaketime preloaded into the process itself, so killing the node kills what runs).
pub(crate) fn start_node(tideway: &Path, args: &[String], clock_offset: Option<&str>) -> Node {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut env: Vec<(&str, std::ffi::OsString)> = Vec::new();
    if let Some(offset) = clock_offset {
        let library = faketime_library().expect("libfaketime is installed");
        env.push(("LD_PRELOAD", library.into_os_string()));
        env.push(("FAKETIME", offset.into()));
        env.push(("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()));
    }
    TidewayProcess::start(tideway, &args, env)
}

/// Where Debian's libfaketime (the multi-threaded one) is, if installed.
pub(crate) fn faketime_library() -> Option<std::path::PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|dir| dir.path().join("faketime").join("libfaketimeMT.so.1"))
        .find(|path| path.exists())
}

/// What a subscriber received, kept across the connections it moves between.
#[derive(Default)]
pub(crate) struct Record {
    pub(crate) log: Mutex<Vec<Entry>>,
    /// The id a resume starts after: the last event received.
    pub(crate) last_id: Mutex<Option<String>>,
    /// `tideway.*` messages that ended a stream (resync, drain, slow consumer).
    pub(crate) ends: AtomicU64,
    /// Subscribes refused or failed for good.
    pub(crate) errors: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A subscriber that records everything, on one node at a time.
pub(crate) struct Subscriber {
    pub(crate) topics: Vec<String>,
    pub(crate) record: Arc<Record>,
    task: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes to `topics` on the node at `addr` and waits until the stream is open.
    pub(crate) async fn start(addr: &str, topics: &[&str]) -> Self {
        let mut subscriber = Self {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            record: Arc::new(Record::default()),
            task: None,
        };
        subscriber.connect(addr).await;
        subscriber
    }

    /// Drops the current connection (as a client whose network broke) and resumes on
    /// `addr` with the last id received.
    pub(crate) async fn move_to(&mut self, addr: &str) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.connect(addr).await;
    }

    /// Stops receiving.
    pub(crate) async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn connect(&mut self, addr: &str) {
        let client = Client::new(&format!("http://{addr}"), None).expect("a base URL");
        let options = SubscriptionOptions {
            heartbeat_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            last_event_id: lock(&self.record.last_id).clone(),
            ..SubscriptionOptions::default()
        };
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        // The client retries an unreachable or busy node by itself; a node that stays
        // away this long counts as an error.
        let subscription = tokio::time::timeout(
            Duration::from_secs(20),
            client.subscribe_with(&topics, options),
        )
        .await
        .ok()
        .and_then(Result::ok);
        let Some(mut subscription) = subscription else {
            self.record.errors.fetch_add(1, Relaxed);
            return;
        };
        let record = self.record.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                match subscription.next().await {
                    Ok(Some(Message::Event { topic, id, .. })) => {
                        lock(&record.log).push(Entry::Event {
                            topic,
                            id: id.clone(),
                        });
                        *lock(&record.last_id) = Some(id);
                    }
                    Ok(Some(Message::Gap { reason, topics, .. })) => {
                        lock(&record.log).push(Entry::Gap { reason, topics });
                    }
                    Ok(Some(Message::System { event, .. })) => {
                        lock(&record.log).push(Entry::End { event });
                        record.ends.fetch_add(1, Relaxed);
                    }
                    Ok(None) => return,
                    Err(_) => {
                        record.errors.fetch_add(1, Relaxed);
                        return;
                    }
                }
            }
        }));
    }

    /// Whether the last thing received was an event of `topic`.
    pub(crate) fn last_was(&self, topic: &str) -> bool {
        matches!(lock(&self.record.log).last(), Some(Entry::Event { topic: t, .. }) if t == topic)
    }

    /// The last id received on `topic`.
    pub(crate) fn last_on(&self, topic: &str) -> Option<String> {
        lock(&self.record.log).iter().rev().find_map(|e| match e {
            Entry::Event { topic: t, id } if t == topic => Some(id.clone()),
            _ => None,
        })
    }
}

/// What publishers were told.
#[derive(Default)]
pub(crate) struct Ledger {
    /// (topic, id) → sequence number, for every `202`.
    pub(crate) accepted: Mutex<HashMap<(String, String), u64>>,
    pub(crate) publishes_accepted: AtomicU64,
    pub(crate) publishes_dropped: AtomicU64,
    /// Refused (503), failed or timed out: the publisher knows it was not delivered.
    pub(crate) publishes_failed: AtomicU64,
}

impl Ledger {
    pub(crate) fn accepted(&self) -> HashMap<(String, String), u64> {
        lock(&self.accepted).clone()
    }

    /// Records that the publish `id` was accepted as `list` (topic, sequence number).
    fn record_accepted(&self, id: &str, list: &[(String, u64)]) {
        let mut accepted = lock(&self.accepted);
        for (topic, seq) in list {
            accepted.insert((topic.clone(), id.to_owned()), *seq);
        }
        self.publishes_accepted.fetch_add(1, Relaxed);
    }
}

/// Publishes `count` events to the node at `addr`, each to the topics `plan` picks for its
/// number, one every `interval`; ids are `<name>-<n>`, never reused.
pub(crate) fn publisher(
    addr: &str,
    name: &str,
    count: u64,
    interval: Duration,
    plan: fn(u64) -> &'static [&'static str],
    ledger: Arc<Ledger>,
) -> JoinHandle<()> {
    let client = Client::new(&format!("http://{addr}"), Some(KEY)).expect("a base URL");
    let name = name.to_owned();
    tokio::spawn(async move {
        for n in 1..=count {
            let topics = plan(n);
            let id = format!("{name}-{n}");
            let answer = tokio::time::timeout(
                Duration::from_secs(5),
                client.publish(topics, &id, None, "x"),
            )
            .await;
            match answer {
                Ok(Ok(Published::Accepted(list))) => ledger.record_accepted(&id, &list),
                Ok(Ok(Published::Dropped)) => {
                    ledger.publishes_dropped.fetch_add(1, Relaxed);
                }
                _ => {
                    ledger.publishes_failed.fetch_add(1, Relaxed);
                }
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// What a batch publisher saw go wrong with the order of its own events.
#[derive(Default)]
pub(crate) struct BatchOrder {
    /// Events accepted with a sequence number not above that of an earlier event of the
    /// same publisher on the same topic: published out of the publisher's order.
    pub(crate) out_of_order: AtomicU64,
    /// Events answered accepted after an earlier event of the same answer failed: the
    /// batch went on past a failure, so they landed before the retry of the failed one.
    pub(crate) accepted_after_a_failure: AtomicU64,
    /// Batch requests sent again (from their first failed event) after an error.
    pub(crate) resent: AtomicU64,
}

/// Publishes `count` events to the node at `addr` in batches of `size` through
/// `POST /v1/publish/batch`, one batch every `interval`, each event to the topics `plan`
/// picks for its number; ids are `<name>-<n>`. As docs/http-api.md tells a publisher: an
/// event refused by the store, and every event after it, is sent again (with the same
/// id) until accepted; a batch whose answer never came is sent again whole. Returns the
/// task and what it saw of its events' order.
pub(crate) fn batch_publisher(
    addr: &str,
    name: &str,
    count: u64,
    size: usize,
    interval: Duration,
    plan: fn(u64) -> &'static [&'static str],
    ledger: Arc<Ledger>,
) -> (JoinHandle<()>, Arc<BatchOrder>) {
    let client = Client::new(&format!("http://{addr}"), Some(KEY)).expect("a base URL");
    let name = name.to_owned();
    let order = Arc::new(BatchOrder::default());
    let seen = order.clone();
    let task = tokio::spawn(async move {
        let mut last_seq: HashMap<String, u64> = HashMap::new();
        let mut next = 1;
        let mut attempts = 0;
        while next <= count {
            let numbers: Vec<u64> = (next..=count).take(size).collect();
            let ids: Vec<String> = numbers.iter().map(|n| format!("{name}-{n}")).collect();
            let events: Vec<BatchEvent<'_>> = numbers
                .iter()
                .zip(&ids)
                .map(|(n, id)| BatchEvent {
                    topics: plan(*n),
                    id,
                    event: None,
                    data: "x",
                })
                .collect();
            let answer =
                tokio::time::timeout(Duration::from_secs(5), client.publish_batch(&events, false))
                    .await;
            let outcomes = match answer {
                Ok(Ok(outcomes)) if outcomes.len() == events.len() => outcomes,
                _ => Vec::new(),
            };
            let mut failed = false;
            for (id, outcome) in ids.iter().zip(&outcomes) {
                match outcome {
                    BatchOutcome::Published(Published::Accepted(list)) if !failed => {
                        for (topic, seq) in list {
                            let last = last_seq.entry(topic.clone()).or_default();
                            if *seq <= *last {
                                order.out_of_order.fetch_add(1, Relaxed);
                            }
                            *last = *seq;
                        }
                        ledger.record_accepted(id, list);
                        next += 1;
                    }
                    BatchOutcome::Published(Published::Dropped) if !failed => {
                        ledger.publishes_dropped.fetch_add(1, Relaxed);
                        next += 1;
                    }
                    BatchOutcome::Published(_) => {
                        order.accepted_after_a_failure.fetch_add(1, Relaxed);
                    }
                    BatchOutcome::Refused { .. } | BatchOutcome::Skipped => failed = true,
                }
            }
            if failed || outcomes.is_empty() {
                attempts += 1;
                order.resent.fetch_add(1, Relaxed);
                if attempts > 100 {
                    // Given up: the rest was never acknowledged, and the publisher knows.
                    ledger.publishes_failed.fetch_add(count + 1 - next, Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                attempts = 0;
                tokio::time::sleep(interval).await;
            }
        }
    });
    (task, seen)
}
