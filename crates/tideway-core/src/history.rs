//! A topic's bounded history, as the stores that hold it in memory keep it: the events,
//! an index by publisher id (for idempotent publishes), and where it starts to be
//! complete (for resume). One type, so the in-memory and the Durable-Object stores cannot
//! keep it differently.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use tideway_protocol::EventId;

use crate::TopicEvent;

/// The last `capacity` events of one topic.
#[derive(Debug, Default, Clone)]
pub struct History {
    capacity: usize,
    events: VecDeque<Arc<TopicEvent>>,
    /// The newest event of each id still held.
    ids: HashMap<EventId, Arc<TopicEvent>>,
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

    /// Appends `event`, evicting the oldest beyond the capacity.
    pub fn push(&mut self, event: Arc<TopicEvent>) {
        self.ids.insert(event.event.id.clone(), event.clone());
        self.events.push_back(event);
        while self.events.len() > self.capacity {
            let Some(evicted) = self.events.pop_front() else {
                break;
            };
            self.evicted_through = evicted.position;
            if self
                .ids
                .get(&evicted.event.id)
                .is_some_and(|newest| Arc::ptr_eq(newest, &evicted))
            {
                self.ids.remove(&evicted.event.id);
            }
        }
    }

    /// The newest event with publisher id `id` still held.
    pub fn find(&self, id: &EventId) -> Option<&Arc<TopicEvent>> {
        self.ids.get(id)
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
        assert_eq!(
            history.find(&id("a")).map(|e| e.position),
            Some(3),
            "the reused id's newest stays"
        );
        history.push(event("c", 4));
        assert!(history.find(&id("b")).is_none());
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
