//! Tideway's embedded state store: every object of the store trait kept in this process.
//!
//! It is the default (`--adapter memory`): one node, nothing to run beside it. All objects
//! (core's [`TopicObject`]s and [`Directory`], whose rules the DO emulation shares) sit
//! behind one mutex, which gives each message the single-writer, consistent-read
//! guarantee of the store trait (more than it asks: messages to different objects are
//! serialised too). A publish's copies are delivered to this node's inbox inside that
//! critical section, so subscribers see publishes in position order.
#![forbid(unsafe_code)]

use std::{
    collections::hash_map::Entry,
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Duration,
};

use tideway_core::{
    ConnectionId, ConnectionRecord, Directory, Event, HistoryRead, Inbox, NodeRecord, Page, Paged,
    Store, StoreError, TopicEvent, TopicObject, TopicRecord, Wakes, new_epoch,
};
use tideway_protocol::{EventId, PrehashedMap, TopicList, TopicName};

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
    directory: Directory,
    /// The lifetime of this store: positions are counted within it.
    epoch: u64,
    /// The position of the last publish.
    next_position: u64,
    topics: PrehashedMap<TopicName, TopicObject>,
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
}

/// How many events of an `append_all` one lock covers: its critical section is a few
/// microseconds per event, and another publisher or a subscription waits for it.
const APPENDS_PER_LOCK: usize = 32;

impl State {
    /// [`Store::append`] under the lock: appends `event` to those of `topics` that are
    /// live and queues the copies to this node's readers, whom `wakes` wakes once the
    /// caller has released the lock.
    fn append(
        &mut self,
        inbox: Option<&Inbox>,
        topics: &TopicList,
        event: &Arc<Event>,
        wakes: &mut Wakes,
    ) -> Vec<Arc<TopicEvent>> {
        // A retry of a publish still in history is answered as the first one was, and
        // delivered no second time. The live topics found here are those appended to
        // below, under the same lock.
        let mut live = Vec::with_capacity(topics.len());
        let mut retried = Vec::new();
        for topic in topics {
            if let Some(entry) = self.live_topic(topic) {
                retried.extend(entry.find(&event.id).cloned());
                live.push(topic);
            }
        }
        if !retried.is_empty() || live.is_empty() {
            // A retry is answered as the first one was; a publish to nobody takes no
            // position.
            return retried;
        }
        // One position per publish, taken under the same lock as the deliveries below,
        // so every queue receives publishes in position order.
        self.next_position += 1;
        let (epoch, position) = (self.epoch, self.next_position);
        let appended: Vec<Arc<TopicEvent>> = live
            .into_iter()
            .filter_map(|topic| {
                let entry = self.topics.get_mut(topic)?;
                Some(entry.append(topic.clone(), epoch, position, event.clone()))
            })
            .collect();
        // Queued under the lock, so every subscriber sees the events in position order
        // even when several publishers race.
        if let Some(inbox) = inbox {
            inbox.deliver_into(&appended, wakes);
        }
        appended
    }

    /// The topic if it is live; forgets it when its grace ran out.
    fn live_topic(&mut self, name: &TopicName) -> Option<&mut TopicObject> {
        // One lookup (the name's hash is most of its cost); the key's clone is a count.
        match self.topics.entry(name.clone()) {
            Entry::Occupied(mut topic) => {
                if topic.get_mut().live() {
                    Some(topic.into_mut())
                } else {
                    topic.remove();
                    None
                }
            }
            Entry::Vacant(_) => None,
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(MemoryConfig::default())
    }
}

impl Store for MemoryStore {
    fn attach(&self, inbox: Inbox) {
        // A second attach would be a programming error of the caller; the first one wins.
        let _ = self.shared.inbox.set(inbox);
    }

    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.lock().directory.register_node(node.clone());
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        Ok(self.lock().directory.nodes())
    }

    async fn add_connection(&self, connection: &Arc<ConnectionRecord>) -> Result<(), StoreError> {
        self.lock().directory.add_connection(connection.clone());
        Ok(())
    }

    async fn remove_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        self.lock().directory.remove_connection(id);
        Ok(())
    }

    async fn connections(&self, page: Page) -> Result<Paged<ConnectionRecord>, StoreError> {
        Ok(self.lock().directory.connections(&page))
    }

    async fn topics(&self, page: Page) -> Result<Paged<TopicRecord>, StoreError> {
        let mut state = self.lock();
        state.topics.retain(|_, topic| topic.live());
        let mut names: Vec<TopicName> = state.topics.keys().cloned().collect();
        names.sort_unstable();
        let names = page.select(names);
        let items = names
            .items
            .iter()
            .filter_map(|name| Some(state.topics.get(name)?.record(name.clone())))
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
        let issued = state.next_position;
        state.topics.entry(topic.clone()).or_default().join(
            connection.id.clone(),
            issued,
            self.shared.config.history,
        );
        Ok(())
    }

    async fn leave(
        &self,
        topic: &TopicName,
        connection: &ConnectionRecord,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let Some(entry) = state.topics.get_mut(topic) else {
            return Ok(());
        };
        if entry.leave(&connection.id, self.shared.config.topic_grace) {
            state.topics.remove(topic);
        }
        Ok(())
    }

    async fn live(&self, topics: &TopicList) -> Result<Vec<TopicName>, StoreError> {
        let mut state = self.lock();
        Ok(topics
            .iter()
            .filter(|topic| state.live_topic(topic).is_some())
            .cloned()
            .collect())
    }

    async fn append(
        &self,
        topics: &TopicList,
        event: &Arc<Event>,
    ) -> Result<Vec<Arc<TopicEvent>>, StoreError> {
        let inbox = self.shared.inbox.get();
        let mut wakes = Wakes::default();
        let appended = self.lock().append(inbox, topics, event, &mut wakes);
        // The readers are woken once the lock is released (the guard went above).
        drop(wakes);
        Ok(appended)
    }

    async fn append_all(
        &self,
        events: &[(TopicList, Arc<Event>)],
    ) -> Vec<Result<Vec<Arc<TopicEvent>>, StoreError>> {
        let inbox = self.shared.inbox.get();
        let mut appended = Vec::with_capacity(events.len());
        // One lock for up to `APPENDS_PER_LOCK` events: fewer lock round trips, and
        // others' calls still get in between.
        for some in events.chunks(APPENDS_PER_LOCK) {
            let mut wakes = Wakes::default();
            {
                let mut state = self.lock();
                for (topics, event) in some {
                    appended.push(Ok(state.append(inbox, topics, event, &mut wakes)));
                }
            }
            drop(wakes);
        }
        appended
    }

    async fn tail(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<Option<Vec<Arc<TopicEvent>>>, StoreError> {
        let mut state = self.lock();
        Ok(state
            .live_topic(topic)
            .map(|entry| entry.history().tail(limit)))
    }

    async fn read_since(
        &self,
        topics: &TopicList,
        last_event_id: &EventId,
    ) -> Result<HistoryRead, StoreError> {
        let mut state = self.lock();
        let mut live = Vec::with_capacity(topics.len());
        for topic in topics {
            if state.live_topic(topic).is_some() {
                live.push(topic);
            }
        }
        let histories = live.into_iter().filter_map(|topic| {
            let entry = state.topics.get(topic)?;
            Some((topic.clone(), entry.created_after(), entry.history()))
        });
        Ok(HistoryRead::from_histories(
            state.epoch,
            state.next_position,
            last_event_id,
            histories,
        ))
    }

    async fn revoke_token(&self, id: &str, until: u64) -> Result<(), StoreError> {
        self.lock().directory.revoke(id.to_owned(), until);
        if let Some(inbox) = self.shared.inbox.get() {
            inbox.revoke_token(id);
        }
        Ok(())
    }

    async fn token_revoked(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().directory.is_revoked(id))
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
