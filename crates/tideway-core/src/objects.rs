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

/// What a topic keeps besides its connections and history, as a store that persists its
/// objects writes it (the Durable-Object emulation's `meta` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    /// The last position given out when the topic came into being.
    pub created_after: u64,
    /// When it came into being, in ms since the Unix epoch.
    pub created_at: u64,
    /// The last sequence number given out.
    pub seq: u64,
    /// The position of the newest event its history evicted (0 if none).
    pub evicted_through: u64,
    /// When its last event was published.
    pub last_event_at: Option<u64>,
    /// When the grace of a topic without connections ends, in ms since the Unix epoch.
    pub grace_until: Option<u64>,
    /// Events its history keeps.
    pub capacity: usize,
}

impl TopicObject {
    /// What the topic keeps besides its connections and history.
    pub fn meta(&self) -> TopicMeta {
        TopicMeta {
            created_after: self.created_after,
            created_at: self.created_at,
            seq: self.seq,
            evicted_through: self.history.evicted_through(),
            last_event_at: self.last_event_at,
            grace_until: self.orphaned_until.map(|until| {
                let left = until.saturating_duration_since(Instant::now());
                unix_millis().saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
            }),
            capacity: self.history.capacity(),
        }
    }

    /// The topic as a store persisted it: its `meta`, its connections and the events of
    /// its history, oldest first.
    pub fn restore(
        meta: TopicMeta,
        connections: impl IntoIterator<Item = ConnectionId>,
        events: impl IntoIterator<Item = Arc<TopicEvent>>,
    ) -> Self {
        Self {
            connections: connections.into_iter().collect(),
            history: History::restore(meta.capacity, meta.evicted_through, events),
            seq: meta.seq,
            created_after: meta.created_after,
            created_at: meta.created_at,
            last_event_at: meta.last_event_at,
            orphaned_until: meta.grace_until.map(|until| {
                Instant::now() + Duration::from_millis(until.saturating_sub(unix_millis()))
            }),
        }
    }

    /// When the grace of a topic without connections ends, if it runs.
    pub fn grace_until(&self) -> Option<Instant> {
        self.orphaned_until
    }

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
        // Each publish parsed its own copy of the name; the events a history keeps share
        // the one its newest event holds, rather than keeping one copy each.
        let name = match self.history.events().back() {
            Some(newest) if newest.topic == name => newest.topic.clone(),
            _ => name,
        };
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
    connections: BTreeMap<u64, Arc<ConnectionRecord>>,
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

    /// The directory as a store persisted it: its nodes, its connections by arrival
    /// number, the last arrival number given out and its revocations.
    pub fn restore(
        nodes: impl IntoIterator<Item = NodeRecord>,
        connections: impl IntoIterator<Item = (u64, ConnectionRecord)>,
        next_arrival: u64,
        revoked: impl IntoIterator<Item = (String, u64)>,
    ) -> Self {
        let connections: BTreeMap<u64, Arc<ConnectionRecord>> = connections
            .into_iter()
            .map(|(arrival, c)| (arrival, Arc::new(c)))
            .collect();
        Self {
            nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
            arrivals: connections
                .iter()
                .map(|(arrival, c)| (c.id.clone(), *arrival))
                .collect(),
            next_arrival: connections
                .keys()
                .next_back()
                .map_or(next_arrival, |last| next_arrival.max(*last)),
            connections,
            revoked: revoked.into_iter().collect(),
        }
    }

    /// Adds `connection` after every one before it; returns its arrival number and, if
    /// it was here already, the one it had (it moves to the end rather than being listed
    /// twice).
    pub fn add_connection(&mut self, connection: Arc<ConnectionRecord>) -> (u64, Option<u64>) {
        self.next_arrival += 1;
        let earlier = self
            .arrivals
            .insert(connection.id.clone(), self.next_arrival);
        if let Some(earlier) = earlier {
            self.connections.remove(&earlier);
        }
        self.connections.insert(self.next_arrival, connection);
        (self.next_arrival, earlier)
    }

    /// Forgets connection `id`; returns the arrival number it had, if it was here.
    pub fn remove_connection(&mut self, id: &ConnectionId) -> Option<u64> {
        let arrival = self.arrivals.remove(id)?;
        self.connections.remove(&arrival);
        Some(arrival)
    }

    /// A page of the connections, in arrival order.
    pub fn connections(&self, page: &Page) -> Paged<ConnectionRecord> {
        page.select(
            self.connections
                .values()
                .map(|c| ConnectionRecord::clone(c)),
        )
    }

    /// Revokes token `id` until `until`; forgets revocations that lapsed, and returns
    /// their ids.
    pub fn revoke(&mut self, id: String, until: u64) -> Vec<String> {
        let now = unix_millis();
        let lapsed: Vec<String> = self
            .revoked
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &lapsed {
            self.revoked.remove(id);
        }
        self.revoked.insert(id, until);
        lapsed
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

    #[test]
    fn the_events_a_history_keeps_share_one_copy_of_the_name() {
        let mut topic = TopicObject::default();
        topic.join(ConnectionId::new("n", 1), 0, 10);
        // Each publish parses the name anew, as the request handlers do.
        let parse = || TopicName::parse("t").expect("a name");
        let first = topic.append(parse(), 1, 1, event("a"));
        let second = topic.append(parse(), 1, 2, event("b"));
        assert_eq!(second.topic, first.topic);
        assert_eq!(
            second.topic.as_str().as_ptr(),
            first.topic.as_str().as_ptr()
        );
        // Another name is never taken for the held one.
        let other = TopicName::parse("u").expect("a name");
        assert_eq!(topic.append(other, 1, 3, event("c")).topic.as_str(), "u");
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
        let connection = |n| {
            Arc::new(ConnectionRecord {
                id: ConnectionId::new("n", n),
                node: "n".into(),
                topics: tideway_protocol::TopicList::parse(b"t", 8).expect("topics"),
                label: None,
                transport: crate::Transport::Sse,
                remote: None,
                connected_at: 0,
            })
        };
        for n in [3, 1, 2] {
            directory.add_connection(connection(n));
        }
        assert_eq!(
            directory.add_connection(connection(3)),
            (4, Some(1)),
            "added again: moved to the end, its first arrival given back"
        );
        assert_eq!(
            directory.remove_connection(&ConnectionId::new("n", 1)),
            Some(2)
        );
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
                ConnectionId::new("n", 2).to_string(),
                ConnectionId::new("n", 3).to_string()
            ]
        );
        directory.revoke("gone".into(), 0);
        directory.revoke("t".into(), u64::MAX);
        assert!(directory.is_revoked("t"));
        assert!(!directory.is_revoked("gone"), "lapsed");
    }
}
