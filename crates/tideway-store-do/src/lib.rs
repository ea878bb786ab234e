//! Tideway's Durable-Object emulation store (`--adapter do`): the store trait's objects as
//! named, single-threaded objects in this process, so the gateway logic written against
//! them could move to Cloudflare Durable Objects unchanged.
//!
//! - One **topic object** per topic name (a [`Namespace`] of them): its connections, its
//!   bounded history, its sequence, its grace.
//! - One **directory object**: nodes, connections in arrival order, and the index of live
//!   topic names (a Durable Object cannot list its siblings, so the directory keeps one).
//! - One **sequencer object**: gives each publish its position and hands it to each topic
//!   object in turn, then the copies together to the node's inbox, so every topic and
//!   every inbox sees publishes in position order and a subscriber of several of a
//!   publish's topics gets its copies back to back.
//!
//! How each maps to Cloudflare is in `docs/durable-objects.md`.
#![forbid(unsafe_code)]

mod object;
mod worker;

use std::{
    collections::BTreeSet,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

use tideway_core::{
    ConnectionId, ConnectionRecord, Directory, Event, HistoryRead, Inbox, NodeRecord, Page, Paged,
    Store, StoreError, TopicEvent, TopicHistory, TopicObject, TopicRecord, new_epoch,
};
use tideway_protocol::{EventId, TopicList, TopicName};

use crate::object::{Gone, Namespace, ObjectState};
pub use crate::worker::{WorkerConfig, WorkerStore};

/// Settings of the emulation. Defaults are the ones `tideway --help` prints.
#[derive(Debug, Clone)]
pub struct DoConfig {
    /// Events kept per topic for resume and tail.
    pub history: usize,
    /// How long a topic whose last connection left still counts as live.
    pub topic_grace: Duration,
}

impl Default for DoConfig {
    fn default() -> Self {
        Self {
            history: 1000,
            topic_grace: Duration::ZERO,
        }
    }
}

/// The emulation store. Cloning bumps a reference count.
#[derive(Clone)]
pub struct DoStore {
    shared: Arc<Shared>,
}

struct Shared {
    config: DoConfig,
    inbox: Arc<OnceLock<Inbox>>,
    topics: Namespace<TopicObject>,
    directory: Namespace<DirectoryState>,
    /// The sequencer object's turn: its one message, `append`, awaits the topic objects
    /// while it holds the turn, so publishes reach them one after another. A resume's
    /// read holds it too, so no publish lands between the reads of two topics.
    sequencer: tokio::sync::Mutex<()>,
    /// The sequencer's lifetime: positions count within it.
    epoch: u64,
    /// The sequencer's state, the last position it gave out: advanced under its turn
    /// before it messages the topics, so a topic object that reads it when it comes into
    /// being (in its own message) reads a position at or above every publish it did not
    /// see as live.
    issued: Arc<AtomicU64>,
}

/// The directory is the one object of its namespace.
const DIRECTORY: &str = "directory";

impl ObjectState for TopicObject {
    fn is_empty(&self) -> bool {
        self.is_idle()
    }
}

/// The directory object: core's [`Directory`], and the index of live topic names (a
/// Durable Object cannot list its siblings).
#[derive(Default)]
struct DirectoryState {
    directory: Directory,
    topics: BTreeSet<TopicName>,
}

impl ObjectState for DirectoryState {
    fn is_empty(&self) -> bool {
        // The directory lives as long as the store.
        false
    }
}

fn gone(_: Gone) -> StoreError {
    StoreError::Unavailable("an object of the emulation stopped".into())
}

impl DoStore {
    /// An empty store.
    pub fn new(config: DoConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                inbox: Arc::new(OnceLock::new()),
                topics: Namespace::default(),
                directory: Namespace::default(),
                sequencer: tokio::sync::Mutex::new(()),
                epoch: new_epoch(),
                issued: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    async fn directory<R: Send + 'static>(
        &self,
        message: impl FnOnce(&mut DirectoryState) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        self.shared
            .directory
            .call(DIRECTORY, message)
            .await
            .map_err(gone)
    }

    /// Tells the directory whether a topic is in its index.
    async fn index(&self, topic: &TopicName, live: bool) -> Result<(), StoreError> {
        let topic = topic.clone();
        self.directory(move |d| {
            if live {
                d.topics.insert(topic);
            } else {
                d.topics.remove(&topic);
            }
        })
        .await
    }
}

impl Default for DoStore {
    fn default() -> Self {
        Self::new(DoConfig::default())
    }
}

impl Store for DoStore {
    fn attach(&self, inbox: Inbox) {
        // The first attach wins; a second would be a programming error of the caller.
        let _ = self.shared.inbox.set(inbox);
    }

    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let node = node.clone();
        self.directory(move |d| d.directory.register_node(node))
            .await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.directory(|d| d.directory.nodes()).await
    }

    async fn add_connection(&self, connection: &ConnectionRecord) -> Result<(), StoreError> {
        let connection = connection.clone();
        self.directory(move |d| d.directory.add_connection(connection))
            .await
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        let id = id.clone();
        self.directory(move |d| d.directory.remove_connection(&id))
            .await
    }

    async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, StoreError> {
        self.directory(move |d| d.directory.connections(&page))
            .await
    }

    async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, StoreError> {
        // Only the page's tenant's topics are asked for their records at all.
        let listing = page.clone();
        let names: Vec<TopicName> = self
            .directory(move |d| {
                d.topics
                    .iter()
                    .filter(|t| listing.lists(t))
                    .cloned()
                    .collect()
            })
            .await?;
        let mut records = Vec::new();
        let mut expired = Vec::new();
        for name in &names {
            let topic = name.clone();
            let record = self
                .shared
                .topics
                .call_existing(name.as_str(), move |t| t.live().then(|| t.record(topic)))
                .await
                .map_err(gone)?
                .flatten();
            match record {
                Some(record) => records.push(record),
                None => expired.push(name.clone()),
            }
        }
        for name in &expired {
            self.index(name, false).await?;
        }
        Ok(page.select(records))
    }

    async fn join(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        let id = connection.id.clone();
        let issued = self.shared.issued.clone();
        let capacity = self.shared.config.history;
        let created = self
            .shared
            .topics
            .call(topic.as_str(), move |t| {
                t.join(id, issued.load(SeqCst), capacity)
            })
            .await
            .map_err(gone)?;
        if created {
            self.index(topic, true).await?;
        }
        Ok(())
    }

    async fn leave(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        let id = connection.id.clone();
        let grace = self.shared.config.topic_grace;
        let removed = self
            .shared
            .topics
            .call_existing(topic.as_str(), move |t| t.leave(&id, grace))
            .await
            .map_err(gone)?
            .unwrap_or(false);
        if removed {
            self.index(topic, false).await?;
        }
        Ok(())
    }

    async fn live(&self, topics: &TopicList) -> Result<Vec<TopicName>, StoreError> {
        let mut live = Vec::new();
        for topic in topics {
            let answer = self
                .shared
                .topics
                .call_existing(topic.as_str(), TopicObject::live)
                .await;
            if answer.map_err(gone)? == Some(true) {
                live.push(topic.clone());
            }
        }
        Ok(live)
    }

    async fn append(
        &self,
        topics: &TopicList,
        event: &Arc<Event>,
    ) -> Result<Vec<Arc<TopicEvent>>, StoreError> {
        let _turn = self.shared.sequencer.lock().await;
        // A retry of a publish still in history is answered as the first one was, and
        // delivered no second time.
        let mut retried = Vec::new();
        for topic in topics {
            let id = event.id.clone();
            let first = self
                .shared
                .topics
                .call_existing(topic.as_str(), move |t| {
                    if !t.live() {
                        return None;
                    }
                    t.find(&id).cloned()
                })
                .await
                .map_err(gone)?
                .flatten();
            retried.extend(first);
        }
        if !retried.is_empty() {
            return Ok(retried);
        }
        let position = self.shared.issued.fetch_add(1, SeqCst) + 1;
        let epoch = self.shared.epoch;
        let mut appended = Vec::with_capacity(topics.len());
        for topic in topics {
            let (name, event, at) = (topic.clone(), event.clone(), position);
            let delivered = self
                .shared
                .topics
                .call_existing(topic.as_str(), move |t| {
                    t.live().then(|| t.append(name, epoch, at, event))
                })
                .await
                .map_err(gone)?
                .flatten();
            appended.extend(delivered);
        }
        // Still in the sequencer's turn, so every inbox receives publishes in position
        // order; after every topic took it, so the copies go out together.
        if let Some(inbox) = self.shared.inbox.get() {
            inbox.deliver(&appended);
        }
        Ok(appended)
    }

    async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, StoreError> {
        let tail = self
            .shared
            .topics
            .call_existing(topic.as_str(), move |t| {
                t.live().then(|| t.history().tail(limit))
            })
            .await
            .map_err(gone)?;
        Ok(tail.flatten())
    }

    async fn read_since(
        &self,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> Result<HistoryRead, StoreError> {
        // Held across the reads of every topic: no publish lands between two of them.
        let _turn = self.shared.sequencer.lock().await;
        // First what each live topic's index says of the id, then only the events after
        // its earliest appearance in any of them: no history is copied whole.
        let mut found = Vec::with_capacity(topics.len());
        for topic in topics {
            let id = last_event_id.clone();
            let read = self
                .shared
                .topics
                .call_existing(topic.as_str(), move |t| {
                    t.live().then(|| {
                        let matched = t.find(&id).map(|e| e.position);
                        (t.created_after(), t.history().evicted_through(), matched)
                    })
                })
                .await
                .map_err(gone)?
                .flatten();
            if let Some(read) = read {
                found.push((topic.clone(), read));
            }
        }
        let earliest = found
            .iter()
            .filter_map(|(_, (_, _, matched))| *matched)
            .min();
        // Under the turn: no position is given out while the topics are read.
        let head = self.shared.issued.load(SeqCst);
        let mut read = HistoryRead {
            epoch: self.shared.epoch,
            topics: Vec::with_capacity(found.len()),
        };
        for (topic, (created_after, evicted_through, matched)) in found {
            let events = match earliest {
                Some(cursor) => self
                    .shared
                    .topics
                    .call_existing(topic.as_str(), move |t| t.history().after(cursor))
                    .await
                    .map_err(gone)?
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            read.topics.push(TopicHistory {
                topic,
                epoch: read.epoch,
                created_after,
                evicted_through,
                head,
                matches: matched.into_iter().collect(),
                shared_with: Vec::new(),
                events,
            });
        }
        Ok(read)
    }

    async fn revoke_token(&self, id: &str, until: u64) -> Result<(), StoreError> {
        let token = id.to_owned();
        self.directory(move |d| d.directory.revoke(token, until))
            .await?;
        if let Some(inbox) = self.shared.inbox.get() {
            inbox.revoke_token(id);
        }
        Ok(())
    }

    async fn token_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let token = id.to_owned();
        self.directory(move |d| d.directory.is_revoked(&token))
            .await
    }

    async fn ready(&self) -> bool {
        true
    }
}
