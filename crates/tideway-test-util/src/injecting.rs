//! A store wrapper that injects what a real store meets: publishes landing between the
//! steps of a resume (at the worst moment: after the subscription joined its topics and
//! started queueing, before the store reads the histories), and calls that fail.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use tideway_core::{
    ConnectionId, ConnectionRecord, Event, HistoryRead, Inbox, NodeRecord, Page, Paged, Store,
    StoreError, TopicEvent, TopicRecord, unix_millis,
};
use tideway_protocol::{EventData, EventId, TopicList, TopicName};

/// Wraps a store; before each `read_since` it appends the publishes queued with
/// [`Injecting::before_next_read`], one `append` each, as concurrent publishers would;
/// a `join` of a topic given to [`Injecting::fail_next_join`] fails as an unreachable
/// store would, and so does the append of an id given to [`Injecting::fail_append_of`].
#[derive(Clone)]
pub struct Injecting<S> {
    inner: S,
    pending: Arc<Mutex<Vec<(TopicList, String)>>>,
    failing_joins: Arc<Mutex<Vec<TopicName>>>,
    failing_appends: Arc<Mutex<Vec<EventId>>>,
    /// Publishes landed so far.
    pub landed: Arc<AtomicU64>,
}

impl<S> Injecting<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Arc::default(),
            failing_joins: Arc::default(),
            failing_appends: Arc::default(),
            landed: Arc::default(),
        }
    }

    /// The next join of `topic` fails (and does nothing).
    pub fn fail_next_join(&self, topic: TopicName) {
        self.failing_joins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(topic);
    }

    /// The next append of the event `id` fails (and appends nothing), alone or in a batch.
    pub fn fail_append_of(&self, id: &str) {
        self.failing_appends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(EventId::parse(id.as_bytes()).expect("a valid id"));
    }

    /// Whether an append of `id` is to fail; it fails once.
    fn failing(&self, id: &EventId) -> bool {
        let mut failing = self
            .failing_appends
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = failing.len();
        failing.retain(|failing| failing != id);
        failing.len() < before
    }

    /// Queues publishes (topics, id) to land just before the next resume reads.
    pub fn before_next_read(&self, publishes: impl IntoIterator<Item = (TopicList, String)>) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(publishes);
    }
}

impl<S: Store> Store for Injecting<S> {
    const LIVE_IS_REMOTE: bool = S::LIVE_IS_REMOTE;
    const ORDER: tideway_core::Order = S::ORDER;

    fn attach(&self, inbox: Inbox) {
        self.inner.attach(inbox);
    }
    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.inner.register_node(node).await
    }
    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.inner.nodes().await
    }
    async fn add_connection(&self, connection: &Arc<ConnectionRecord>) -> Result<(), StoreError> {
        self.inner.add_connection(connection).await
    }
    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        self.inner.remove_connection(id).await
    }
    async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, StoreError> {
        self.inner.connections(page).await
    }
    async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, StoreError> {
        self.inner.topics(page).await
    }
    async fn join(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        let failing = {
            let mut failing = self
                .failing_joins
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let at = failing.iter().position(|t| t == topic);
            at.map(|at| failing.remove(at))
        };
        if failing.is_some() {
            return Err(StoreError::Unavailable("injected: the join failed".into()));
        }
        self.inner.join(topic, connection).await
    }
    async fn leave(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        self.inner.leave(topic, connection).await
    }
    async fn live(&self, topics: &TopicList) -> Result<Vec<TopicName>, StoreError> {
        self.inner.live(topics).await
    }
    async fn append(
        &self,
        topics: &TopicList,
        event: &Arc<Event>,
    ) -> Result<Vec<Arc<TopicEvent>>, StoreError> {
        if self.failing(&event.id) {
            return Err(StoreError::Unavailable(
                format!("injected: the append of {} fails", event.id).into(),
            ));
        }
        self.inner.append(topics, event).await
    }
    async fn append_all(
        &self,
        events: &[(TopicList, Arc<Event>)],
    ) -> Vec<Result<Vec<Arc<TopicEvent>>, StoreError>> {
        let armed = {
            let failing = self
                .failing_appends
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            events.iter().any(|(_, event)| failing.contains(&event.id))
        };
        if armed {
            // One append each, as the default does, so the failing one can fail alone.
            tideway_core::append_each(self, events).await
        } else {
            self.inner.append_all(events).await
        }
    }
    async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, StoreError> {
        self.inner.tail(topic, limit).await
    }
    async fn read_since(
        &self,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> Result<HistoryRead, StoreError> {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for (publish_topics, id) in pending {
            let event = Arc::new(Event {
                id: EventId::parse(id.as_bytes()).expect("a valid id"),
                event_type: None,
                data: EventData::parse("raced".into()).expect("utf-8"),
                published_at: unix_millis(),
            });
            self.inner.append(&publish_topics, &event).await?;
            self.landed.fetch_add(1, Relaxed);
        }
        self.inner.read_since(topics, last_event_id).await
    }
    async fn revoke_token(&self, id: &str, until: u64) -> Result<(), StoreError> {
        self.inner.revoke_token(id, until).await
    }
    async fn token_revoked(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.token_revoked(id).await
    }
    async fn ready(&self) -> bool {
        self.inner.ready().await
    }
}
