//! The gateway's operations, as the transport calls them.

use std::{
    collections::{HashMap, VecDeque},
    future::Future as _,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{
            AtomicBool, AtomicU64, AtomicUsize,
            Ordering::{Relaxed, SeqCst},
        },
    },
    task::{Context, Poll},
};

use tideway_protocol::{EventId, TopicList, TopicName};
use tokio::sync::Notify;

use crate::{
    ConnectionId, ConnectionRecord, EndReason, Event, Gap, GapReason, Grant, Inbox, Interruption,
    Listed, NodeRecord, Page, Paged, Revocation, Stats, Store, StoreError, TopicEvent, TopicRecord,
    Transport,
    hub::{Hub, SubscriberState},
    queue::QueueReceiver,
    resume::{self, Floor},
    store::Order,
    unix_millis,
};

/// Settings of the engine. Defaults are the ones `tideway --help` prints.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Events queued per connection before it counts as a slow consumer and is cut off.
    pub queue_capacity: usize,
    /// Most subscriber connections this node holds; 0 means no limit.
    pub max_connections: usize,
    /// Most subscriber connections from one client IP on this node; 0 means no limit.
    pub max_connections_per_ip: usize,
    /// Most subscriber connections of one token subject on this node; 0 means no limit.
    pub max_connections_per_subject: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            max_connections_per_subject: 0,
        }
    }
}

/// Which connection limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The node's limit.
    Node,
    /// The limit for one client IP.
    ClientIp,
    /// The limit for one token subject.
    Subject,
}

/// Why the engine refused a request.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The node is draining and takes no new work.
    #[error("this node is draining; connect to another node")]
    Draining,
    /// A connection limit is reached.
    #[error("{} connection limit of {limit} is reached", match .scope { LimitScope::Node => "this node's", LimitScope::ClientIp => "the per-client-IP", LimitScope::Subject => "the per-subject" })]
    TooManyConnections {
        /// Which limit.
        scope: LimitScope,
        /// Its value.
        limit: usize,
    },
    /// The shared state could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event of a batch was not handed to the store: an earlier one failed there, and
    /// landing this one first would put the batch's events on a topic out of order.
    #[error(
        "not published: an earlier event of this batch failed in the state store; send this one again after it"
    )]
    NotAttempted,
}

/// The fan-out engine of one node. Cloning bumps a reference count.
pub struct Gateway<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Gateway<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<S> {
    store: S,
    hub: Hub,
    node: NodeRecord,
    config: CoreConfig,
    stats: Arc<Stats>,
    next_connection: AtomicU64,
    /// Set when the drain starts: new subscriptions and publishes are refused. SeqCst,
    /// with the count of publishes in flight: a publish counts itself before it looks at
    /// this flag, and the drain sets it before it counts, so one of the two always sees
    /// the other.
    draining: AtomicBool,
    /// Set once in-flight publishes are done: open subscriptions end. A flag each reads
    /// when woken (the hub wakes them all after setting it), not a channel: a channel's
    /// read takes a lock that every subscriber on every core shares, on each wake-up.
    ending: AtomicBool,
    /// Publishes being routed, or routed live and not appended yet.
    publishes: Arc<Publishes>,
    /// Open connections: on the node, per client IP (`ip:…`) and per token subject
    /// (`sub:…`), checked and counted under one lock so concurrent subscribes cannot
    /// overshoot a limit. A std mutex: a few map operations per connect and close.
    admitted: Mutex<Admitted>,
}

#[derive(Default)]
struct Admitted {
    node: usize,
    per: HashMap<String, usize>,
}

/// What a new subscriber asks for.
#[derive(Debug, Clone)]
pub struct Subscribe {
    /// The topics to receive.
    pub topics: TopicList,
    /// The subscriber's own label (`x-sse-id`).
    pub label: Option<String>,
    /// SSE or WebSocket.
    pub transport: Transport,
    /// The peer's IP address.
    pub remote: Option<String>,
    /// The id of the last event the client received, to resume after it.
    pub last_event_id: Option<EventId>,
    /// What token granted the subscription, if one did (private topics).
    pub grant: Option<Grant>,
}

/// Where a publish should go, decided before its body is read.
#[derive(Debug)]
pub enum Route {
    /// No topic has a subscriber anywhere: drop the event without reading its body.
    Dropped,
    /// Some topics have subscribers: read the body and pass this to [`Gateway::publish`].
    Live(Live),
}

/// A publish routed to live topics whose body is being read. A drain waits for it
/// before it ends the subscriptions, so an event accepted for delivery is delivered.
#[derive(Debug)]
pub struct Live {
    topics: TopicList,
    _in_flight: InFlight,
}

impl Live {
    /// The live topics, a subset of those asked, in order.
    pub fn topics(&self) -> &TopicList {
        &self.topics
    }
}

/// The publishes a drain waits for. Apart from `Shared`, so a permit holds only this.
#[derive(Default)]
struct Publishes {
    in_flight: AtomicUsize,
    /// Woken when `in_flight` drops to zero.
    done: Notify,
}

/// Counts a publish in flight until dropped. Taking one is an atomic add and a reference
/// count, no allocation: every publish takes one, the drop path included.
struct InFlight(Arc<Publishes>);

impl InFlight {
    fn new(publishes: &Arc<Publishes>) -> Self {
        publishes.in_flight.fetch_add(1, SeqCst);
        Self(publishes.clone())
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// What became of a publish whose body was read.
#[derive(Debug, Clone)]
pub struct Published {
    /// The event's copies the store appended, one per topic it was delivered on: none
    /// when every topic's last subscriber left while the body was being read. (The
    /// store's own list, handed on: a publish's answer allocates nothing to say it.)
    pub copies: Vec<Arc<TopicEvent>>,
}

impl Published {
    /// The topics the event was delivered on, with its sequence number in each.
    pub fn topics(&self) -> impl ExactSizeIterator<Item = (&TopicName, u64)> {
        self.copies.iter().map(|copy| (&copy.topic, copy.seq))
    }
}

/// What a subscription yields next.
#[derive(Debug)]
pub enum Next {
    /// An event of one of its topics.
    Event(Arc<TopicEvent>),
    /// Events of some topics may be missing here: the resume could not prove its
    /// history complete for them, or the store lost what it held. What the history
    /// still holds and live events follow.
    Gap(Gap),
    /// The subscription is over, and why.
    End(EndReason),
}

impl<S: Store> Gateway<S> {
    /// Starts the engine of `node` on `store`: attaches the store's inbox and registers
    /// the node.
    pub async fn start(store: S, node: NodeRecord, config: CoreConfig) -> Result<Self, CoreError> {
        let stats = Arc::new(Stats::default());
        let hub = Hub::new(stats.clone());
        store.attach(Inbox::new(hub.clone()));
        store.register_node(&node).await?;
        tracing::info!(node = %node.id, hostname = %node.hostname, advertise_host = %node.advertise_host, "node registered");
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                hub,
                node,
                config,
                stats,
                next_connection: AtomicU64::new(1),
                draining: AtomicBool::new(false),
                ending: AtomicBool::new(false),
                publishes: Arc::default(),
                admitted: Mutex::new(Admitted::default()),
            }),
        })
    }

    /// Opens a subscription: the connection joins each topic, creating those that were
    /// not live. With `last_event_id`, the events of its topics published after that id
    /// and still in history come first, then live ones, each exactly once. Dropping the
    /// [`Subscription`] closes it.
    pub async fn subscribe(&self, request: Subscribe) -> Result<Subscription<S>, CoreError> {
        if self.is_draining() {
            return Err(CoreError::Draining);
        }
        let shared = &self.shared;
        let counted = Counted::of(&request);
        self.admit(&counted)?;
        let number = shared.next_connection.fetch_add(1, Relaxed);
        let record = Arc::new(ConnectionRecord {
            id: ConnectionId::new(&shared.node.id, number),
            node: shared.node.id.clone(),
            topics: request.topics,
            label: request.label,
            transport: request.transport,
            remote: request.remote,
            connected_at: unix_millis(),
        });
        // Join the local table first, so no event published once the store counts the
        // topic live can miss this subscriber.
        let (queue, state) = shared
            .hub
            .add(number, &record.topics, shared.config.queue_capacity);
        if let Some(grant) = &request.grant {
            shared.hub.grant(number, grant.clone(), state.clone());
        }
        let marks = Marks::new(S::ORDER, record.topics.len());
        let mut subscription = Subscription {
            gateway: self.clone(),
            number,
            record,
            counted,
            expires_at: request.grant.as_ref().map(|g| g.expires_at),
            queue,
            state,
            expiry: None,
            gaps: VecDeque::new(),
            replay: VecDeque::new(),
            marks,
            held: None,
            opened: false,
        };
        // From here on, dropping `subscription` undoes whatever part of the joins happened.
        shared.stats.opened(subscription.record.transport);
        subscription.opened = true;
        self.counted(shared.store.add_connection(&subscription.record).await)?;
        for topic in &subscription.record.topics {
            self.counted(shared.store.join(topic, &subscription.record).await)?;
        }
        // The grant is registered, so a revocation from now on reaches it; one that came
        // between the transport's check of the token and the registration is found here.
        if let Some(grant) = &request.grant
            && self.counted(shared.store.token_revoked(&grant.token_id).await)?
        {
            subscription
                .gateway
                .shared
                .hub
                .revoke(|g| g.token_id == grant.token_id, Revocation::TokenRevoked);
        }
        if let Some(last_event_id) = request.last_event_id {
            self.resume(&mut subscription, last_event_id).await?;
        }
        tracing::info!(
            connection = %subscription.record.id,
            topics = %subscription.record.topics,
            transport = ?subscription.record.transport,
            "connection opened"
        );
        Ok(subscription)
    }

    /// Fills a new subscription's gaps and replay for a resume after `last_event_id`.
    ///
    /// The subscription's queue has been collecting live events since before the store's
    /// one consistent read of the histories, so together they hold everything; queued
    /// events at or below the replay's last position (in the read's epoch) are skipped,
    /// so nothing comes twice. What counts as a gap is decided in [`resume::plan`].
    async fn resume(
        &self,
        subscription: &mut Subscription<S>,
        last_event_id: EventId,
    ) -> Result<(), CoreError> {
        let topics = &subscription.record.topics;
        let read = self.counted(self.shared.store.read_since(topics, &last_event_id).await)?;
        let plan = match S::ORDER {
            Order::Global => resume::plan(topics, &last_event_id, &read),
            Order::PerTopic => resume::plan_per_topic(topics, &last_event_id, &read),
        };
        for gap in &plan.gaps {
            tracing::info!(connection = %subscription.record.id, last_event_id = %last_event_id, reason = gap.reason.code(), topics = gap.topics.len(), "resume: history cannot prove continuity");
        }
        subscription
            .marks
            .resumed(&subscription.record.topics, &read, &plan);
        subscription.gaps = plan.gaps.into();
        subscription.replay = plan.replay.into();
        Ok(())
    }

    /// Counts a new connection against the limits, or refuses it.
    fn admit(&self, counted: &Counted) -> Result<(), CoreError> {
        let config = &self.shared.config;
        let mut admitted = self.admitted();
        if config.max_connections > 0 && admitted.node >= config.max_connections {
            return Err(CoreError::TooManyConnections {
                scope: LimitScope::Node,
                limit: config.max_connections,
            });
        }
        let Admitted { node, per } = &mut *admitted;
        let limits = [
            (
                &counted.ip,
                config.max_connections_per_ip,
                LimitScope::ClientIp,
            ),
            (
                &counted.subject,
                config.max_connections_per_subject,
                LimitScope::Subject,
            ),
        ];
        for (name, limit, scope) in limits {
            if let Some(name) = name
                && limit > 0
                && per.get(name).copied().unwrap_or(0) >= limit
            {
                return Err(CoreError::TooManyConnections { scope, limit });
            }
        }
        for name in counted.names() {
            *per.entry(name.to_owned()).or_default() += 1;
        }
        *node += 1;
        Ok(())
    }

    fn admitted(&self) -> std::sync::MutexGuard<'_, Admitted> {
        // A few map operations per critical section: a poisoned lock holds whole counts.
        self.shared
            .admitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides, before the body is read, whether a publish to `topics` goes anywhere.
    pub async fn route(&self, topics: &TopicList, id: &EventId) -> Result<Route, CoreError> {
        let permit = self.admit_publish()?;
        let live = self.counted(self.shared.store.live(topics).await)?;
        match TopicList::from_names(live) {
            Some(topics) => Ok(Route::Live(Live {
                topics,
                _in_flight: permit,
            })),
            None => {
                self.count_drop(topics, id);
                Ok(Route::Dropped)
            }
        }
    }

    /// Whether a single publish should read its (small) body first and go straight to
    /// [`Gateway::publish_now`], one store call: true when the store's liveness check is
    /// a round trip of its own (see [`Store::LIVE_IS_REMOTE`]); otherwise
    /// [`Gateway::route`] first drops a publish to nobody without reading its body. An
    /// event whose body is already in hand (a batch's) always goes to `publish_now`.
    pub fn publishes_in_one_call(&self) -> bool {
        S::LIVE_IS_REMOTE
    }

    /// Publishes an event to `topics` in one store call, without [`Gateway::route`]: the
    /// store appends to the topics that are live and skips the others, as `route` would
    /// have; when none is, the publish is dropped and counted as such.
    pub async fn publish_now(
        &self,
        topics: &TopicList,
        event: Event,
    ) -> Result<Published, CoreError> {
        let _in_flight = self.admit_publish()?;
        self.append(topics, event).await
    }

    /// Publishes an event whose body was read to the topics [`Gateway::route`] found live.
    pub async fn publish(&self, live: Live, event: Event) -> Result<Published, CoreError> {
        // `live` is held to the end: its permit is what a drain waits for.
        self.append(&live.topics, event).await
    }

    /// Publishes `events` (each its topics and the event) one after another in their
    /// order, each as [`Gateway::publish_now`] would, in one store call
    /// ([`Store::append_all`]): a batch publish. Answers each in the same order; while
    /// the node drains, none is published.
    pub async fn publish_all(
        &self,
        events: Vec<(TopicList, Event)>,
    ) -> Vec<Result<Published, CoreError>> {
        // One permit covers the batch: a drain that starts during it waits for all of it.
        let Ok(_in_flight) = self.admit_publish() else {
            // Draining, the only refusal `admit_publish` makes.
            return events.iter().map(|_| Err(CoreError::Draining)).collect();
        };
        let events: Vec<(TopicList, Arc<Event>)> = events
            .into_iter()
            .map(|(topics, event)| (topics, Arc::new(event)))
            .collect();
        let started = std::time::Instant::now();
        let mut appended = self.shared.store.append_all(&events).await.into_iter();
        // Each event was appended by the time the call returned.
        let took = started.elapsed();
        // One answer per event, whatever the store returned. The store stops at its first
        // error (`Store::append_all`): the events it did not answer after one were not
        // attempted. Answering for fewer events without an error is the store's fault,
        // counted as one.
        let mut failed = false;
        events
            .iter()
            .map(|(topics, event)| {
                let appended = match appended.next() {
                    Some(appended) => appended,
                    None if failed => return Err(CoreError::NotAttempted),
                    None => Err(StoreError::Unavailable(
                        "the store answered for fewer events than it was given".into(),
                    )),
                };
                failed |= appended.is_err();
                self.appended(topics, event, appended, took)
            })
            .collect()
    }

    /// Admits a publish: counted in flight before the draining flag is read, so a drain
    /// that starts after this check waits for the permit and one that started before is
    /// seen here.
    fn admit_publish(&self) -> Result<InFlight, CoreError> {
        let permit = InFlight::new(&self.shared.publishes);
        if self.is_draining() {
            return Err(CoreError::Draining);
        }
        Ok(permit)
    }

    /// Appends `event` to `topics` (under a publish permit the caller holds) and counts it.
    async fn append(&self, topics: &TopicList, event: Event) -> Result<Published, CoreError> {
        let event = Arc::new(event);
        let started = std::time::Instant::now();
        let appended = self.shared.store.append(topics, &event).await;
        self.appended(topics, &event, appended, started.elapsed())
    }

    /// Counts what the store made of a publish that took `took`: appended (published),
    /// appended nowhere (dropped) or failed.
    fn appended(
        &self,
        topics: &TopicList,
        event: &Event,
        appended: Result<Vec<Arc<TopicEvent>>, StoreError>,
        took: std::time::Duration,
    ) -> Result<Published, CoreError> {
        let appended = self.counted(appended)?;
        self.shared.stats.observe_publish(took);
        if appended.is_empty() {
            self.count_drop(topics, &event.id);
        } else {
            self.shared.stats.events_published.fetch_add(1, Relaxed);
        }
        Ok(Published { copies: appended })
    }

    /// Counts a failed store call for `/metrics` and turns it into the engine's error.
    fn counted<T>(&self, result: Result<T, StoreError>) -> Result<T, CoreError> {
        result.map_err(|err| {
            self.shared.stats.store_errors.fetch_add(1, Relaxed);
            CoreError::Store(err)
        })
    }

    fn count_drop(&self, topics: &TopicList, id: &EventId) {
        self.shared
            .stats
            .events_dropped_no_subscribers
            .fetch_add(1, Relaxed);
        tracing::info!(topic = %topics, id = %id, "dropped: no subscribers");
    }

    /// One page of the cluster's live topics.
    pub async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, CoreError> {
        let paged = self.counted(self.shared.store.topics(page.clone()).await)?;
        Ok(only_listed(&page, paged, "topics"))
    }

    /// One page of the cluster's connections.
    pub async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, CoreError> {
        let paged = self.counted(self.shared.store.connections(page.clone()).await)?;
        Ok(only_listed(&page, paged, "connections"))
    }

    /// A topic's last `limit` events, oldest first; `None` when the topic is not live.
    pub async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, CoreError> {
        self.counted(self.shared.store.tail(topic, limit).await)
    }

    /// The cluster's nodes.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, CoreError> {
        self.counted(self.shared.store.nodes().await)
    }

    /// Whether the node takes work: not draining, and the store answers.
    pub async fn ready(&self) -> bool {
        !self.is_draining() && self.shared.store.ready().await
    }

    /// Drains the node: refuses new subscriptions and publishes at once, waits for the
    /// publishes already routed to be delivered, then ends every open subscription with
    /// [`EndReason::Draining`] once its queue is empty. A caller bounds the wait with a
    /// timeout and then calls [`Gateway::end_subscriptions`].
    pub async fn drain(&self) {
        let shared = &self.shared;
        shared.draining.store(true, SeqCst);
        loop {
            let done = shared.publishes.done.notified();
            tokio::pin!(done);
            // Registered before the check, so the last publish's wake-up is not missed.
            done.as_mut().enable();
            if shared.publishes.in_flight.load(SeqCst) == 0 {
                break;
            }
            done.await;
        }
        self.end_subscriptions();
    }

    /// Ends every open subscription (after its queued events) without waiting for
    /// publishes in flight; the second half of [`Gateway::drain`].
    pub fn end_subscriptions(&self) {
        self.shared.draining.store(true, SeqCst);
        self.shared.ending.store(true, SeqCst);
        // Each subscription reads the flag when woken, after its queued events.
        self.shared.hub.wake_all();
    }

    /// Whether [`Gateway::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(SeqCst)
    }

    /// This node's identity.
    pub fn node(&self) -> &NodeRecord {
        &self.shared.node
    }

    /// This node's counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Connections open on this node now.
    pub fn open_connections(&self) -> u64 {
        let stats = &self.shared.stats;
        stats
            .connections_opened()
            .saturating_sub(stats.connections_closed())
    }

    /// Topics with a subscriber on this node now.
    pub fn local_topics(&self) -> usize {
        self.shared.hub.topic_count()
    }

    /// The store, for adapters' own tests and tools.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// Tells the store a connection is gone; the hub let go of it already.
    async fn close(&self, record: Arc<ConnectionRecord>) {
        let shared = &self.shared;
        for topic in &record.topics {
            if let Err(err) = self.counted(shared.store.leave(topic, &record).await) {
                tracing::warn!(connection = %record.id, topic = %topic, error = %err, "could not leave topic");
            }
        }
        if let Err(err) = self.counted(shared.store.remove_connection(&record.id).await) {
            tracing::warn!(connection = %record.id, error = %err, "could not remove connection");
        }
        let seconds = unix_millis().saturating_sub(record.connected_at) as f64 / 1000.0;
        tracing::info!(connection = %record.id, duration_s = seconds, "connection closed");
    }

    /// Undoes the counting of [`Gateway::admit`]; runs in `Drop`, so it must not wait.
    fn release(&self, transport: Transport, counted: &Counted) {
        self.shared.stats.closed(transport);
        let mut admitted = self.admitted();
        admitted.node = admitted.node.saturating_sub(1);
        let per = &mut admitted.per;
        for name in counted.names() {
            if let Some(count) = per.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    per.remove(name);
                }
            }
        }
    }

    /// Revokes token `id` everywhere until `until`: it is refused from now on, and every
    /// node ends the subscriptions it granted.
    pub async fn revoke_token(&self, id: &str, until: u64) -> Result<(), CoreError> {
        self.counted(self.shared.store.revoke_token(id, until).await)
    }

    /// Whether token `id` was revoked.
    pub async fn token_revoked(&self, id: &str) -> Result<bool, CoreError> {
        self.counted(self.shared.store.token_revoked(id).await)
    }

    /// Ends this node's subscriptions granted by tokens of keys `in_force` no longer
    /// accepts (removed, expired, or without the right to sign); returns how many.
    pub fn revoke_keys(&self, in_force: impl Fn(&str) -> bool) -> usize {
        self.shared
            .hub
            .revoke(|grant| !in_force(&grant.key), Revocation::KeyRevoked)
    }
}

/// The names a connection counts against: `ip:<address>` and `sub:<subject>`.
struct Counted {
    ip: Option<String>,
    subject: Option<String>,
}

impl Counted {
    fn of(request: &Subscribe) -> Self {
        Self {
            ip: request.remote.as_ref().map(|ip| format!("ip:{ip}")),
            subject: request.grant.as_ref().map(|g| format!("sub:{}", g.subject)),
        }
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.ip.iter().chain(&self.subject).map(String::as_str)
    }
}

/// Every listing passes here on its way out: whatever a store answered, nothing of
/// another tenant leaves. A store that listed some is a bug, said loudly.
fn only_listed<T: Listed>(page: &Page, mut paged: Paged<T>, what: &str) -> Paged<T> {
    let answered = paged.items.len();
    paged.items.retain(|item| item.listed_on(page));
    if paged.items.len() != answered {
        tracing::error!(
            what,
            withheld = answered - paged.items.len(),
            "the store listed items of another tenant; they were withheld"
        );
    }
    paged
}

/// An open subscription. Dropping it leaves every topic and forgets the connection.
pub struct Subscription<S: Store> {
    gateway: Gateway<S>,
    number: u64,
    /// Shared with the store's directory, which keeps it while the connection lasts.
    record: Arc<ConnectionRecord>,
    counted: Counted,
    /// When the granting token expires, in milliseconds since the Unix epoch.
    expires_at: Option<u64>,
    queue: QueueReceiver,
    state: Arc<SubscriberState>,
    /// The timer of the grant's expiry, set once the subscription first waits.
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What a resume could not prove complete, reported before anything else.
    gaps: VecDeque<Gap>,
    /// Events of a resume, sent before the queue's.
    replay: VecDeque<Arc<TopicEvent>>,
    /// Where the stream stands in the store's order: one mark, or one per topic.
    marks: Marks,
    /// An event held back while the gap before it goes out.
    held: Option<Arc<TopicEvent>>,
    /// Whether the counters and limits count this connection.
    opened: bool,
}

impl<S: Store> Subscription<S> {
    /// The connection as the store records it.
    pub fn record(&self) -> &ConnectionRecord {
        &self.record
    }

    /// The gateway it belongs to.
    pub fn gateway(&self) -> &Gateway<S> {
        &self.gateway
    }

    /// Runs `f` once if the hub cuts this subscriber off for falling behind (at once if it
    /// already has), for transports that must then close a connection whose client
    /// stopped reading. Not run if the subscription ends any other way. `f` runs on the
    /// publishing path: it should only hand work off (spawn a task, notify).
    ///
    /// A callback rather than a future to await: a waiting task per subscriber would
    /// cost every idle connection its memory, while only a cut one needs anything done.
    pub fn on_cut(&self, f: impl FnOnce() + Send + 'static) {
        self.state.set_on_cut(Box::new(f));
    }

    /// Waits for the next event, or for the end of the subscription.
    ///
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next event or the end of the subscription, if either is there; otherwise
    /// `cx` is woken when one is. Holds no future between calls, so a transport can keep
    /// a subscription in its own state and poll it (an idle subscriber costs its state,
    /// not a parked future's).
    ///
    /// Order: revocation and expiry (nothing, not even a replay, goes out after them),
    /// a resume's gaps and replay, then an interruption of delivery, queued events, and
    /// the drain once the queue is empty.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        loop {
            // Checked when something would end the stream, not before every event: the
            // copies of one publish go out together, whatever ends it.
            if let Some(why) = self.revoked()
                && !self.mid_publish()
            {
                return Poll::Ready(Next::End(EndReason::Revoked(why)));
            }
            if let Some(gap) = self.gaps.pop_front() {
                self.gateway
                    .shared
                    .stats
                    .gaps_reported
                    .fetch_add(1, Relaxed);
                return Poll::Ready(Next::Gap(gap));
            }
            if let Some(event) = self.held.take().or_else(|| self.replay.pop_front()) {
                return Poll::Ready(Next::Event(self.sent(event)));
            }
            match self.state.interruption() {
                Some(Interruption::DeliveryLost) if !self.mid_publish() => {
                    return Poll::Ready(Next::End(EndReason::Interrupted));
                }
                // Nothing sent yet, so nothing queued before the restart to keep in front.
                Some(Interruption::StoreRestarted) if self.marks.nothing_sent() => {
                    self.restarted();
                    continue;
                }
                _ => {}
            }
            match self.queue.poll_recv(cx) {
                Poll::Ready(Some(event)) => {
                    let mark = self.marks.of(&self.record.topics, &event.topic);
                    if let Some(floor) = mark.floor {
                        if floor.covers(&event) {
                            continue;
                        }
                        if event.epoch != floor.epoch {
                            // A floor of another epoch says nothing about this one.
                            mark.floor = None;
                        }
                    }
                    if mark.epoch.is_some_and(|epoch| epoch != event.epoch) {
                        // The first event after a restart: the gap goes right before it,
                        // after everything queued before the restart.
                        match self.marks.order {
                            Order::Global => self.restarted(),
                            Order::PerTopic => {
                                // Only this topic's sequencer started again.
                                *self.marks.of(&self.record.topics, &event.topic) = Mark::default();
                                self.gaps.push_back(Gap {
                                    reason: GapReason::StoreRestarted,
                                    topics: vec![event.topic.clone()],
                                    last_event_id: None,
                                });
                            }
                        }
                        self.held = Some(event);
                        continue;
                    }
                    return Poll::Ready(Next::Event(self.sent(event)));
                }
                // Every sender is gone only when the hub cut this subscriber off: the hub
                // removes a connection otherwise only after this subscription is dropped.
                Poll::Ready(None) => {
                    debug_assert!(self.state.was_cut());
                    return Poll::Ready(Next::End(EndReason::SlowConsumer));
                }
                Poll::Pending => break,
            }
        }
        // The queue holds the waker now, and a revocation, an interruption or a drain
        // wakes it after setting its flag: checking the flags again cannot miss one. The
        // queue is empty, so no copy of the last publish is left behind.
        if let Some(why) = self.state.revocation() {
            return Poll::Ready(Next::End(EndReason::Revoked(why)));
        }
        match self.state.interruption() {
            Some(Interruption::DeliveryLost) => {
                return Poll::Ready(Next::End(EndReason::Interrupted));
            }
            Some(Interruption::StoreRestarted) => {
                // The queue is empty: everything from before the restart went out.
                self.restarted();
                return self.poll_next(cx);
            }
            None => {}
        }
        if self.gateway.shared.ending.load(SeqCst) {
            return Poll::Ready(Next::End(EndReason::Draining));
        }
        if let Some(at) = self.expires_at {
            let expiry = self.expiry.get_or_insert_with(|| {
                let left = at.saturating_sub(unix_millis());
                Box::pin(tokio::time::sleep(std::time::Duration::from_millis(left)))
            });
            if expiry.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Next::End(EndReason::Revoked(Revocation::TokenExpired)));
            }
        }
        Poll::Pending
    }

    /// Why the grant no longer stands, if it does not.
    fn revoked(&self) -> Option<Revocation> {
        if let Some(why) = self.state.revocation() {
            return Some(why);
        }
        self.expires_at
            .is_some_and(|at| at <= unix_millis())
            .then_some(Revocation::TokenExpired)
    }

    /// Whether the next event to go is another copy of the publish just sent (one per
    /// topic of this subscription it went to). A stream never ends between them: the
    /// client's cursor, the publisher's id, stands for every copy, so a resume would
    /// skip those not sent. The hub queues them all or none ([`Inbox::deliver`]), and a
    /// replay holds them side by side.
    ///
    /// Under [`Order::PerTopic`] the copies of a publish reach the node one by one, so
    /// there is nothing to keep together (and the resume does not count on it).
    fn mid_publish(&self) -> bool {
        let Order::Global = self.marks.order else {
            return false;
        };
        let Some(epoch) = self.marks.marks[0].epoch else {
            return false;
        };
        let position = self.marks.marks[0].position;
        let same = |e: &TopicEvent| e.epoch == epoch && e.position == position;
        self.replay.front().is_some_and(|e| same(e)) || self.queue.next_is(same)
    }

    /// Notes `event` as the last sent.
    fn sent(&mut self, event: Arc<TopicEvent>) -> Arc<TopicEvent> {
        let mark = self.marks.of(&self.record.topics, &event.topic);
        mark.epoch = Some(event.epoch);
        mark.position = event.position;
        event
    }

    /// The store restarted: the subscriber is told, once, and nothing is skipped after.
    fn restarted(&mut self) {
        self.state.clear_restart();
        // Nothing of the new epoch was replayed: skip nothing from now on. The next event
        // sent sets the epoch again, without another gap.
        self.marks.reset();
        self.gaps.push_back(Gap {
            reason: GapReason::StoreRestarted,
            topics: self.record.topics.names().to_vec(),
            last_event_id: None,
        });
    }
}

/// Where a stream stands in one of the store's sequences.
#[derive(Debug, Default, Clone, Copy)]
struct Mark {
    /// The epoch of the last event sent (or of the resume's read): an event of another
    /// epoch is the first after a restart, and a gap goes before it.
    epoch: Option<u64>,
    /// The position of the last event sent (with `epoch`): under [`Order::Global`], its
    /// publish's other copies go out before anything ends the stream.
    position: u64,
    /// Queued events of the floor's epoch at or below its position were replayed (or
    /// precede the client's last event) and are skipped.
    floor: Option<Floor>,
}

/// A stream's marks: one for a store of one order, one per topic of the stream (in the
/// order of its topic list) for a store that orders each topic on its own.
#[derive(Debug)]
struct Marks {
    order: Order,
    marks: Vec<Mark>,
}

impl Marks {
    fn new(order: Order, topics: usize) -> Self {
        let count = match order {
            Order::Global => 1,
            Order::PerTopic => topics,
        };
        Self {
            order,
            marks: vec![Mark::default(); count.max(1)],
        }
    }

    /// The mark of `topic`'s sequence; `topics` is the stream's list.
    fn of(&mut self, topics: &TopicList, topic: &TopicName) -> &mut Mark {
        let index = match self.order {
            Order::Global => 0,
            Order::PerTopic => topics.iter().position(|t| t == topic).unwrap_or(0),
        };
        &mut self.marks[index]
    }

    fn nothing_sent(&self) -> bool {
        self.marks.iter().all(|m| m.epoch.is_none())
    }

    fn reset(&mut self) {
        self.marks.fill(Mark::default());
    }

    /// Sets the marks from a resume's read and plan: the read's epoch stands as the last
    /// one sent, so an event of another epoch gets its gap.
    fn resumed(&mut self, topics: &TopicList, read: &crate::HistoryRead, plan: &resume::Plan) {
        match self.order {
            Order::Global => {
                self.marks[0].epoch = Some(read.epoch);
                self.marks[0].floor = plan.floor;
            }
            Order::PerTopic => {
                for history in &read.topics {
                    if topics.iter().any(|t| *t == history.topic) {
                        self.of(topics, &history.topic).epoch = Some(history.epoch);
                    }
                }
                for (topic, floor) in &plan.floors {
                    self.of(topics, topic).floor = Some(*floor);
                }
            }
        }
    }
}

impl<S: Store> Drop for Subscription<S> {
    fn drop(&mut self) {
        self.state.close();
        if !self.opened {
            return;
        }
        self.gateway.release(self.record.transport, &self.counted);
        // The hub lets go now, whatever becomes of the store's cleanup below: no event is
        // queued for a subscription that is gone, with or without a runtime.
        self.gateway
            .shared
            .hub
            .remove(self.number, &self.record.topics);
        let gateway = self.gateway.clone();
        let record = self.record.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime means the process is ending; the store's state ends with it or
            // expires on its own.
            return;
        };
        runtime.spawn(async move { gateway.close(record).await });
    }
}
