//! The store trait: the gateway's shared state, shaped after Durable Objects.
//!
//! A Durable Object is a single-threaded object addressed by name that owns its state,
//! handles one message at a time and gives consistent reads. The store's state is split
//! the same way, so each adapter maps it onto what it has:
//!
//! - one **topic object** per topic name (`join`, `leave`, `live`, `append`, `tail`): its
//!   connections, the nodes they are on, and its bounded history;
//! - one **directory object** (`register_node`, `nodes`, `add_connection`,
//!   `remove_connection`, `connections`, `topics`, `revoke_token`, `token_revoked`): the
//!   cluster's nodes and connections, and revoked tokens.
//!
//! Every method is one message to one object and is atomic with respect to other messages
//! to that object; a read after a write to the same object sees the write. The in-memory
//! adapter keeps the objects in this process, the Redis adapter in Redis keys changed by
//! scripts, the DO-emulation adapter in one task per object.
//!
//! Delivery goes through the store too: [`Store::append`] records an event in the history
//! of each of its topics and hands it to every node that holds a subscriber of one of
//! them — to this node through the [`Inbox`] given to [`Store::attach`]. A publish to
//! several topics is one message to all of their objects, ordered by the store's sequencer:
//! it gets one *position*, larger than that of every publish delivered before it, and each
//! node's inbox receives publishes in position order. Resume relies on that order.
//!
//! Positions count within an **epoch**: a random id the store's sequencer takes when it
//! starts from nothing. A store that restarts empty (or fails over and loses what it had)
//! starts a new epoch, so a position from before can never be mistaken for one after.
//! When a store finds that what it delivered to this node may have a hole — a lost
//! message, a restart, a lapsed registration — it says so through
//! [`Inbox::interrupt`], and the engine tells the subscribers.

use std::{
    future::Future,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use tideway_protocol::{EventId, TopicList, TopicName};

use crate::{
    ConnectionId, ConnectionRecord, Event, HistoryRead, Inbox, NodeRecord, Page, Paged, TopicEvent,
    TopicRecord,
};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's backend cannot be reached; the request may succeed later.
    #[error("the state store is unreachable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Which publishes a store's positions order against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// One sequencer for every topic: a publish's position is larger than that of every
    /// publish delivered before it, across topics, and a node's inbox receives publishes
    /// in that order. A `Last-Event-ID` places a client in every topic of its stream.
    Global,
    /// Each topic is its own sequencer (Redis Cluster: a topic's keys live on one shard,
    /// no script spans two): an event's epoch and position belong to its topic and are
    /// compared only within it. Order holds within each topic; a publish to several
    /// topics reaches them independently, and a `Last-Event-ID` places a client only in
    /// the one topic that holds it (the others are told: [`crate::GapReason::CrossTopicCursor`]).
    PerTopic,
}

/// The shared state of the gateway. See the module documentation for its object model.
pub trait Store: Send + Sync + 'static {
    /// Which publishes this store's positions order against each other.
    const ORDER: Order = Order::Global;

    /// Whether [`Store::live`] is a round trip to another process. A publish whose body
    /// is already at hand then skips it: [`Store::append`] skips topics that are not
    /// live by itself, so one call does the work of two.
    const LIVE_IS_REMOTE: bool = false;

    /// Gives the store this node's inbox, on which it delivers the events of topics this
    /// node subscribes to. Called once, before any other method.
    fn attach(&self, inbox: Inbox);

    // Directory object.

    /// Records (or refreshes) this node's identity.
    fn register_node(
        &self,
        node: &NodeRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every node of the cluster, in id order.
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeRecord>, StoreError>> + Send;

    /// Records a new connection. A store that keeps the record in memory keeps this
    /// one, shared with the subscription, rather than a copy of its own.
    fn add_connection(
        &self,
        connection: &Arc<ConnectionRecord>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets a connection.
    fn remove_connection(
        &self,
        id: &ConnectionId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of the cluster's connections, oldest first.
    fn connections(
        &self,
        page: Page,
    ) -> impl Future<Output = Result<Paged<ConnectionRecord>, StoreError>> + Send;

    /// One page of the cluster's live topics, by name.
    fn topics(
        &self,
        page: Page,
    ) -> impl Future<Output = Result<Paged<TopicRecord>, StoreError>> + Send;

    // Topic objects.

    /// Adds a connection to a topic, bringing the topic into being if it was not live.
    fn join(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a connection from a topic. A topic left with no connection is removed from
    /// every index (after the configured grace, if any).
    fn leave(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Which of `topics` have a subscriber anywhere (or are within their grace), in the
    /// order given: one consistent read of those topic objects.
    fn live(
        &self,
        topics: &TopicList,
    ) -> impl Future<Output = Result<Vec<TopicName>, StoreError>> + Send;

    /// Appends an event to the history of each of `topics` that is still live, under one
    /// new position, and delivers it to every node holding a subscriber of those topics.
    /// Returns what was appended, one entry per topic, in the order of `topics`; a topic
    /// whose last subscriber left since [`Store::live`] was asked is skipped.
    fn append(
        &self,
        topics: &TopicList,
        event: &Arc<Event>,
    ) -> impl Future<Output = Result<Vec<Arc<TopicEvent>>, StoreError>> + Send;

    /// Appends each of `events` (its topics, the event) as [`Store::append`] would, one
    /// after another in their order, and answers each as `append` would have, in the
    /// same order: a batch publish's events. It stops at its first error: the events of
    /// the step that failed (one `append`, or one script or message for many: see
    /// [`step_failed`]) are answered with it, and those after are neither appended nor
    /// answered (the answers are fewer than the events only then), so a batch's events
    /// on one topic never land around a failed one its publisher will retry. The default
    /// makes one `append` call each; a store that can take them in fewer steps (one
    /// lock, one round trip for many) does.
    fn append_all(
        &self,
        events: &[(TopicList, Arc<Event>)],
    ) -> impl Future<Output = Vec<Result<Vec<Arc<TopicEvent>>, StoreError>>> + Send {
        append_each(self, events)
    }

    /// The topic's last `limit` events, oldest first; `None` when the topic is not live.
    fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<Arc<TopicEvent>>>, StoreError>> + Send;

    /// One consistent read of the histories of `topics` for a resume after
    /// `last_event_id`: no publish lands between the reads of two topics. For each live
    /// topic: where its history starts to be complete, where the id appears in it, and its
    /// events after the earliest appearance of the id in any of the topics (none when no
    /// topic holds the id). Under [`Order::PerTopic`] each topic's read stands alone
    /// (positions do not compare across topics): its own epoch, its events after its own
    /// earliest appearance of the id (none when it does not hold it), and the other
    /// topics the id was published to. See [`HistoryRead`].
    fn read_since(
        &self,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> impl Future<Output = Result<HistoryRead, StoreError>> + Send;

    /// Revokes token `id` until `until` (its expiry, in milliseconds since the Unix
    /// epoch): records it so it is refused from now on, and has every node end the
    /// subscriptions it granted (through [`Inbox::revoke_token`]).
    fn revoke_token(
        &self,
        id: &str,
        until: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether token `id` was revoked (and has not expired since).
    fn token_revoked(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Whether the store's backend answers now.
    fn ready(&self) -> impl Future<Output = bool> + Send;
}

/// Whether a shared store's view of this node's connections has drifted from the node's
/// own: how many it holds for the node differs from the node's count on two heartbeats in
/// a row (on one, a subscribe or close in flight explains it). The rule of every store
/// with a backend; each then puts its view right (registers what is missing, takes out
/// what the node no longer holds).
#[derive(Debug, Default)]
pub struct Drift {
    streak: AtomicUsize,
}

impl Drift {
    /// Records one beat's comparison; `true` when the store's view should be put right
    /// now (the streak starts again).
    pub fn observe(&self, differs: bool) -> bool {
        if !differs {
            self.streak.store(0, Relaxed);
            return false;
        }
        if self.streak.fetch_add(1, Relaxed) + 1 >= 2 {
            self.streak.store(0, Relaxed);
            return true;
        }
        false
    }
}

/// A digest of a set of connection ids that does not depend on their order: the sum mod
/// 2^32 of each id's FNV-1a (32-bit, over its bytes). A store whose backend reports the
/// same of what it holds for a node (the Durable-Object Worker's `digest` in `worker/src/model.ts`)
/// sees a difference a count would miss: one connection lost and another left behind.
pub fn connection_digest<'a>(ids: impl IntoIterator<Item = &'a str>) -> u32 {
    ids.into_iter().fold(0u32, |sum, id| {
        let hash = id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(16_777_619)
        });
        sum.wrapping_add(hash)
    })
}

/// Runs a shared store's heartbeat every `period` (at least 50 ms) until the store is
/// dropped: `beat` refreshes this node's registration with the backend; `healthy` is set
/// to whether the last beat reached it, and a change is logged once. The one loop of
/// every store with a backend (Redis, Redis Cluster, the Durable-Object Worker).
pub fn spawn_heartbeat<T, F, Fut>(
    store: Weak<T>,
    period: Duration,
    backend: &'static str,
    healthy: fn(&T) -> &AtomicBool,
    mut beat: F,
) where
    T: Send + Sync + 'static,
    F: FnMut(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(50)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(shared) = store.upgrade() else {
                return;
            };
            let reached = match beat(shared.clone()).await {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(error = %err, backend, "heartbeat to the store failed");
                    false
                }
            };
            if healthy(&shared).swap(reached, Relaxed) != reached {
                tracing::info!(healthy = reached, backend, "store reachability changed");
            }
        }
    });
}

/// The answers for `count` (at least one) events of a batch that one step of a store
/// (one script, one message) took and failed with `err`: each of them answered with the
/// error, since any of them may have landed (its retry is answered as such). The store's
/// batch ends there.
pub fn step_failed(
    err: StoreError,
    count: usize,
) -> impl Iterator<Item = Result<Vec<Arc<TopicEvent>>, StoreError>> {
    let message = match &err {
        StoreError::Unavailable(source) => source.to_string(),
    };
    std::iter::once(Err(err))
        .chain((1..count).map(move |_| Err(StoreError::Unavailable(message.clone().into()))))
}

/// [`Store::append_all`] as one [`Store::append`] per event, stopping at the first error:
/// the default, and what a store wrapper that changes `append` calls to keep its rule.
pub async fn append_each<S: Store + ?Sized>(
    store: &S,
    events: &[(TopicList, Arc<Event>)],
) -> Vec<Result<Vec<Arc<TopicEvent>>, StoreError>> {
    let mut appended = Vec::with_capacity(events.len());
    for (topics, event) in events {
        let answer = store.append(topics, event).await;
        let failed = answer.is_err();
        appended.push(answer);
        if failed {
            break;
        }
    }
    appended
}

#[cfg(test)]
mod tests {
    use super::{Drift, connection_digest};

    #[test]
    fn the_connection_digest_is_fnv1a_summed() {
        // Values from an independent FNV-1a; the Worker's TypeScript computes the same.
        assert_eq!(connection_digest([]), 0);
        assert_eq!(connection_digest(["a"]), 0xe40c_292c);
        assert_eq!(connection_digest(["n1/1", "n1/2"]), 0xcfc6_d501);
        assert_eq!(
            connection_digest(["n1/2", "n1/1"]),
            0xcfc6_d501,
            "any order"
        );
        assert_eq!(connection_digest(["a", "ü/é"]), 0x26a7_6913, "UTF-8 bytes");
    }

    #[test]
    fn drift_is_two_differing_beats_in_a_row() {
        let drift = Drift::default();
        assert!(!drift.observe(true), "one beat: a change in flight");
        assert!(!drift.observe(false));
        assert!(!drift.observe(true), "the streak started again");
        assert!(drift.observe(true), "two in a row");
        assert!(!drift.observe(true), "put right: it starts again");
        assert!(drift.observe(true));
    }
}
