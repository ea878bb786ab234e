//! Tideway's embedded state store: every object of the store trait kept in this process.
//!
//! It is the default (`--adapter memory`): one node, nothing to run beside it. All objects
//! sit behind one mutex, which gives each message the single-writer, consistent-read
//! guarantee of the store trait (more than it asks: messages to different objects are
//! serialised too). Events are delivered to this node's inbox inside the topic's critical
//! section, so subscribers see them in the topic's sequence order.
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Duration,
};

use tideway_core::{
    ConnectionId, ConnectionRecord, Event, History, HistoryRead, Inbox, NodeRecord, Page, Paged,
    Store, StoreError, TopicEvent, TopicRecord, new_epoch, unix_millis,
};
use tideway_protocol::{EventId, TopicList, TopicName};
use tokio::time::Instant;

/// Settings of the in-memory store. Defaults are the ones `tideway --help` prints.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Events kept per topic for resume and tail.
    pub history: usize,
    /// How long a topic whose last connection left still counts as live and keeps its
    /// history.
    pub topic_grace: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            history: 1000,
            topic_grace: Duration::ZERO,
        }
    }
}

/// The in-memory store. Cloning bumps a reference count.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    config: MemoryConfig,
    /// Set once by `attach`, before any event is appended.
    inbox: OnceLock<Inbox>,
    /// A std mutex: no critical section awaits.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<Arc<str>, NodeRecord>,
    /// Connections in the order they came, keyed by arrival number, so pages are stable.
    connections: BTreeMap<u64, ConnectionRecord>,
    arrivals: HashMap<ConnectionId, u64>,
    next_arrival: u64,
    /// The lifetime of this store: positions are counted within it.
    epoch: u64,
    /// The position of the last publish.
    next_position: u64,
    /// Revoked token ids, with when they expire anyway (ms since the epoch).
    revoked: HashMap<String, u64>,
    topics: HashMap<TopicName, Topic>,
}

struct Topic {
    connections: HashSet<ConnectionId>,
    history: History,
    next_seq: u64,
    events: u64,
    /// The last position given out when the topic came into being.
    created_after: u64,
    created_at: u64,
    last_event_at: Option<u64>,
    /// When its last connection left, if it has none now.
    orphaned_since: Option<Instant>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(config: MemoryConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                inbox: OnceLock::new(),
                state: Mutex::new(State {
                    epoch: new_epoch(),
                    ..State::default()
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each critical section leaves the state whole between map operations, so a
        // lock poisoned by a panic elsewhere is still safe to use.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The topic if it is live; removes it when its grace ran out.
    fn live_topic<'s>(&self, state: &'s mut State, name: &TopicName) -> Option<&'s mut Topic> {
        let grace = self.shared.config.topic_grace;
        let expired = state.topics.get(name)?.expired(grace);
        if expired {
            state.topics.remove(name);
            return None;
        }
        state.topics.get_mut(name)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(MemoryConfig::default())
    }
}

impl Topic {
    fn expired(&self, grace: Duration) -> bool {
        self.orphaned_since
            .is_some_and(|since| since.elapsed() >= grace)
    }
}

impl Store for MemoryStore {
    fn attach(&self, inbox: Inbox) {
        // A second attach would be a programming error of the caller; the first one wins.
        let _ = self.shared.inbox.set(inbox);
    }

    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.lock().nodes.insert(node.id.clone(), node.clone());
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let state = self.lock();
        let nodes = state
            .nodes
            .values()
            .map(|node| NodeRecord {
                connections: state
                    .connections
                    .values()
                    .filter(|c| c.node == node.id)
                    .count(),
                ..node.clone()
            })
            .collect();
        Ok(nodes)
    }

    async fn add_connection(&self, connection: &ConnectionRecord) -> Result<(), StoreError> {
        let mut state = self.lock();
        let arrival = state.next_arrival;
        state.next_arrival += 1;
        state.arrivals.insert(connection.id.clone(), arrival);
        state.connections.insert(arrival, connection.clone());
        Ok(())
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(arrival) = state.arrivals.remove(id) {
            state.connections.remove(&arrival);
        }
        Ok(())
    }

    async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, StoreError> {
        let state = self.lock();
        Ok(page.select(state.connections.values().cloned()))
    }

    async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, StoreError> {
        let grace = self.shared.config.topic_grace;
        let mut state = self.lock();
        state.topics.retain(|_, topic| !topic.expired(grace));
        let mut names: Vec<TopicName> = state.topics.keys().cloned().collect();
        names.sort_unstable();
        let names = page.select(names);
        let items = names
            .items
            .iter()
            .filter_map(|name| {
                let topic = state.topics.get(name)?;
                Some(TopicRecord {
                    name: name.clone(),
                    connections: topic.connections.len(),
                    events: topic.events,
                    created_at: topic.created_at,
                    last_event_at: topic.last_event_at,
                })
            })
            .collect();
        Ok(Paged {
            items,
            page: page.page,
            page_size: page.page_size,
            total: names.total,
        })
    }

    async fn join(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let created_after = state.next_position;
        let capacity = self.shared.config.history;
        let entry = match self.live_topic(&mut state, topic) {
            Some(entry) => entry,
            None => state.topics.entry(topic.clone()).or_insert_with(|| Topic {
                connections: HashSet::new(),
                history: History::new(capacity),
                next_seq: 1,
                events: 0,
                created_after,
                created_at: unix_millis(),
                last_event_at: None,
                orphaned_since: None,
            }),
        };
        entry.connections.insert(connection.id.clone());
        entry.orphaned_since = None;
        Ok(())
    }

    async fn leave(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        let grace = self.shared.config.topic_grace;
        let mut state = self.lock();
        let Some(entry) = state.topics.get_mut(topic) else {
            return Ok(());
        };
        entry.connections.remove(&connection.id);
        if entry.connections.is_empty() {
            if grace.is_zero() {
                state.topics.remove(topic);
            } else if entry.orphaned_since.is_none() {
                entry.orphaned_since = Some(Instant::now());
            }
        }
        Ok(())
    }

    async fn live(&self, topics: &TopicList) -> Result<Vec<TopicName>, StoreError> {
        let mut state = self.lock();
        Ok(topics
            .iter()
            .filter(|topic| self.live_topic(&mut state, topic).is_some())
            .cloned()
            .collect())
    }

    async fn append(
        &self,
        topics: &TopicList,
        event: &Arc<Event>,
    ) -> Result<Vec<Arc<TopicEvent>>, StoreError> {
        let inbox = self.shared.inbox.get();
        let mut state = self.lock();
        // A retry of a publish still in history is answered as the first one was, and
        // delivered no second time. The live topics found here are those appended to
        // below, under the same lock.
        let mut live = Vec::with_capacity(topics.len());
        let mut retried = Vec::new();
        for topic in topics {
            if let Some(entry) = self.live_topic(&mut state, topic) {
                retried.extend(entry.history.find(&event.id).cloned());
                live.push(topic);
            }
        }
        if !retried.is_empty() {
            return Ok(retried);
        }
        // One position per publish, taken under the same lock as the deliveries below,
        // so every queue receives publishes in position order.
        state.next_position += 1;
        let (epoch, position) = (state.epoch, state.next_position);
        let mut appended = Vec::with_capacity(live.len());
        for topic in live {
            let Some(entry) = state.topics.get_mut(topic) else {
                continue;
            };
            let delivered = Arc::new(TopicEvent::new(
                topic.clone(),
                entry.next_seq,
                epoch,
                position,
                event.clone(),
            ));
            entry.next_seq += 1;
            entry.events += 1;
            entry.last_event_at = Some(event.published_at);
            entry.history.push(delivered.clone());
            appended.push(delivered);
        }
        // Delivered under the lock, so every subscriber sees the events in position
        // order even when several publishers race.
        if let Some(inbox) = inbox {
            inbox.deliver(&appended);
        }
        Ok(appended)
    }

    async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, StoreError> {
        let mut state = self.lock();
        let tail = self
            .live_topic(&mut state, topic)
            .map(|entry| entry.history.tail(limit));
        Ok(tail)
    }

    async fn read_since(
        &self,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> Result<HistoryRead, StoreError> {
        let mut state = self.lock();
        let mut live = Vec::with_capacity(topics.len());
        for topic in topics {
            if self.live_topic(&mut state, topic).is_some() {
                live.push(topic);
            }
        }
        let histories = live.into_iter().filter_map(|topic| {
            let entry = state.topics.get(topic)?;
            Some((topic.clone(), entry.created_after, &entry.history))
        });
        Ok(HistoryRead::from_histories(
            state.epoch,
            last_event_id,
            histories,
        ))
    }

    async fn revoke_token(&self, id: &str, until: u64) -> Result<(), StoreError> {
        {
            let mut state = self.lock();
            let now = unix_millis();
            state.revoked.retain(|_, until| *until > now);
            state.revoked.insert(id.to_owned(), until);
        }
        if let Some(inbox) = self.shared.inbox.get() {
            inbox.revoke_token(id);
        }
        Ok(())
    }

    async fn token_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let now = unix_millis();
        Ok(self
            .lock()
            .revoked
            .get(id)
            .is_some_and(|until| *until > now))
    }

    async fn ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use tideway_core::Transport;
    use tideway_protocol::{EventData, EventId};

    use super::*;

    fn connection(id: u64, topic: &str) -> ConnectionRecord {
        ConnectionRecord {
            id: ConnectionId::new("n", id),
            node: "n".into(),
            topics: TopicList::parse(topic.as_bytes(), 8).unwrap(),
            label: None,
            transport: Transport::Sse,
            remote: None,
            connected_at: 0,
        }
    }

    fn event(id: &str) -> Arc<Event> {
        Arc::new(Event {
            id: EventId::parse(id.as_bytes()).unwrap(),
            event_type: None,
            data: EventData::parse("x".into()).unwrap(),
            published_at: 0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_topic_keeps_its_history_for_the_grace_then_goes() {
        let store = MemoryStore::new(MemoryConfig {
            history: 10,
            topic_grace: Duration::from_secs(30),
        });
        let topic = TopicName::parse("t").unwrap();
        let list = TopicList::parse(b"t", 8).unwrap();
        let first = connection(1, "t");
        store.join(&topic, &first).await.unwrap();
        store.append(&list, &event("e1")).await.unwrap();
        store.leave(&topic, &first).await.unwrap();

        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(
            store.live(&list).await.unwrap().len(),
            1,
            "still within the grace"
        );
        let appended = store.append(&list, &event("e2")).await.unwrap();
        assert_eq!(appended[0].seq, 2, "events during the grace are kept");
        let second = connection(2, "t");
        store.join(&topic, &second).await.unwrap();
        let tail = store.tail(&topic, 10).await.unwrap().unwrap();
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);

        store.leave(&topic, &second).await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            store.live(&list).await.unwrap().is_empty(),
            "gone once the grace ran out"
        );
        assert!(store.append(&list, &event("e3")).await.unwrap().is_empty());
        assert!(store.tail(&topic, 10).await.unwrap().is_none());
        let page = Page {
            page: 1,
            page_size: 10,
            tenant: None,
        };
        assert_eq!(store.topics(page).await.unwrap().total, 0);
    }

    #[tokio::test]
    async fn without_grace_the_last_leave_removes_the_topic_and_history_is_bounded() {
        let store = MemoryStore::new(MemoryConfig {
            history: 2,
            topic_grace: Duration::ZERO,
        });
        let topic = TopicName::parse("t").unwrap();
        let list = TopicList::parse(b"t", 8).unwrap();
        let only = connection(1, "t");
        store.join(&topic, &only).await.unwrap();
        for id in ["a", "b", "c"] {
            store.append(&list, &event(id)).await.unwrap();
        }
        let tail = store.tail(&topic, 10).await.unwrap().unwrap();
        assert_eq!(
            tail.iter().map(|e| e.event.id.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        store.leave(&topic, &only).await.unwrap();
        assert!(store.live(&list).await.unwrap().is_empty());
        assert!(store.tail(&topic, 10).await.unwrap().is_none());
    }
}
