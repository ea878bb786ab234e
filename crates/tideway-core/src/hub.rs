//! This node's subscribers: who listens to which topic, each behind a bounded queue.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU8, Ordering::Relaxed},
    },
};

use tideway_protocol::{PrehashedMap, TopicList, TopicName};

use crate::{
    HistoryRead, Stats, TopicEvent, TopicHistory,
    queue::{QueueReceiver, QueueSender, QueueWaker, TrySendError, Wakes, queue},
};

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The subscriber did not read fast enough: its queue filled and it was cut off, so
    /// it can reconnect and resume instead of holding up memory.
    SlowConsumer,
    /// The node is draining: the subscriber should reconnect to another node.
    Draining,
    /// The token that granted the subscription no longer does.
    Revoked(Revocation),
    /// The store lost events on their way to this node: the subscriber should reconnect
    /// with its last id, and resume fills the hole from history (or says what it cannot).
    Interrupted,
}

/// What a store found wrong with its delivery to this node (see [`Inbox::interrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The store restarted or failed over and started a new epoch: what it held is gone,
    /// so nothing can be replayed. Subscriptions are told (a gap) and go on.
    StoreRestarted,
    /// Events on their way to this node were lost (a dropped connection, a lagging
    /// buffer, a lapsed registration) but the store may still hold them. Subscriptions
    /// end, and their clients resume from history.
    DeliveryLost,
}

impl Interruption {
    fn code(self) -> u8 {
        match self {
            Interruption::StoreRestarted => 1,
            Interruption::DeliveryLost => 2,
        }
    }
}

/// Why a token's subscriptions were ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The token reached its expiry.
    TokenExpired,
    /// The token was revoked.
    TokenRevoked,
    /// The key that signed the token was removed, expired or lost its right to sign.
    KeyRevoked,
}

impl Revocation {
    fn code(self) -> u8 {
        match self {
            Revocation::TokenExpired => 1,
            Revocation::TokenRevoked => 2,
            Revocation::KeyRevoked => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Revocation::TokenExpired),
            2 => Some(Revocation::TokenRevoked),
            3 => Some(Revocation::KeyRevoked),
            _ => None,
        }
    }
}

/// What a subscriber token granted a subscription: kept so the subscription can be ended
/// when the token or its key stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's id (`jti`).
    pub token_id: String,
    /// The name of the key that signed it.
    pub key: String,
    /// Who the token was issued to (`sub`).
    pub subject: String,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at: u64,
}

/// The local topic table. Cloning bumps a reference count.
///
/// The store delivers this node's events through it (see [`Inbox`]).
#[derive(Clone)]
pub(crate) struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    /// A std mutex: each critical section is a few map operations and one non-blocking
    /// `try_send` per subscriber, and none of them awaits, so tokio's mutex would only
    /// cost more.
    table: Mutex<PrehashedMap<TopicName, Vec<Subscriber>>>,
    /// Subscriptions granted by a token, by connection number.
    grants: Mutex<HashMap<u64, (Grant, Arc<SubscriberState>)>>,
    stats: Arc<Stats>,
}

/// One connection's entry in every topic it subscribes to.
#[derive(Clone)]
struct Subscriber {
    number: u64,
    queue: QueueSender,
    state: Arc<SubscriberState>,
}

/// What to do when a subscriber is cut off for falling behind.
type OnCut = Box<dyn FnOnce() + Send>;

/// What the hub and the connection's reader share.
pub(crate) struct SubscriberState {
    topics: TopicList,
    cut: AtomicBool,
    /// Why the grant of the subscription was revoked: 0 while it stands, else
    /// [`Revocation::code`]. An atomic: the subscription reads it before every event.
    revoked: AtomicU8,
    /// What the store found wrong with delivery since the reader last looked: 0 for
    /// nothing, else the largest [`Interruption::code`] (losing events outranks a restart).
    interrupted: AtomicU8,
    /// Wakes the reader when its grant is revoked, delivery is interrupted or the node
    /// drains.
    reader: QueueWaker,
    /// Called once if the subscriber is cut off (see `Subscription::on_cut`).
    on_cut: Mutex<Option<OnCut>>,
}

impl SubscriberState {
    /// Whether the hub cut the subscriber off for falling behind.
    pub(crate) fn was_cut(&self) -> bool {
        self.cut.load(Relaxed)
    }

    fn on_cut(&self) -> MutexGuard<'_, Option<OnCut>> {
        // Holds one option: a poisoned lock holds it whole.
        self.on_cut.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` when the subscriber is cut off, or now if it already was.
    pub(crate) fn set_on_cut(&self, f: OnCut) {
        let mut slot = self.on_cut();
        // Checked under the lock the hub takes to find `f` after setting the flag: one of
        // the two runs it.
        if self.was_cut() {
            drop(slot);
            f();
        } else {
            *slot = Some(f);
        }
    }

    /// Marks the subscriber cut off and runs what was asked for then.
    fn cut(&self) {
        self.cut.store(true, Relaxed);
        let f = self.on_cut().take();
        if let Some(f) = f {
            f();
        }
    }

    /// Forgets what to do on a cut: the subscription ended otherwise.
    pub(crate) fn close(&self) {
        self.on_cut().take();
    }

    fn revoke(&self, why: Revocation) {
        // The first reason stays.
        let _ = self
            .revoked
            .compare_exchange(0, why.code(), Relaxed, Relaxed);
        self.reader.wake();
    }

    /// Why the grant was revoked, if it was.
    pub(crate) fn revocation(&self) -> Option<Revocation> {
        Revocation::from_code(self.revoked.load(Relaxed))
    }

    fn interrupt(&self, why: Interruption) {
        self.interrupted.fetch_max(why.code(), Relaxed);
        self.reader.wake();
    }

    /// What interrupted delivery and was not handled yet. A lost delivery stays, so the
    /// subscription ends whenever it looks again.
    pub(crate) fn interruption(&self) -> Option<Interruption> {
        match self.interrupted.load(Relaxed) {
            0 => None,
            1 => Some(Interruption::StoreRestarted),
            _ => Some(Interruption::DeliveryLost),
        }
    }

    /// Marks a restart as told. A loss arriving meanwhile is kept.
    pub(crate) fn clear_restart(&self) {
        let _ = self.interrupted.compare_exchange(1, 0, Relaxed, Relaxed);
    }
}

impl Hub {
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: Mutex::new(PrehashedMap::new()),
                grants: Mutex::new(HashMap::new()),
                stats,
            }),
        }
    }

    /// Adds connection `number` to `topics` behind a queue of `capacity` events.
    pub(crate) fn add(
        &self,
        number: u64,
        topics: &TopicList,
        capacity: usize,
    ) -> (QueueReceiver, Arc<SubscriberState>) {
        let (queue, receiver) = queue(capacity);
        let state = Arc::new(SubscriberState {
            topics: topics.clone(),
            cut: AtomicBool::new(false),
            revoked: AtomicU8::new(0),
            interrupted: AtomicU8::new(0),
            reader: queue.waker(),
            on_cut: Mutex::new(None),
        });
        let subscriber = Subscriber {
            number,
            queue,
            state: state.clone(),
        };
        let mut table = self.lock();
        for topic in topics {
            // In connection-number order, which `Inbox::deliver` relies on: numbers are
            // given out in order, so this is nearly always the end.
            let list = table.entry(topic.clone()).or_default();
            let at = list.partition_point(|s| s.number < number);
            list.insert(at, subscriber.clone());
        }
        (receiver, state)
    }

    /// Removes connection `number` from `topics`; a topic left empty leaves the table.
    pub(crate) fn remove(&self, number: u64, topics: &TopicList) {
        remove(&mut self.lock(), number, topics);
        self.grants().remove(&number);
    }

    /// Remembers what token granted connection `number`.
    pub(crate) fn grant(&self, number: u64, grant: Grant, state: Arc<SubscriberState>) {
        self.grants().insert(number, (grant, state));
    }

    /// Ends every subscription whose grant `revoked` picks, telling it `why`; returns how
    /// many.
    pub(crate) fn revoke(&self, revoked: impl Fn(&Grant) -> bool, why: Revocation) -> usize {
        let grants = self.grants();
        let mut count = 0;
        for (grant, state) in grants.values() {
            if revoked(grant) {
                state.revoke(why);
                count += 1;
            }
        }
        count
    }

    fn grants(&self) -> MutexGuard<'_, HashMap<u64, (Grant, Arc<SubscriberState>)>> {
        // One map operation per critical section; a poisoned lock holds a whole map.
        self.shared
            .grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells every subscriber of this node that delivery was interrupted.
    pub(crate) fn interrupt(&self, why: Interruption) -> usize {
        let table = self.lock();
        tell(table.values().flatten(), why)
    }

    /// Tells the subscribers of any of `topics` that delivery was interrupted; returns how
    /// many.
    pub(crate) fn interrupt_topics(&self, why: Interruption, topics: &[TopicName]) -> usize {
        let table = self.lock();
        tell(topics.iter().filter_map(|t| table.get(t)).flatten(), why)
    }

    /// The topics with a subscriber on this node.
    pub(crate) fn topics(&self) -> Vec<TopicName> {
        self.lock().keys().cloned().collect()
    }

    /// Wakes every subscriber's reader, to look again at the gateway's state (a drain).
    pub(crate) fn wake_all(&self) {
        let table = self.lock();
        for subscriber in table.values().flatten() {
            subscriber.state.reader.wake();
        }
    }

    /// How many topics have a subscriber on this node.
    pub(crate) fn topic_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, PrehashedMap<TopicName, Vec<Subscriber>>> {
        // A panic while holding the lock cannot leave the map half-changed in a way that
        // matters (each step is one map operation), so a poisoned lock is still usable.
        self.shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Tells each connection among `subscribers` once (one following several topics is met
/// once per topic) that delivery was interrupted; returns how many were told.
fn tell<'s>(subscribers: impl Iterator<Item = &'s Subscriber>, why: Interruption) -> usize {
    let mut told = std::collections::HashSet::new();
    for subscriber in subscribers {
        if told.insert(subscriber.number) {
            subscriber.state.interrupt(why);
        }
    }
    told.len()
}

fn remove(table: &mut PrehashedMap<TopicName, Vec<Subscriber>>, number: u64, topics: &TopicList) {
    for topic in topics {
        if let Some(subscribers) = table.get_mut(topic) {
            subscribers.retain(|s| s.number != number);
            if subscribers.is_empty() {
                table.remove(topic);
            }
        }
    }
}

/// Where the store delivers events of topics this node subscribes to.
#[derive(Clone)]
pub struct Inbox {
    hub: Hub,
}

impl Inbox {
    pub(crate) fn new(hub: Hub) -> Self {
        Self { hub }
    }

    /// Ends this node's subscriptions granted by token `token_id`; the store calls it on
    /// every node when a token is revoked.
    pub fn revoke_token(&self, token_id: &str) {
        let ended = self
            .hub
            .revoke(|g| g.token_id == token_id, Revocation::TokenRevoked);
        if ended > 0 {
            tracing::info!(token = token_id, subscriptions = ended, "token revoked");
        }
    }

    /// Tells every subscription of this node that the store's delivery to it has a hole
    /// (see [`Interruption`]). The store calls it when it finds one, before it delivers
    /// anything that came after the hole.
    pub fn interrupt(&self, why: Interruption) {
        let told = self.hub.interrupt(why);
        self.hub
            .shared
            .stats
            .delivery_interruptions
            .fetch_add(1, Relaxed);
        tracing::warn!(reason = ?why, subscriptions = told, "delivery to this node was interrupted; subscribers are told");
    }

    /// The topics with a subscriber on this node: what a store repairing its delivery
    /// must read back.
    pub fn topics(&self) -> Vec<TopicName> {
        self.hub.topics()
    }

    /// The ids of the tokens that granted this node's subscriptions: a store that lost
    /// messages may have lost revocations among them, and asks again about these.
    pub fn token_ids(&self) -> Vec<String> {
        let grants = self.hub.grants();
        let mut ids: Vec<String> = grants.values().map(|(g, _)| g.token_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Fills a hole in the store's delivery to this node from history, instead of ending
    /// streams: `read` holds, per topic with a subscriber here, the events after position
    /// `after` (the last one this node received) up to the message that revealed the
    /// hole, which the store delivers right after. Subscribers of a topic whose history
    /// cannot prove it holds all of them (or that is gone) are told as
    /// [`Interrupted`](Interruption::DeliveryLost) and resume; every other subscriber
    /// gets the missing events, in position order, as if none had gone astray (a resumed
    /// subscription's floor skips those its replay already sent).
    pub fn recover(&self, after: u64, read: &HistoryRead) {
        let mut lost = Vec::new();
        let mut events = Vec::new();
        for topic in self.hub.topics() {
            match read.topics.iter().find(|t| t.topic == topic) {
                Some(history) if history.gap_after(after).is_none() => events.extend(
                    history
                        .events
                        .iter()
                        .filter(|e| e.position > after && e.epoch == read.epoch)
                        .cloned(),
                ),
                _ => lost.push(topic),
            }
        }
        // In position order; the copies of one publish (one per topic, each topic's
        // stream in order on its own) by topic name, whatever order the read took.
        events.sort_by(|x, y| (x.position, &x.topic).cmp(&(y.position, &y.topic)));
        let stats = &self.hub.shared.stats;
        if !lost.is_empty() {
            let told = self.hub.interrupt_topics(Interruption::DeliveryLost, &lost);
            stats.delivery_interruptions.fetch_add(1, Relaxed);
            tracing::warn!(
                topics = lost.len(),
                subscriptions = told,
                "a hole in delivery to this node that history cannot fill; those subscribers are told"
            );
        }
        for copies in events.chunk_by(|x, y| x.position == y.position) {
            drop(self.deliver(copies));
        }
        stats.delivery_repairs.fetch_add(1, Relaxed);
        stats
            .events_recovered
            .fetch_add(events.len() as u64, Relaxed);
        tracing::info!(
            after,
            recovered = events.len(),
            "a hole in delivery to this node was filled from history"
        );
    }

    /// Under [`crate::Order::PerTopic`], fills a hole in the delivery of one topic to this
    /// node: `history` holds the topic's events after position `after` (the last one this
    /// node received of it, in the history's epoch), up to the message that revealed the
    /// hole. Its subscribers are told as [`Interrupted`](Interruption::DeliveryLost) when
    /// the history cannot prove it holds all of them ([`TopicHistory::gap_after`], the rule
    /// resume uses too); otherwise they get the missing events in order.
    pub fn recover_topic(&self, after: u64, history: &TopicHistory) {
        let stats = &self.hub.shared.stats;
        if history.gap_after(after).is_some() {
            let told = self.hub.interrupt_topics(
                Interruption::DeliveryLost,
                std::slice::from_ref(&history.topic),
            );
            stats.delivery_interruptions.fetch_add(1, Relaxed);
            tracing::warn!(topic = %history.topic, after, subscriptions = told, "a hole in a topic's delivery to this node that history cannot fill; its subscribers are told");
            return;
        }
        let events: Vec<_> = history
            .events
            .iter()
            .filter(|e| e.position > after && e.epoch == history.epoch)
            .cloned()
            .collect();
        if events.is_empty() {
            // Nothing went missing (a store checking after a reconnect, say).
            return;
        }
        for event in &events {
            drop(self.deliver(std::slice::from_ref(event)));
        }
        stats.delivery_repairs.fetch_add(1, Relaxed);
        stats
            .events_recovered
            .fetch_add(events.len() as u64, Relaxed);
        tracing::info!(topic = %history.topic, after, recovered = events.len(), "a hole in a topic's delivery to this node was filled from history");
    }

    /// Tells the subscriptions of `topics` on this node that the store's delivery of
    /// those topics has a hole (see [`Interruption`]), under [`crate::Order::PerTopic`]
    /// where each topic is delivered on its own.
    pub fn interrupt_topics(&self, why: Interruption, topics: &[TopicName]) {
        let told = self.hub.interrupt_topics(why, topics);
        self.hub
            .shared
            .stats
            .delivery_interruptions
            .fetch_add(1, Relaxed);
        tracing::warn!(reason = ?why, topics = topics.len(), subscriptions = told, "delivery of some topics to this node was interrupted; their subscribers are told");
    }

    /// Queues the copies of one publish (one per topic it went to, in one position) to
    /// every local subscriber of their topics, without waiting. A subscriber of several
    /// of them gets its copies together, all or none: its client's cursor (the
    /// publisher's id) stands for every copy, so a stream must never end between them.
    ///
    /// A subscriber whose queue is full is cut off at once: it leaves every topic, reads
    /// what is already queued, and then learns it fell behind (see
    /// [`EndReason::SlowConsumer`]). Nobody else waits for it.
    ///
    /// The readers are woken when the returned [`Wakes`] is dropped, after this hub's lock
    /// is released: a caller that delivers under a lock of its own keeps it until that
    /// lock is released too (dropping it at once wakes them at once).
    #[must_use = "dropping it wakes the readers: drop it once the caller's locks are released"]
    pub fn deliver(&self, copies: &[Arc<TopicEvent>]) -> Wakes {
        let mut wakes = Wakes::default();
        self.deliver_into(copies, &mut wakes);
        wakes
    }

    /// [`Inbox::deliver`], the readers to wake joining `wakes`: a caller delivering many
    /// publishes under one lock of its own wakes their readers once it is released.
    pub fn deliver_into(&self, copies: &[Arc<TopicEvent>], wakes: &mut Wakes) {
        let shared = &self.hub.shared;
        let mut table = self.hub.lock();
        let mut delivered = 0;
        let mut behind: Vec<(u64, Arc<SubscriberState>, usize)> = Vec::new();
        let mut sent = |subscriber: &Subscriber, result, count: usize| match result {
            Ok(()) => delivered += count as u64,
            Err(TrySendError::Full) => {
                behind.push((subscriber.number, subscriber.state.clone(), count));
            }
            // The reader is gone; its connection is being closed and will leave.
            Err(TrySendError::Closed) => {}
        };
        if let [copy] = copies {
            for subscriber in table.get(&copy.topic).into_iter().flatten() {
                sent(
                    subscriber,
                    subscriber.queue.try_send(copy.clone(), wakes),
                    1,
                );
            }
        } else {
            // Each topic's subscribers are in connection-number order (see `add`), so a
            // merge of the copies' lists meets each subscriber once, with every copy it
            // follows, without looking at its topics.
            let lists: Vec<(&Arc<TopicEvent>, &[Subscriber])> = copies
                .iter()
                .filter_map(|copy| Some((copy, table.get(&copy.topic)?.as_slice())))
                .collect();
            let mut heads = vec![0; lists.len()];
            let mut together = Vec::with_capacity(lists.len());
            loop {
                let next = lists
                    .iter()
                    .zip(&heads)
                    .filter_map(|((_, list), &head)| list.get(head));
                let Some(number) = next.map(|s| s.number).min() else {
                    break;
                };
                together.clear();
                let mut first = None;
                for ((copy, list), head) in lists.iter().zip(heads.iter_mut()) {
                    if let Some(subscriber) = list.get(*head)
                        && subscriber.number == number
                    {
                        together.push(*copy);
                        first.get_or_insert(subscriber);
                        *head += 1;
                    }
                }
                if let Some(subscriber) = first {
                    sent(
                        subscriber,
                        subscriber.queue.try_send_all(&together, wakes),
                        together.len(),
                    );
                }
            }
        }
        shared.stats.events_delivered.fetch_add(delivered, Relaxed);
        for (number, state, dropped) in behind {
            state.cut();
            shared.stats.slow_consumers_cut.fetch_add(1, Relaxed);
            shared
                .stats
                .events_dropped_slow_consumer
                .fetch_add(dropped as u64, Relaxed);
            remove(&mut table, number, &state.topics);
            tracing::info!(connection = number, "cut off: queue full (slow consumer)");
        }
    }
}
