//! Resume: what a store reads for a client coming back with `Last-Event-ID`, and the one
//! place that decides, topic by topic, whether that read proves the client misses nothing.
//!
//! Every store answers [`crate::Store::read_since`] with a [`HistoryRead`]: one consistent
//! read of all the topics of the resume (no publish lands between two of them), bounded by
//! the cursor. Stores only report what they hold; [`plan`] turns it into the gaps to tell,
//! the events to replay, and the floor below which queued events were already sent. No
//! store decides what counts as a gap, so no store can decide it differently.

use std::{
    hash::{BuildHasher, Hasher},
    sync::Arc,
};

use tideway_protocol::{EventId, TopicList, TopicName};

use crate::{History, TopicEvent};

/// What one topic's history says about a resume.
#[derive(Debug, Clone)]
pub struct TopicHistory {
    /// The topic.
    pub topic: TopicName,
    /// The last position the store had given out when the topic (last) came into being:
    /// publishes before it found the topic not live and were dropped, so its history
    /// cannot speak for them.
    pub created_after: u64,
    /// The position of the newest event the history evicted (0 if none): the history
    /// holds every event of the topic after it.
    pub evicted_through: u64,
    /// The positions at which the resume's id appears in this history, oldest first.
    pub matches: Vec<u64>,
    /// Its events after the earliest match of the id in any topic of the read, oldest
    /// first; empty when no topic holds the id.
    pub events: Vec<Arc<TopicEvent>>,
}

impl TopicHistory {
    /// Why this history cannot prove it holds every event of its topic after `position`,
    /// or `None` when it can: it was live (within its grace) from then on and evicted
    /// nothing after it. The one rule for a resume's cursor and a node's repair alike.
    pub fn gap_after(&self, position: u64) -> Option<GapReason> {
        if self.evicted_through > position {
            Some(GapReason::HistoryEvicted)
        } else if self.created_after > position {
            Some(GapReason::TopicExpired)
        } else {
            None
        }
    }
}

/// One consistent read of the histories of a resume's topics.
#[derive(Debug, Clone)]
pub struct HistoryRead {
    /// The store's epoch at the time of the read.
    pub epoch: u64,
    /// One entry per topic of the resume that is live, in the order asked.
    pub topics: Vec<TopicHistory>,
}

impl HistoryRead {
    /// Builds the read from [`History`]s, for stores that hold them in memory: finds the
    /// id in every history's index, then takes only the events after its earliest match.
    /// Each topic comes with the position it was created after.
    pub fn from_histories<'h>(
        epoch: u64,
        last_event_id: &EventId,
        histories: impl IntoIterator<Item = (TopicName, u64, &'h History)>,
    ) -> Self {
        let histories: Vec<_> = histories.into_iter().collect();
        let matches: Vec<Option<u64>> = histories
            .iter()
            .map(|(_, _, history)| history.find(last_event_id).map(|e| e.position))
            .collect();
        let earliest = matches.iter().flatten().min().copied();
        let topics = histories
            .into_iter()
            .zip(matches)
            .map(|((topic, created_after, history), found)| TopicHistory {
                topic,
                created_after,
                evicted_through: history.evicted_through(),
                matches: found.into_iter().collect(),
                events: earliest.map_or_else(Vec::new, |cursor| history.after(cursor)),
            })
            .collect();
        Self { epoch, topics }
    }
}

/// Why a subscriber may have missed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// No history of the subscriber's topics holds its `Last-Event-ID` (never published
    /// to them, evicted, or from before the store restarted).
    UnknownLastEventId,
    /// The topic's history evicted events after the subscriber's last one.
    HistoryEvicted,
    /// The topic had no subscriber anywhere for a while after the subscriber's last event
    /// (longer than `--topic-grace`), so publishes to it were dropped.
    TopicExpired,
    /// The store restarted or failed over and lost what it held: events published around
    /// then may not have been delivered.
    StoreRestarted,
}

impl GapReason {
    /// The reason as the `tideway.gap` event names it.
    pub fn code(self) -> &'static str {
        match self {
            GapReason::UnknownLastEventId => "unknown_last_event_id",
            GapReason::HistoryEvicted => "history_evicted",
            GapReason::TopicExpired => "topic_expired",
            GapReason::StoreRestarted => "store_restarted",
        }
    }
}

/// A subscriber is told it may have missed events of `topics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Why.
    pub reason: GapReason,
    /// The topics it may have missed events of (public names: a tenant's namespace is
    /// left out by the transport).
    pub topics: Vec<TopicName>,
    /// The id the client resumed after, for gaps found on resume.
    pub last_event_id: Option<EventId>,
}

/// Below this point of the store's order, a subscription's queued events were already
/// sent (replayed, or before the client's cursor). Only compared within one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Floor {
    pub(crate) epoch: u64,
    pub(crate) position: u64,
}

impl Floor {
    /// Whether a queued event was already sent: same epoch, at or below the floor.
    pub(crate) fn covers(&self, event: &TopicEvent) -> bool {
        event.epoch == self.epoch && event.position <= self.position
    }
}

/// What a resume sends before the queue: gaps first, then the replay, in position order.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) gaps: Vec<Gap>,
    pub(crate) replay: Vec<Arc<TopicEvent>>,
    pub(crate) floor: Option<Floor>,
}

/// Decides a resume after `last_event_id` on `topics` from the store's read.
///
/// The cursor is the *earliest* position at which the id appears: with a reused id, a
/// client may repeat events but never skips one it did not receive. A topic proves
/// continuity when its history covers everything after the cursor: it was live (within
/// its grace) from the cursor on, and evicted nothing after it. Every other topic is
/// named in a gap; the replay still carries what its history holds.
pub(crate) fn plan(topics: &TopicList, last_event_id: &EventId, read: &HistoryRead) -> Plan {
    let cursor = read.topics.iter().flat_map(|t| &t.matches).min().copied();
    let Some(cursor) = cursor else {
        return Plan {
            gaps: vec![Gap {
                reason: GapReason::UnknownLastEventId,
                topics: topics.names().to_vec(),
                last_event_id: Some(last_event_id.clone()),
            }],
            replay: Vec::new(),
            floor: None,
        };
    };
    let mut evicted = Vec::new();
    let mut expired = Vec::new();
    let mut replay = Vec::new();
    for topic in topics {
        let Some(history) = read.topics.iter().find(|t| t.topic == *topic) else {
            expired.push(topic.clone());
            continue;
        };
        match history.gap_after(cursor) {
            Some(GapReason::HistoryEvicted) => evicted.push(topic.clone()),
            Some(_) => expired.push(topic.clone()),
            None => {}
        }
        replay.extend(
            history
                .events
                .iter()
                .filter(|e| e.position > cursor)
                .cloned(),
        );
    }
    // Stable: the copies of one publish keep the subscription's topic order.
    replay.sort_by_key(|e| e.position);
    let gaps = [
        (GapReason::HistoryEvicted, evicted),
        (GapReason::TopicExpired, expired),
    ]
    .into_iter()
    .filter(|(_, topics)| !topics.is_empty())
    .map(|(reason, topics)| Gap {
        reason,
        topics,
        last_event_id: Some(last_event_id.clone()),
    })
    .collect();
    let position = replay.last().map_or(cursor, |e| e.position);
    Plan {
        gaps,
        replay,
        floor: Some(Floor {
            epoch: read.epoch,
            position,
        }),
    }
}

/// A new random epoch, for a store's sequencer when it starts from nothing.
pub fn new_epoch() -> u64 {
    // RandomState is seeded from the operating system's randomness once per process and
    // varies per instance; mixing in the time keeps two epochs of one process apart too.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::unix_millis());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // 53 bits: an epoch survives a round trip through a JSON number or a Lua double.
    (hasher.finish() >> 11).max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tideway_protocol::EventData;

    use super::*;
    use crate::Event;

    const TOPICS: [&str; 3] = ["a", "b", "c"];

    fn topic_event(topic: &str, position: u64) -> Arc<TopicEvent> {
        Arc::new(TopicEvent::new(
            TopicName::parse(topic).unwrap(),
            position,
            7,
            position,
            Arc::new(Event {
                id: EventId::parse(format!("e{position}").as_bytes()).unwrap(),
                event_type: None,
                data: EventData::parse("x".into()).unwrap(),
                published_at: 0,
            }),
        ))
    }

    /// Publishes as topic masks (bit i: `TOPICS[i]`), a history bound per topic, the
    /// position each topic came into being after, the client's topics (a mask) and the
    /// position of its last event.
    fn scenario() -> impl Strategy<Value = (Vec<u8>, [usize; 3], [u64; 3], u8, usize)> {
        (
            proptest::collection::vec(1u8..8, 1..40),
            [0usize..12, 0usize..12, 0usize..12],
            [0u64..20, 0u64..20, 0u64..20],
            1u8..8,
            any::<prop::sample::Index>(),
        )
            .prop_map(|(publishes, bounds, created, mine, cursor)| {
                let cursor = cursor.index(publishes.len());
                (publishes, bounds, created, mine, cursor)
            })
    }

    proptest! {
        /// Whatever was published, evicted or created late: every topic of the client
        /// either replays exactly its events after the cursor, in order, or is named in
        /// a gap — never silently short — and nothing is replayed twice.
        #[test]
        fn a_resume_is_exact_or_names_the_topic((publishes, bounds, created, mine, cursor) in scenario()) {
            let mut histories: Vec<History> = bounds.iter().map(|&b| History::new(b)).collect();
            let mut all: Vec<Vec<u64>> = vec![Vec::new(); 3];
            for (index, mask) in publishes.iter().enumerate() {
                let position = index as u64 + 1;
                for (t, name) in TOPICS.iter().enumerate() {
                    // A topic created after a publish did not get it.
                    if mask & (1 << t) == 0 || position <= created[t] {
                        continue;
                    }
                    all[t].push(position);
                    histories[t].push(topic_event(name, position));
                }
            }
            let cursor = cursor as u64 + 1;
            let id = EventId::parse(format!("e{cursor}").as_bytes()).unwrap();
            let names: Vec<usize> = (0..3).filter(|t| mine & (1 << t) != 0).collect();
            let list = TopicList::parse(
                names.iter().map(|&t| TOPICS[t]).collect::<Vec<_>>().join(",").as_bytes(),
                8,
            ).unwrap();
            let read = HistoryRead::from_histories(
                7,
                &id,
                names.iter().map(|&t| (TopicName::parse(TOPICS[t]).unwrap(), created[t], &histories[t])),
            );
            let plan = plan(&list, &id, &read);
            let held = names.iter().any(|&t| histories[t].events().iter().any(|e| e.position == cursor));
            if !held {
                prop_assert_eq!(plan.gaps.len(), 1);
                prop_assert_eq!(plan.gaps[0].reason, GapReason::UnknownLastEventId);
                prop_assert!(plan.replay.is_empty());
                return Ok(());
            }
            let positions: Vec<u64> = plan.replay.iter().map(|e| e.position).collect();
            prop_assert!(positions.windows(2).all(|w| w[0] <= w[1]), "in position order");
            for &t in &names {
                let name = TopicName::parse(TOPICS[t]).unwrap();
                let expected: Vec<u64> = all[t].iter().copied().filter(|&p| p > cursor).collect();
                let replayed: Vec<u64> = plan.replay.iter().filter(|e| e.topic == name).map(|e| e.position).collect();
                let named = plan.gaps.iter().any(|g| g.topics.contains(&name));
                if named {
                    prop_assert!(expected.ends_with(&replayed), "a gap topic replays what history holds");
                } else {
                    prop_assert_eq!(&replayed, &expected, "topic {} replays exactly", TOPICS[t]);
                }
            }
            let floor = plan.floor.unwrap();
            prop_assert_eq!(floor.epoch, 7);
            prop_assert!(floor.position >= cursor && positions.iter().all(|&p| p <= floor.position));
        }
    }

    #[test]
    fn the_cursor_is_the_earliest_appearance_of_a_reused_id() {
        let mut history = History::new(10);
        for position in 1..=4 {
            history.push(topic_event("a", position));
        }
        // e2 appears at 2, and (reused) at 5 under another topic.
        let mut other = History::new(10);
        other.push(Arc::new(TopicEvent::new(
            TopicName::parse("b").unwrap(),
            1,
            7,
            5,
            history.events()[1].event.clone(),
        )));
        let id = EventId::parse(b"e2").unwrap();
        let read = HistoryRead::from_histories(
            7,
            &id,
            [
                (TopicName::parse("a").unwrap(), 0, &history),
                (TopicName::parse("b").unwrap(), 0, &other),
            ],
        );
        let plan = plan(&TopicList::parse(b"a,b", 8).unwrap(), &id, &read);
        let replayed: Vec<u64> = plan.replay.iter().map(|e| e.position).collect();
        assert_eq!(
            replayed,
            [3, 4, 5],
            "never skips past what the client may not have"
        );
        assert!(plan.gaps.is_empty());
    }
}
