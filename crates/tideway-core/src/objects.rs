//! The state of the store's objects as an in-process store holds it: one [`TopicObject`]
//! per topic and one [`Directory`]. The memory store keeps them in one map behind one
//! lock, the Durable-Object emulation one per object task; the rules (when a topic comes
//! into being and goes, what an append records, how connections page, when a revocation
//! lapses) are written here once for both. Redis holds the same state in its own keys.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tideway_protocol::{EventId, TopicName};
use tokio::time::Instant;

use crate::{
    ConnectionId, ConnectionRecord, Event, History, NodeRecord, Page, Paged, TopicEvent,
    TopicRecord, unix_millis,
};

/// One topic: who is joined, its bounded history, its sequence and its grace.
#[derive(Default)]
pub struct TopicObject {
    connections: HashSet<ConnectionId>,
    history: History,
    /// The last sequence number given out; also how many events it ever had.
    seq: u64,
    /// The last position given out when the topic came into being.
    created_after: u64,
    created_at: u64,
    last_event_at: Option<u64>,
    /// When the grace of a topic without connections ends.
    orphaned_until: Option<Instant>,
}

impl TopicObject {
    /// Whether the topic is live: it has a connection, or its grace has not run out. A
    /// topic whose grace ran out is emptied (history and sequence gone) and is not.
    pub fn live(&mut self) -> bool {
        if !self.connections.is_empty() {
            return true;
        }
        match self.orphaned_until {
            Some(until) if Instant::now() < until => true,
            _ => {
                *self = Self::default();
                false
            }
        }
    }

    /// Whether nothing keeps the topic: no connection and no grace running (an object
    /// store may evict it).
    pub fn is_idle(&self) -> bool {
        self.connections.is_empty() && self.orphaned_until.is_none()
    }

    /// Joins `connection`; a topic that was not live comes into being after position
    /// `issued` (the last one given out) with an empty history of `capacity` events.
    /// Returns whether it came into being.
    pub fn join(&mut self, connection: ConnectionId, issued: u64, capacity: usize) -> bool {
        let created = !self.live();
        if created {
            self.created_at = unix_millis();
            self.created_after = issued;
            self.history = History::new(capacity);
        }
        self.orphaned_until = None;
        self.connections.insert(connection);
        created
    }

    /// Leaves `connection`. The last one to leave starts the grace, or with none ends the
    /// topic at once; returns whether it ended.
    pub fn leave(&mut self, connection: &ConnectionId, grace: Duration) -> bool {
        self.connections.remove(connection);
        if !self.connections.is_empty() {
            return false;
        }
        if grace.is_zero() {
            *self = Self::default();
            return true;
        }
        self.orphaned_until
            .get_or_insert_with(|| Instant::now() + grace);
        false
    }

    /// Records `event` as `name`'s next, at `position` of `epoch`, and returns it.
    pub fn append(
        &mut self,
        name: TopicName,
        epoch: u64,
        position: u64,
        event: Arc<Event>,
    ) -> Arc<TopicEvent> {
        self.seq += 1;
        self.last_event_at = Some(event.published_at);
        let appended = Arc::new(TopicEvent::new(name, self.seq, epoch, position, event));
        self.history.push(appended.clone());
        appended
    }

    /// The earliest event of the history with `id`: a retried publish is answered by it.
    pub fn find(&self, id: &EventId) -> Option<&Arc<TopicEvent>> {
        self.history.find(id)
    }

    /// The history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The last position given out when the topic came into being.
    pub fn created_after(&self) -> u64 {
        self.created_after
    }

    /// The topic's record for listings, as `name`.
    pub fn record(&self, name: TopicName) -> TopicRecord {
        TopicRecord {
            name,
            connections: self.connections.len(),
            events: self.seq,
            created_at: self.created_at,
            last_event_at: self.last_event_at,
        }
    }
}

/// The directory: nodes, connections in arrival order, revoked tokens.
#[derive(Default)]
pub struct Directory {
    nodes: BTreeMap<Arc<str>, NodeRecord>,
    /// Connections keyed by arrival number, so pages are stable.
    connections: BTreeMap<u64, ConnectionRecord>,
    arrivals: HashMap<ConnectionId, u64>,
    next_arrival: u64,
    /// Revoked token ids, with when they expire anyway (ms since the Unix epoch).
    revoked: HashMap<String, u64>,
}

impl Directory {
    /// Registers (or refreshes) `node`.
    pub fn register_node(&mut self, node: NodeRecord) {
        self.nodes.insert(node.id.clone(), node);
    }

    /// The nodes, each with its count of connections.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.nodes
            .values()
            .map(|node| {
                let mine = || self.connections.values().filter(|c| c.node == node.id);
                let topics: HashSet<&TopicName> = mine().flat_map(|c| c.topics.iter()).collect();
                NodeRecord {
                    connections: mine().count(),
                    topics: topics.len(),
                    ..node.clone()
                }
            })
            .collect()
    }

    /// Adds `connection` after every one before it.
    pub fn add_connection(&mut self, connection: ConnectionRecord) {
        self.next_arrival += 1;
        self.arrivals
            .insert(connection.id.clone(), self.next_arrival);
        self.connections.insert(self.next_arrival, connection);
    }

    /// Forgets connection `id`.
    pub fn remove_connection(&mut self, id: &ConnectionId) {
        if let Some(arrival) = self.arrivals.remove(id) {
            self.connections.remove(&arrival);
        }
    }

    /// A page of the connections, in arrival order.
    pub fn connections(&self, page: &Page) -> Paged<ConnectionRecord> {
        page.select(self.connections.values().cloned())
    }

    /// Revokes token `id` until `until`; forgets revocations that lapsed.
    pub fn revoke(&mut self, id: String, until: u64) {
        let now = unix_millis();
        self.revoked.retain(|_, until| *until > now);
        self.revoked.insert(id, until);
    }

    /// Whether token `id` is revoked now.
    pub fn is_revoked(&self, id: &str) -> bool {
        let now = unix_millis();
        self.revoked.get(id).is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use tideway_protocol::EventData;

    use super::*;

    fn event(id: &str) -> Arc<Event> {
        Arc::new(Event {
            id: EventId::parse(id.as_bytes()).expect("an id"),
            event_type: None,
            data: EventData::parse("x".into()).expect("utf-8"),
            published_at: 7,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_topic_lives_through_its_grace_and_starts_over_after() {
        let name = TopicName::parse("t").expect("a name");
        let one = ConnectionId::new("n", 1);
        let mut topic = TopicObject::default();
        assert!(!topic.live() && topic.is_idle());
        assert!(topic.join(one.clone(), 41, 10), "comes into being");
        assert_eq!(topic.created_after(), 41);
        assert_eq!(topic.append(name.clone(), 1, 42, event("a")).seq, 1);
        assert!(!topic.leave(&one, Duration::from_secs(5)), "the grace runs");
        assert!(topic.live() && !topic.is_idle());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!topic.live(), "the grace ran out");
        assert!(topic.history().events().is_empty() && topic.is_idle());
        assert!(topic.join(one.clone(), 50, 10), "a new topic");
        assert_eq!(topic.append(name.clone(), 1, 51, event("b")).seq, 1);
        let record = topic.record(name);
        assert_eq!((record.connections, record.events), (1, 1));
        assert_eq!(record.last_event_at, Some(7));
        assert!(topic.leave(&one, Duration::ZERO), "no grace: gone at once");
        assert!(topic.is_idle());
    }

    #[test]
    fn the_directory_pages_in_arrival_order_and_revocations_lapse() {
        let mut directory = Directory::default();
        let connection = |n| ConnectionRecord {
            id: ConnectionId::new("n", n),
            node: "n".into(),
            topics: tideway_protocol::TopicList::parse(b"t", 8).expect("topics"),
            label: None,
            transport: crate::Transport::Sse,
            remote: None,
            connected_at: 0,
        };
        for n in [3, 1, 2] {
            directory.add_connection(connection(n));
        }
        directory.remove_connection(&ConnectionId::new("n", 1));
        let page = Page {
            page: 1,
            page_size: 10,
            tenant: None,
        };
        let ids: Vec<String> = directory
            .connections(&page)
            .items
            .iter()
            .map(|c| c.id.to_string())
            .collect();
        assert_eq!(
            ids,
            [
                ConnectionId::new("n", 3).to_string(),
                ConnectionId::new("n", 2).to_string()
            ]
        );
        directory.revoke("gone".into(), 0);
        directory.revoke("t".into(), u64::MAX);
        assert!(directory.is_revoked("t"));
        assert!(!directory.is_revoked("gone"), "lapsed");
    }
}
