//! A topic's bounded history, as the stores that hold it in memory keep it: the events,
//! an index by publisher id (for idempotent publishes), and where it starts to be
//! complete (for resume). One type, so the in-memory and the Durable-Object stores cannot
//! keep it differently.

use std::{collections::VecDeque, sync::Arc};

use tideway_protocol::EventId;

use crate::TopicEvent;

/// The last `capacity` events of one topic.
#[derive(Debug, Default, Clone)]
pub struct History {
    capacity: usize,
    events: VecDeque<Arc<TopicEvent>>,
    /// The oldest event of each id still held (stores append an id held already
    /// nowhere: a second publish of it is a retry), found by the hash its id was given
    /// when parsed. A slot is the event's pointer alone: the key is in the event.
    ids: hashbrown::HashTable<Arc<TopicEvent>>,
    evicted_through: u64,
}

impl History {
    /// An empty history keeping at most `capacity` events (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// A history as a store persisted it: `events` held (oldest first, at most
    /// `capacity` kept), and the position of the newest one evicted before them.
    pub fn restore(
        capacity: usize,
        evicted_through: u64,
        events: impl IntoIterator<Item = Arc<TopicEvent>>,
    ) -> Self {
        let mut history = Self::new(capacity);
        for event in events {
            history.push(event);
        }
        history.evicted_through = history.evicted_through.max(evicted_through);
        history
    }

    /// How many events it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `event`, evicting the oldest beyond the capacity.
    pub fn push(&mut self, event: Arc<TopicEvent>) {
        let id = &event.event.id;
        if let hashbrown::hash_table::Entry::Vacant(slot) =
            self.ids
                .entry(id.prehash(), |held| held.event.id == *id, prehash)
        {
            slot.insert(event.clone());
        }
        self.events.push_back(event);
        while self.events.len() > self.capacity {
            let Some(evicted) = self.events.pop_front() else {
                break;
            };
            self.evicted_through = evicted.position;
            if let Ok(held) = self.ids.find_entry(evicted.event.id.prehash(), |held| {
                Arc::ptr_eq(held, &evicted)
            }) {
                held.remove();
            }
        }
    }

    /// The oldest event with publisher id `id` still held. Once that one is evicted, an
    /// id held again later is not found: a resume after it is told it cannot be proven
    /// rather than skip what came between.
    pub fn find(&self, id: &EventId) -> Option<&Arc<TopicEvent>> {
        self.ids.find(id.prehash(), |held| held.event.id == *id)
    }

    /// The events after `position`, oldest first; found by bisection (positions only grow
    /// along a history), so a read costs what it returns.
    pub fn after(&self, position: u64) -> Vec<Arc<TopicEvent>> {
        let start = self.events.partition_point(|e| e.position <= position);
        self.events.range(start..).cloned().collect()
    }

    /// The events held, oldest first.
    pub fn events(&self) -> &VecDeque<Arc<TopicEvent>> {
        &self.events
    }

    /// The last `limit` events, oldest first.
    pub fn tail(&self, limit: usize) -> Vec<Arc<TopicEvent>> {
        let skip = self.events.len().saturating_sub(limit);
        self.events.iter().skip(skip).cloned().collect()
    }

    /// The position of the newest event evicted (0 if none): every event of the topic
    /// after it is held.
    pub fn evicted_through(&self) -> u64 {
        self.evicted_through
    }
}

/// What `ids` hashes a held event by.
fn prehash(held: &Arc<TopicEvent>) -> u64 {
    held.event.id.prehash()
}

#[cfg(test)]
mod tests {
    use tideway_protocol::{EventData, TopicName};

    use super::*;
    use crate::Event;

    fn event(id: &str, position: u64) -> Arc<TopicEvent> {
        Arc::new(TopicEvent::new(
            TopicName::parse("t").unwrap(),
            position,
            1,
            position,
            Arc::new(Event {
                id: EventId::parse(id.as_bytes()).unwrap(),
                event_type: None,
                data: EventData::parse("x".into()).unwrap(),
                published_at: 0,
            }),
        ))
    }

    #[test]
    fn evicts_the_oldest_and_forgets_their_ids() {
        let mut history = History::new(2);
        history.push(event("a", 1));
        history.push(event("b", 2));
        history.push(event("a", 3));
        assert_eq!(history.evicted_through(), 1);
        let id = |s: &str| EventId::parse(s.as_bytes()).unwrap();
        assert!(
            history.find(&id("a")).is_none(),
            "the oldest held was evicted: found no more, so nothing after it is skipped"
        );
        history.push(event("c", 4));
        assert!(history.find(&id("b")).is_none());
        assert_eq!(
            history
                .after(3)
                .iter()
                .map(|e| e.position)
                .collect::<Vec<_>>(),
            [4]
        );
        assert_eq!(history.after(0).len(), 2);
        assert!(history.after(4).is_empty());
        let mut twice = History::new(5);
        twice.push(event("x", 1));
        twice.push(event("x", 2));
        assert_eq!(
            twice.find(&id("x")).map(|e| e.position),
            Some(1),
            "an id held twice is found at its oldest"
        );
        assert_eq!(
            history
                .tail(10)
                .iter()
                .map(|e| e.position)
                .collect::<Vec<_>>(),
            [3, 4]
        );
        let mut none = History::new(0);
        none.push(event("x", 9));
        assert!(none.events().is_empty() && none.find(&id("x")).is_none());
        assert_eq!(none.evicted_through(), 9);
    }
}
