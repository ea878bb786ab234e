//! The gateway's operations, as the transport calls them.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use tideway_protocol::{EventId, TopicList, TopicName};
use tokio::sync::{mpsc, watch};

use crate::{
    ConnectionId, ConnectionRecord, EndReason, Event, Inbox, NodeRecord, Page, Paged, Stats, Store,
    StoreError, TopicEvent, TopicRecord, Transport,
    hub::{Hub, SubscriberState},
    unix_millis,
};

/// Settings of the engine. Defaults are the ones `tideway --help` prints.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Events queued per connection before it counts as a slow consumer and is cut off.
    pub queue_capacity: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
        }
    }
}

/// Why the engine refused a request.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The node is draining and takes no new work.
    #[error("this node is draining; connect to another node")]
    Draining,
    /// The shared state could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    draining: watch::Sender<bool>,
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
}

/// Where a publish should go, decided before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No topic has a subscriber anywhere: drop the event without reading its body.
    Dropped,
    /// These topics (a subset of those asked, in order) have subscribers.
    Live(TopicList),
}

/// What became of a publish whose body was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The topics the event was delivered on, with its sequence number in each. Empty
    /// when every topic's last subscriber left while the body was being read.
    pub topics: Vec<(TopicName, u64)>,
}

/// What a subscription yields next.
#[derive(Debug)]
pub enum Next {
    /// An event of one of its topics.
    Event(Arc<TopicEvent>),
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
                draining: watch::Sender::new(false),
            }),
        })
    }

    /// Opens a subscription: the connection joins each topic, creating those that were
    /// not live. Dropping the [`Subscription`] closes it.
    pub async fn subscribe(&self, request: Subscribe) -> Result<Subscription<S>, CoreError> {
        if self.is_draining() {
            return Err(CoreError::Draining);
        }
        let shared = &self.shared;
        let number = shared.next_connection.fetch_add(1, Relaxed);
        let record = ConnectionRecord {
            id: ConnectionId::new(&shared.node.id, number),
            node: shared.node.id.clone(),
            topics: request.topics,
            label: request.label,
            transport: request.transport,
            remote: request.remote,
            connected_at: unix_millis(),
        };
        // Join the local table first, so no event published once the store counts the
        // topic live can miss this subscriber.
        let (queue, state) = shared
            .hub
            .add(number, &record.topics, shared.config.queue_capacity);
        let mut subscription = Subscription {
            gateway: self.clone(),
            number,
            record,
            queue,
            state,
            draining: shared.draining.subscribe(),
            opened: false,
        };
        // From here on, dropping `subscription` undoes whatever part of the joins happened.
        shared.store.add_connection(&subscription.record).await?;
        for topic in &subscription.record.topics {
            shared.store.join(topic, &subscription.record).await?;
        }
        shared.stats.connections_opened.fetch_add(1, Relaxed);
        subscription.opened = true;
        tracing::info!(
            connection = %subscription.record.id,
            topics = %subscription.record.topics,
            transport = ?subscription.record.transport,
            "connection opened"
        );
        Ok(subscription)
    }

    /// Decides, before the body is read, whether a publish to `topics` goes anywhere.
    pub async fn route(&self, topics: &TopicList, id: &EventId) -> Result<Route, CoreError> {
        if self.is_draining() {
            return Err(CoreError::Draining);
        }
        let mut live = Vec::new();
        for topic in topics {
            if self.shared.store.live(topic).await? {
                live.push(topic.clone());
            }
        }
        match TopicList::from_names(live) {
            Some(live) => Ok(Route::Live(live)),
            None => {
                self.count_drop(topics, id);
                Ok(Route::Dropped)
            }
        }
    }

    /// Publishes an event whose body was read to the topics [`Gateway::route`] found live.
    pub async fn publish(&self, topics: &TopicList, event: Event) -> Result<Published, CoreError> {
        let event = Arc::new(event);
        let mut published = Vec::with_capacity(topics.len());
        for topic in topics {
            if let Some(delivered) = self.shared.store.append(topic, &event).await? {
                published.push((topic.clone(), delivered.seq));
            }
        }
        if published.is_empty() {
            self.count_drop(topics, &event.id);
        } else {
            self.shared.stats.events_published.fetch_add(1, Relaxed);
        }
        Ok(Published { topics: published })
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
        Ok(self.shared.store.topics(page).await?)
    }

    /// One page of the cluster's connections.
    pub async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, CoreError> {
        Ok(self.shared.store.connections(page).await?)
    }

    /// A topic's last `limit` events, oldest first; `None` when the topic is not live.
    pub async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, CoreError> {
        Ok(self.shared.store.tail(topic, limit).await?)
    }

    /// The cluster's nodes.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, CoreError> {
        Ok(self.shared.store.nodes().await?)
    }

    /// Whether the node takes work: not draining, and the store answers.
    pub async fn ready(&self) -> bool {
        !self.is_draining() && self.shared.store.ready().await
    }

    /// Starts draining: new subscriptions and publishes are refused, and every open
    /// subscription ends with [`EndReason::Draining`] once its queue is empty.
    pub fn drain(&self) {
        self.shared.draining.send_replace(true);
    }

    /// Whether [`Gateway::drain`] was called.
    pub fn is_draining(&self) -> bool {
        *self.shared.draining.borrow()
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

    async fn close(&self, number: u64, record: ConnectionRecord, opened: bool) {
        let shared = &self.shared;
        shared.hub.remove(number, &record.topics);
        for topic in &record.topics {
            if let Err(err) = shared.store.leave(topic, &record).await {
                tracing::warn!(connection = %record.id, topic = %topic, error = %err, "could not leave topic");
            }
        }
        if let Err(err) = shared.store.remove_connection(&record.id).await {
            tracing::warn!(connection = %record.id, error = %err, "could not remove connection");
        }
        if opened {
            shared.stats.connections_closed.fetch_add(1, Relaxed);
            let seconds = unix_millis().saturating_sub(record.connected_at) as f64 / 1000.0;
            tracing::info!(connection = %record.id, duration_s = seconds, "connection closed");
        }
    }
}

/// An open subscription. Dropping it leaves every topic and forgets the connection.
pub struct Subscription<S: Store> {
    gateway: Gateway<S>,
    number: u64,
    record: ConnectionRecord,
    queue: mpsc::Receiver<Arc<TopicEvent>>,
    state: Arc<SubscriberState>,
    draining: watch::Receiver<bool>,
    /// Whether `subscribe` finished, so the counters count this connection.
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

    /// Waits for the next event, or for the end of the subscription.
    ///
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Next {
        tokio::select! {
            biased;
            event = self.queue.recv() => match event {
                Some(event) => Next::Event(event),
                // Every sender is gone only when the hub cut this subscriber off: the hub
                // removes a connection otherwise only after this subscription is dropped.
                None => {
                    debug_assert!(self.state.was_cut());
                    Next::End(EndReason::SlowConsumer)
                }
            },
            _ = self.draining.wait_for(|&draining| draining) => Next::End(EndReason::Draining),
        }
    }
}

impl<S: Store> Drop for Subscription<S> {
    fn drop(&mut self) {
        let gateway = self.gateway.clone();
        let number = self.number;
        let record = self.record.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime means the process is ending; the store's state ends with it or
            // expires on its own.
            return;
        };
        let opened = self.opened;
        runtime.spawn(async move { gateway.close(number, record, opened).await });
    }
}
