//! Tideway's Durable-Object stores (`--adapter do`). With `--do-url`, [`WorkerStore`]
//! speaks to the Worker in `worker/`, whose Durable Object classes hold the state on
//! Cloudflare's runtime. Without it, [`DoStore`] runs the same objects in this process,
//! on the model of `object.rs` (storage, alarms, eviction, messages interleaving at
//! awaits):
//!
//! - One **topic object** per topic name: its connections, its bounded history, its
//!   sequence, its grace (an alarm).
//! - One **directory object**: nodes, connections in arrival order, revoked tokens, and
//!   the index of live topic names (a Durable Object cannot list its siblings).
//! - One **sequencer object**: gives each publish its position and, in its turn, hands it
//!   to each topic object and then the copies together to the node's inbox, so every
//!   topic and every inbox sees publishes in position order and a subscriber of several
//!   of a publish's topics gets its copies back to back.
//!
//! How each maps to Cloudflare, and the storage layout, are in `docs/durable-objects.md`.
#![forbid(unsafe_code)]

mod object;
mod wire;
mod worker;

use std::{
    collections::BTreeSet,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tideway_core::{
    ConnectionId, ConnectionRecord, Directory, Event, HistoryRead, Inbox, NodeRecord, Page, Paged,
    Store, StoreError, TopicEvent, TopicHistory, TopicMeta, TopicObject, TopicRecord, new_epoch,
};
use tideway_protocol::{EventId, TopicList, TopicName};

use crate::object::{Ctx, Damaged, Gone, Namespace, ObjectState, Options, Storage};
pub use crate::worker::{WorkerConfig, WorkerStore};

/// Settings of the emulation. Defaults are the ones `tideway --help` prints.
#[derive(Debug, Clone)]
pub struct DoConfig {
    /// Events kept per topic for resume and tail.
    pub history: usize,
    /// How long a topic whose last connection left still counts as live.
    pub topic_grace: Duration,
    /// How long an object may be idle before it is evicted from memory (its storage
    /// stays; zero: as soon as it is idle, so every message starts it from storage).
    pub evict_after: Duration,
    /// Test mode: calls between objects yield a few times before and after, so messages
    /// interleave at awaits as they would between real objects.
    pub jitter: bool,
}

impl Default for DoConfig {
    fn default() -> Self {
        Self {
            history: 1000,
            topic_grace: Duration::ZERO,
            evict_after: Duration::from_secs(30),
            jitter: false,
        }
    }
}

impl DoConfig {
    /// The harshest the emulation can be: every idle object evicted and started again
    /// from storage, and messages interleaved at every await between objects.
    pub fn testing() -> Self {
        Self {
            evict_after: Duration::ZERO,
            jitter: true,
            ..Self::default()
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
    topics: Namespace<TopicState>,
    directory: Namespace<DirectoryState>,
    sequencer: Namespace<SequencerState>,
}

/// The directory and the sequencer are the one object of their namespaces.
const DIRECTORY: &str = "directory";
const SEQUENCER: &str = "sequencer";

/// A turn: held across an object's awaits where other messages must wait (the Worker's
/// `Turn`). Not stored: it lives and dies with the object in memory.
type Turn = Arc<tokio::sync::Mutex<()>>;

/// The topic object: core's [`TopicObject`], written through to storage as the Worker's
/// `Topic` writes it — `meta`, `m:<connection>` per member, `h:<seq>` per event held —
/// with its grace as an alarm.
#[derive(Default)]
struct TopicState {
    topic: TopicObject,
    turn: Turn,
}

fn member_key(id: &ConnectionId) -> String {
    let mut key = String::with_capacity(2 + id.as_str().len());
    key.push_str("m:");
    key.push_str(id.as_str());
    key
}

fn history_key(seq: u64) -> String {
    padded_key("h:", seq)
}

/// `prefix` and `n` in 20 digits, so keys list in number order (written by hand: this is
/// on every append, and `format!` costs more than the rest of the key's life).
fn padded_key(prefix: &str, mut n: u64) -> String {
    let mut digits = [b'0'; 20];
    for digit in digits.iter_mut().rev() {
        // `n % 10` is below 10, so the cast keeps it whole.
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let mut key = String::with_capacity(prefix.len() + digits.len());
    key.push_str(prefix);
    key.extend(digits.iter().map(|&d| char::from(d)));
    key
}

impl ObjectState for TopicState {
    fn load(storage: &mut Storage) -> Result<Self, Damaged> {
        let Some(meta) = storage.get::<TopicMeta>("meta")? else {
            return Ok(Self::default());
        };
        let members = storage.list::<ConnectionId>("m:")?;
        let events = storage.list::<Arc<TopicEvent>>("h:")?;
        Ok(Self {
            topic: TopicObject::restore(
                meta,
                members.into_iter().map(|(_, id)| id),
                events.into_iter().map(|(_, event)| event),
            ),
            turn: Turn::default(),
        })
    }
}

impl TopicState {
    /// Whether the topic is live; one whose grace ran out is emptied, storage and all.
    fn live(&mut self, storage: &mut Storage) -> bool {
        let live = self.topic.live();
        if !live {
            storage.delete_all();
            storage.delete_alarm();
        }
        live
    }

    /// Joins `id`; a topic that was not live comes into being after position `issued`.
    /// Returns whether it came into being.
    fn join(
        &mut self,
        storage: &mut Storage,
        id: ConnectionId,
        issued: u64,
        capacity: usize,
    ) -> bool {
        let created = self.topic.join(id.clone(), issued, capacity);
        if created {
            // Whatever an ended topic left is not this one's.
            storage.delete_all();
        }
        storage.delete_alarm();
        storage.put("meta".into(), self.topic.meta());
        storage.put(member_key(&id), id);
        created
    }

    /// Leaves `id`; returns whether the topic ended. The last to leave starts the grace,
    /// and its alarm.
    fn leave(&mut self, storage: &mut Storage, id: &ConnectionId, grace: Duration) -> bool {
        let ended = self.topic.leave(id, grace);
        if self.topic.is_idle() {
            storage.delete_all();
            storage.delete_alarm();
            return ended;
        }
        storage.delete(&member_key(id));
        if let Some(until) = self.topic.grace_until() {
            storage.put("meta".into(), self.topic.meta());
            storage.set_alarm(until);
        }
        ended
    }

    /// Records `event` at `position`, and evicts from storage what the history evicted.
    fn append(
        &mut self,
        storage: &mut Storage,
        name: TopicName,
        (epoch, position): (u64, u64),
        event: Arc<Event>,
    ) -> Arc<TopicEvent> {
        let oldest = |t: &TopicObject| t.history().events().front().map(|e| e.seq);
        let held_from = oldest(&self.topic);
        let appended = self.topic.append(name, epoch, position, event);
        let now_from = oldest(&self.topic).unwrap_or(appended.seq + 1);
        for seq in held_from.unwrap_or(appended.seq)..now_from {
            storage.delete(&history_key(seq));
        }
        if now_from <= appended.seq {
            storage.put(history_key(appended.seq), appended.clone());
        }
        storage.put("meta".into(), self.topic.meta());
        appended
    }

    /// The alarm: the grace ran out (the topic ends; `true`) or was moved on.
    fn alarm(&mut self, storage: &mut Storage) -> bool {
        if !self.live(storage) {
            return true;
        }
        if let Some(until) = self.topic.grace_until() {
            storage.set_alarm(until);
        }
        false
    }
}

/// The directory object: core's [`Directory`], and the index of live topic names (a
/// Durable Object cannot list its siblings). Stored as the Worker's `Directory` is:
/// `n:<node>`, `c:<arrival>`, `next`, `r:<token id>`, `t:<topic>`.
#[derive(Default)]
struct DirectoryState {
    directory: Directory,
    topics: BTreeSet<TopicName>,
}

fn arrival_key(arrival: u64) -> String {
    padded_key("c:", arrival)
}

impl ObjectState for DirectoryState {
    fn load(storage: &mut Storage) -> Result<Self, Damaged> {
        let nodes = storage.list::<NodeRecord>("n:")?;
        let connections = storage
            .list::<ConnectionRecord>("c:")?
            .into_iter()
            .map(|(arrival, connection)| match arrival.parse::<u64>() {
                Ok(arrival) => Ok((arrival, connection)),
                Err(_) => Err(Damaged::new(
                    format!("c:{arrival}"),
                    "not an arrival number",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = storage.get::<u64>("next")?.unwrap_or_default();
        let revoked = storage.list::<u64>("r:")?;
        let topics = storage
            .list::<u8>("t:")?
            .into_iter()
            .map(|(name, _)| {
                TopicName::from_stored(&name)
                    .ok_or_else(|| Damaged::new(format!("t:{name}"), "not a topic name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            directory: Directory::restore(
                nodes.into_iter().map(|(_, node)| node),
                connections,
                next,
                revoked,
            ),
            topics,
        })
    }
}

impl DirectoryState {
    fn register_node(&mut self, storage: &mut Storage, node: NodeRecord) {
        storage.put(format!("n:{}", node.id), node.clone());
        self.directory.register_node(node);
    }

    fn add_connection(&mut self, storage: &mut Storage, connection: Arc<ConnectionRecord>) {
        let (arrival, earlier) = self.directory.add_connection(connection.clone());
        if let Some(earlier) = earlier {
            storage.delete(&arrival_key(earlier));
        }
        storage.put(arrival_key(arrival), ConnectionRecord::clone(&connection));
        storage.put("next".into(), arrival);
    }

    fn remove_connection(&mut self, storage: &mut Storage, id: &ConnectionId) {
        if let Some(arrival) = self.directory.remove_connection(id) {
            storage.delete(&arrival_key(arrival));
        }
    }

    fn revoke(&mut self, storage: &mut Storage, id: String, until: u64) {
        storage.put(format!("r:{id}"), until);
        for lapsed in self.directory.revoke(id, until) {
            storage.delete(&format!("r:{lapsed}"));
        }
    }

    fn index(&mut self, storage: &mut Storage, topic: TopicName, live: bool) {
        let key = format!("t:{topic}");
        if live {
            storage.put(key, 1u8);
            self.topics.insert(topic);
        } else {
            storage.delete(&key);
            self.topics.remove(&topic);
        }
    }
}

/// The sequencer object: the epoch it took when it started from nothing, and the last
/// position it gave out (`epoch`, `issued`).
struct SequencerState {
    epoch: u64,
    issued: u64,
    turn: Turn,
}

impl ObjectState for SequencerState {
    fn load(storage: &mut Storage) -> Result<Self, Damaged> {
        let epoch = match storage.get::<u64>("epoch")? {
            Some(epoch) => epoch,
            None => {
                let epoch = new_epoch();
                storage.put("epoch".into(), epoch);
                epoch
            }
        };
        Ok(Self {
            epoch,
            issued: storage.get("issued")?.unwrap_or_default(),
            turn: Turn::default(),
        })
    }
}

fn gone(err: Gone) -> StoreError {
    StoreError::Unavailable(format!("an object of the emulation: {err}").into())
}

/// Waits for the object's turn.
async fn turn<S: ObjectState>(
    ctx: &Ctx<S>,
    of: impl FnOnce(&S) -> Turn,
) -> Result<tokio::sync::OwnedMutexGuard<()>, Gone> {
    let turn = ctx.with(|state, _| of(state))?;
    Ok(turn.lock_owned().await)
}

impl DoStore {
    /// An empty store.
    pub fn new(config: DoConfig) -> Self {
        let options = Options {
            evict_after: config.evict_after,
            jitter: config.jitter,
        };
        let store = Self {
            shared: Arc::new(Shared {
                config,
                inbox: Arc::new(OnceLock::new()),
                topics: Namespace::new(options),
                directory: Namespace::new(options),
                sequencer: Namespace::new(options),
            }),
        };
        let owner = Arc::downgrade(&store.shared);
        store.shared.topics.on_alarm(move |name| {
            let Some(shared) = owner.upgrade() else {
                return;
            };
            tokio::spawn(async move {
                if let Err(err) = (DoStore { shared }).topic_alarm(&name).await {
                    tracing::warn!(topic = %name, %err, "a topic's alarm failed");
                }
            });
        });
        store
    }

    async fn directory<R: Send + 'static>(
        &self,
        message: impl FnOnce(&mut DirectoryState, &mut Storage) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        self.shared
            .directory
            .call(DIRECTORY, message)
            .await
            .map_err(gone)
    }

    /// A message to the topic object `name` in its turn, if the object exists.
    async fn topic<R: Send + 'static>(
        &self,
        name: &TopicName,
        message: impl FnOnce(&mut TopicState, &mut Storage) -> R + Send + 'static,
    ) -> Result<Option<R>, StoreError> {
        let answer = self
            .shared
            .topics
            .send(name.as_str(), false, |ctx| async move {
                let _turn = turn(&ctx, |t: &TopicState| t.turn.clone()).await?;
                ctx.with(message)
            })
            .await;
        answer.transpose().map_err(gone)
    }

    /// Tells the directory whether a topic is in its index.
    async fn index(&self, topic: &TopicName, live: bool) -> Result<(), StoreError> {
        let topic = topic.clone();
        self.directory(move |d, storage| d.index(storage, topic, live))
            .await
    }

    /// A topic's alarm went off: if its grace ran out, it leaves the index.
    async fn topic_alarm(&self, name: &str) -> Result<(), StoreError> {
        let Some(topic) = TopicName::from_stored(name) else {
            return Ok(());
        };
        if self.topic(&topic, TopicState::alarm).await? == Some(true) {
            self.index(&topic, false).await?;
        }
        Ok(())
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
        self.directory(move |d, storage| d.register_node(storage, node))
            .await
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.directory(|d, _| d.directory.nodes()).await
    }

    async fn add_connection(&self, connection: &Arc<ConnectionRecord>) -> Result<(), StoreError> {
        let connection = connection.clone();
        self.directory(move |d, storage| d.add_connection(storage, connection))
            .await
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        let id = id.clone();
        self.directory(move |d, storage| d.remove_connection(storage, &id))
            .await
    }

    async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, StoreError> {
        self.directory(move |d, _| d.directory.connections(&page))
            .await
    }

    async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, StoreError> {
        // Only the page's tenant's topics are asked for their records at all.
        let listing = page.clone();
        let names: Vec<TopicName> = self
            .directory(move |d, _| {
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
                .topic(name, move |t, storage| {
                    t.live(storage).then(|| t.topic.record(topic))
                })
                .await?
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
        let capacity = self.shared.config.history;
        let store = self.clone();
        let created = self
            .shared
            .topics
            .send(topic.as_str(), true, move |ctx| async move {
                // In the topic's turn while it asks the sequencer: a publish reaching the
                // topic meanwhile waits, and finds it live after position `issued`.
                let _turn = turn(&ctx, |t: &TopicState| t.turn.clone()).await?;
                let issued = store
                    .shared
                    .sequencer
                    .call(SEQUENCER, |s, _| s.issued)
                    .await?;
                ctx.with(move |t, storage| t.join(storage, id, issued, capacity))
            })
            .await
            .unwrap_or(Err(Gone::Stopped))
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
        let ended = self
            .topic(topic, move |t, storage| t.leave(storage, &id, grace))
            .await?
            .unwrap_or(false);
        if ended {
            self.index(topic, false).await?;
        }
        Ok(())
    }

    async fn live(&self, topics: &TopicList) -> Result<Vec<TopicName>, StoreError> {
        let mut live = Vec::new();
        for topic in topics {
            if self.topic(topic, TopicState::live).await? == Some(true) {
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
        // In the sequencer's turn: publishes reach the topics, and the inbox, one after
        // another, in position order.
        let (topics, event) = (topics.clone(), event.clone());
        self.in_sequencer_turn(move |store, ctx| async move {
            store.sequence(&ctx, &topics, &event).await
        })
        .await
    }

    async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, StoreError> {
        let tail = self
            .topic(topic, move |t, storage| {
                t.live(storage).then(|| t.topic.history().tail(limit))
            })
            .await?;
        Ok(tail.flatten())
    }

    async fn read_since(
        &self,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> Result<HistoryRead, StoreError> {
        // In the sequencer's turn: no publish lands between the reads of two topics.
        let (topics, id) = (topics.clone(), last_event_id.clone());
        self.in_sequencer_turn(
            move |store, ctx| async move { store.read(&ctx, &topics, &id).await },
        )
        .await
    }

    async fn revoke_token(&self, id: &str, until: u64) -> Result<(), StoreError> {
        let token = id.to_owned();
        self.directory(move |d, storage| d.revoke(storage, token, until))
            .await?;
        if let Some(inbox) = self.shared.inbox.get() {
            inbox.revoke_token(id);
        }
        Ok(())
    }

    async fn token_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let token = id.to_owned();
        self.directory(move |d, _| d.directory.is_revoked(&token))
            .await
    }

    async fn ready(&self) -> bool {
        true
    }
}

impl DoStore {
    /// A message to the sequencer that runs `work` holding the sequencer's turn to its
    /// end (both of its messages, `append` and `read_since`, await the topic objects).
    async fn in_sequencer_turn<R, F, Fut>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(DoStore, Ctx<SequencerState>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<R, StoreError>> + Send + 'static,
    {
        let store = self.clone();
        self.shared
            .sequencer
            .send(SEQUENCER, true, move |ctx| async move {
                let _turn = turn(&ctx, |s: &SequencerState| s.turn.clone()).await?;
                Ok(work(store, ctx).await)
            })
            .await
            .unwrap_or(Err(Gone::Stopped))
            .map_err(gone)?
    }

    /// The sequencer's `append`, in its turn.
    async fn sequence(
        &self,
        ctx: &Ctx<SequencerState>,
        topics: &TopicList,
        event: &Arc<Event>,
    ) -> Result<Vec<Arc<TopicEvent>>, StoreError> {
        // A retry of a publish still in history is answered as the first one was, and
        // delivered no second time.
        let mut retried = Vec::new();
        for topic in topics {
            let id = event.id.clone();
            let first = self
                .topic(topic, move |t, storage| {
                    t.live(storage).then(|| t.topic.find(&id).cloned())
                })
                .await?
                .flatten()
                .flatten();
            retried.extend(first);
        }
        if !retried.is_empty() {
            return Ok(retried);
        }
        // Given out (and stored) before any topic is messaged, so a topic coming into
        // being meanwhile reads a position at or above every publish it does not see.
        let sequenced = ctx
            .with(|s, storage| {
                s.issued += 1;
                storage.put("issued".into(), s.issued);
                (s.epoch, s.issued)
            })
            .map_err(gone)?;
        let mut appended = Vec::with_capacity(topics.len());
        for topic in topics {
            let (name, event) = (topic.clone(), event.clone());
            let copy = self
                .topic(topic, move |t, storage| {
                    t.live(storage)
                        .then(|| t.append(storage, name, sequenced, event))
                })
                .await?
                .flatten();
            appended.extend(copy);
        }
        // Still in the sequencer's turn, so every inbox receives publishes in position
        // order; after every topic took it, so the copies go out together.
        if let Some(inbox) = self.shared.inbox.get() {
            drop(inbox.deliver(&appended));
        }
        Ok(appended)
    }

    /// The sequencer's `read_since`, in its turn.
    async fn read(
        &self,
        ctx: &Ctx<SequencerState>,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> Result<HistoryRead, StoreError> {
        // First what each live topic's index says of the id, then only the events after
        // its earliest appearance in any of them: no history is copied whole.
        let mut found = Vec::with_capacity(topics.len());
        for topic in topics {
            let id = last_event_id.clone();
            let read = self
                .topic(topic, move |t, storage| {
                    t.live(storage).then(|| {
                        let matched = t.topic.find(&id).map(|e| e.position);
                        let history = t.topic.history();
                        (t.topic.created_after(), history.evicted_through(), matched)
                    })
                })
                .await?
                .flatten();
            if let Some(read) = read {
                found.push((topic.clone(), read));
            }
        }
        let earliest = found
            .iter()
            .filter_map(|(_, (_, _, matched))| *matched)
            .min();
        // In the turn: no position is given out while the topics are read.
        let (epoch, head) = ctx.with(|s, _| (s.epoch, s.issued)).map_err(gone)?;
        let mut read = HistoryRead {
            epoch,
            topics: Vec::with_capacity(found.len()),
        };
        for (topic, (created_after, evicted_through, matched)) in found {
            let events = match earliest {
                Some(cursor) => self
                    .topic(&topic, move |t, _| t.topic.history().after(cursor))
                    .await?
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
}

#[cfg(test)]
mod tests {
    use tideway_core::{Transport, unix_millis};
    use tideway_protocol::EventData;

    use super::*;

    #[test]
    fn padded_keys_list_in_number_order() {
        assert_eq!(history_key(42), "h:00000000000000000042");
        assert_eq!(padded_key("c:", u64::MAX), "c:18446744073709551615");
        let mut keys: Vec<String> = [9, 10, 1, u64::MAX, 0].map(history_key).into();
        keys.sort();
        assert_eq!(keys, [0, 1, 9, 10, u64::MAX].map(history_key));
    }

    #[tokio::test]
    async fn a_topic_in_its_grace_is_evicted_read_back_and_ended_by_its_alarm() {
        let store = DoStore::new(DoConfig {
            topic_grace: Duration::from_millis(300),
            ..DoConfig::testing()
        });
        let topic = TopicName::parse("t").unwrap();
        let connection = Arc::new(ConnectionRecord {
            id: ConnectionId::new("n", 1),
            node: "n".into(),
            topics: TopicList::parse(b"t", 8).unwrap(),
            label: None,
            transport: Transport::Sse,
            remote: None,
            connected_at: unix_millis(),
        });
        store.add_connection(&connection).await.unwrap();
        store.join(&topic, &connection).await.unwrap();
        let event = Arc::new(Event {
            id: EventId::parse(b"e1").unwrap(),
            event_type: None,
            data: EventData::parse("x".into()).unwrap(),
            published_at: unix_millis(),
        });
        let list = TopicList::parse(b"t", 8).unwrap();
        let appended = store.append(&list, &event).await.unwrap();
        store.leave(&topic, &connection).await.unwrap();
        store.remove_connection(&connection.id).await.unwrap();
        assert!(
            store.shared.topics.running().is_empty(),
            "evicted when idle"
        );
        assert_eq!(store.shared.topics.names(), ["t"], "its storage stays");
        let tail = store
            .tail(&topic, 10)
            .await
            .unwrap()
            .expect("live in its grace");
        assert_eq!(
            tail.iter()
                .map(|e| (e.seq, e.position, e.epoch, e.event.id.to_string()))
                .collect::<Vec<_>>(),
            appended
                .iter()
                .map(|e| (e.seq, e.position, e.epoch, e.event.id.to_string()))
                .collect::<Vec<_>>(),
            "read back from storage as it was"
        );
        // Nobody asks about the topic again: its alarm ends it, storage and index.
        // The handler leaves the index last.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.directory(|d, _| d.topics.len()).await.unwrap() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the alarm ended it");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.shared.topics.names().is_empty(), "storage and all");
        assert_eq!(store.shared.directory.running(), Vec::<String>::new());
    }
}
