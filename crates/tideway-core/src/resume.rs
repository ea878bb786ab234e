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
    /// The epoch its positions count in: the read's, or under [`crate::Order::PerTopic`]
    /// the topic's own.
    pub epoch: u64,
    /// The last position the store had given out when the topic (last) came into being:
    /// publishes before it found the topic not live and were dropped, so its history
    /// cannot speak for them.
    pub created_after: u64,
    /// The position of the newest event the history evicted (0 if none): the history
    /// holds every event of the topic after it.
    pub evicted_through: u64,
    /// The last position given out in the order of `epoch` when the topic was read:
    /// the store's under [`crate::Order::Global`], the topic's own under
    /// [`crate::Order::PerTopic`]. A topic resumed without a replay goes on after it:
    /// what was published before the read is in its gap, and delivering a copy still on
    /// its way to the node could repeat an event the client had.
    pub head: u64,
    /// The positions at which the resume's id appears in this history, oldest first.
    pub matches: Vec<u64>,
    /// Under [`crate::Order::PerTopic`]: the other topics the publishes of those matches
    /// went to, so a resume knows whether the client may have had the id from another
    /// topic whose history no longer holds it. Empty for a store of one order.
    pub shared_with: Vec<TopicName>,
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
    /// Builds the read from [`History`]s, for stores of one order that hold them in
    /// memory: finds the id in every history's index, then takes only the events after
    /// its earliest match. `head` is the store's last position; each topic comes with
    /// the position it was created after.
    pub fn from_histories<'h>(
        epoch: u64,
        head: u64,
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
                epoch,
                created_after,
                evicted_through: history.evicted_through(),
                head,
                matches: found.into_iter().collect(),
                shared_with: Vec::new(),
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
    /// The store orders each topic on its own ([`crate::Order::PerTopic`]): the client's
    /// `Last-Event-ID` places it in the one topic of its stream whose history holds it,
    /// not in this one (which never held the id, or held it too, so the client may have
    /// had this topic's copy or not).
    CrossTopicCursor,
}

impl GapReason {
    /// The reason as the `tideway.gap` event names it.
    pub fn code(self) -> &'static str {
        match self {
            GapReason::UnknownLastEventId => "unknown_last_event_id",
            GapReason::HistoryEvicted => "history_evicted",
            GapReason::TopicExpired => "topic_expired",
            GapReason::StoreRestarted => "store_restarted",
            GapReason::CrossTopicCursor => "cross_topic_cursor",
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
    /// Under [`crate::Order::Global`], one floor for every topic.
    pub(crate) floor: Option<Floor>,
    /// Under [`crate::Order::PerTopic`], a floor per topic that has one.
    pub(crate) floors: Vec<(TopicName, Floor)>,
}

/// Gaps of `last_event_id`, one per reason that has topics, in the order given.
fn gaps_of(last_event_id: &EventId, by_reason: Vec<(GapReason, Vec<TopicName>)>) -> Vec<Gap> {
    by_reason
        .into_iter()
        .filter(|(_, topics)| !topics.is_empty())
        .map(|(reason, topics)| Gap {
            reason,
            topics,
            last_event_id: Some(last_event_id.clone()),
        })
        .collect()
}

/// The gap of a resume whose id no topic holds: every topic is named, nothing replayed,
/// and each goes on after its [`TopicHistory::head`].
fn unknown(topics: &TopicList, last_event_id: &EventId, read: &HistoryRead) -> Plan {
    Plan {
        gaps: gaps_of(
            last_event_id,
            vec![(GapReason::UnknownLastEventId, topics.names().to_vec())],
        ),
        floor: read
            .topics
            .iter()
            .map(|t| t.head)
            .max()
            .map(|position| Floor {
                epoch: read.epoch,
                position,
            }),
        floors: read.topics.iter().map(head_floor).collect(),
        replay: Vec::new(),
    }
}

/// A topic's floor at its head: it goes on with what is published after the read.
fn head_floor(history: &TopicHistory) -> (TopicName, Floor) {
    (
        history.topic.clone(),
        Floor {
            epoch: history.epoch,
            position: history.head,
        },
    )
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
        return unknown(topics, last_event_id, read);
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
    let gaps = gaps_of(
        last_event_id,
        vec![
            (GapReason::HistoryEvicted, evicted),
            (GapReason::TopicExpired, expired),
        ],
    );
    let position = replay.last().map_or(cursor, |e| e.position);
    Plan {
        gaps,
        replay,
        floor: Some(Floor {
            epoch: read.epoch,
            position,
        }),
        floors: Vec::new(),
    }
}

/// Decides a resume under [`crate::Order::PerTopic`], where positions compare only
/// within a topic and the copies of one publish reach a node independently.
///
/// The id places the client in a topic when that topic is the only one of the stream
/// the id was published to: the client's last event came from there, so every earlier
/// event of that topic reached it. That topic is resumed exactly as under one order
/// (from the id's earliest appearance, checked by [`TopicHistory::gap_after`]). Every
/// other topic is named in a [`GapReason::CrossTopicCursor`] gap and replays nothing:
/// there is no place in it to start from that could not repeat or skip an event (the
/// client may have had events of it after the id, and when several topics hold the id,
/// the client may or may not have had each one's copy). Such a topic goes on after its
/// [`TopicHistory::head`]: what it published before the read is in the gap, even when
/// a copy of it is still on its way to this node.
pub(crate) fn plan_per_topic(
    topics: &TopicList,
    last_event_id: &EventId,
    read: &HistoryRead,
) -> Plan {
    let held = |topic: &TopicName| {
        read.topics
            .iter()
            .find(|t| t.topic == *topic)
            .filter(|t| !t.matches.is_empty())
    };
    // The topics of the stream the id's publishes went to, whether or not their
    // histories still hold it.
    let reached = topics
        .iter()
        .filter(|topic| {
            held(topic).is_some()
                || read
                    .topics
                    .iter()
                    .filter(|t| !t.matches.is_empty())
                    .any(|t| t.shared_with.contains(topic))
        })
        .count();
    if topics.iter().all(|t| held(t).is_none()) {
        return unknown(topics, last_event_id, read);
    }
    let mut plan = Plan::default();
    let (mut evicted, mut expired, mut elsewhere) = (Vec::new(), Vec::new(), Vec::new());
    for topic in topics {
        let Some(history) = held(topic).filter(|_| reached == 1) else {
            match read.topics.iter().find(|t| t.topic == *topic) {
                Some(history) => {
                    plan.floors.push(head_floor(history));
                    elsewhere.push(topic.clone());
                }
                None => expired.push(topic.clone()),
            }
            continue;
        };
        let cursor = history.matches.iter().min().copied().unwrap_or(0);
        match history.gap_after(cursor) {
            Some(GapReason::HistoryEvicted) => evicted.push(topic.clone()),
            Some(_) => expired.push(topic.clone()),
            None => {}
        }
        let after: Vec<_> = history
            .events
            .iter()
            .filter(|e| e.position > cursor)
            .cloned()
            .collect();
        let position = after.last().map_or(cursor, |e| e.position);
        plan.floors.push((
            topic.clone(),
            Floor {
                epoch: history.epoch,
                position,
            },
        ));
        plan.replay.extend(after);
    }
    plan.gaps = gaps_of(
        last_event_id,
        vec![
            (GapReason::HistoryEvicted, evicted),
            (GapReason::TopicExpired, expired),
            (GapReason::CrossTopicCursor, elsewhere),
        ],
    );
    plan
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
                publishes.len() as u64,
                &id,
                names.iter().map(|&t| (TopicName::parse(TOPICS[t]).unwrap(), created[t], &histories[t])),
            );
            let plan = plan(&list, &id, &read);
            let held = names.iter().any(|&t| histories[t].events().iter().any(|e| e.position == cursor));
            if !held {
                prop_assert_eq!(plan.gaps.len(), 1);
                prop_assert_eq!(plan.gaps[0].reason, GapReason::UnknownLastEventId);
                prop_assert!(plan.replay.is_empty());
                // What was published before the read is in the gap, not queued again.
                prop_assert_eq!(plan.floor.map(|f| (f.epoch, f.position)), Some((7, publishes.len() as u64)));
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

    /// Under per-topic order: publishes as topic masks, each topic numbering its own
    /// events; history bounds per topic; the client's topics (a mask); how far it got in
    /// each topic (any prefix: copies reach it topic by topic), and which of its topics
    /// delivered its last event.
    fn per_topic_scenario() -> impl Strategy<
        Value = (
            Vec<u8>,
            [usize; 3],
            u8,
            [prop::sample::Index; 3],
            prop::sample::Index,
        ),
    > {
        (
            proptest::collection::vec(1u8..8, 1..40),
            [0usize..12, 0usize..12, 0usize..12],
            1u8..8,
            any::<[prop::sample::Index; 3]>(),
            any::<prop::sample::Index>(),
        )
    }

    proptest! {
        /// Under per-topic order, whatever the client got of each topic and whichever
        /// topic delivered its last event: every topic of the stream either replays
        /// exactly its events after what the client had, or is named in a gap and
        /// replays nothing it may already have — never silently short, never twice.
        #[test]
        fn a_per_topic_resume_is_exact_or_names_the_topic(
            (publishes, bounds, mine, progress, last) in per_topic_scenario()
        ) {
            let mut histories: Vec<History> = bounds.iter().map(|&b| History::new(b)).collect();
            // Per topic: (publish index, seq) of each event.
            let mut all: Vec<Vec<(usize, u64)>> = vec![Vec::new(); 3];
            let mut topics_of: Vec<Vec<TopicName>> = Vec::new();
            for (index, mask) in publishes.iter().enumerate() {
                let mut went = Vec::new();
                for (t, name) in TOPICS.iter().enumerate() {
                    if mask & (1 << t) == 0 {
                        continue;
                    }
                    let seq = all[t].len() as u64 + 1;
                    all[t].push((index, seq));
                    let id = EventId::parse(format!("e{index}").as_bytes()).unwrap();
                    histories[t].push(Arc::new(TopicEvent::new(
                        TopicName::parse(name).unwrap(),
                        seq,
                        10 + t as u64,
                        seq,
                        Arc::new(Event {
                            id,
                            event_type: None,
                            data: EventData::parse("x".into()).unwrap(),
                            published_at: 0,
                        }),
                    )));
                    went.push(TopicName::parse(name).unwrap());
                }
                topics_of.push(went);
            }
            let names: Vec<usize> = (0..3).filter(|t| mine & (1 << t) != 0).collect();
            // How many events of each topic the client had.
            let had: Vec<usize> = (0..3).map(|t| progress[t].index(all[t].len() + 1)).collect();
            let candidates: Vec<usize> = names.iter().copied().filter(|&t| had[t] > 0).collect();
            prop_assume!(!candidates.is_empty());
            let from = candidates[last.index(candidates.len())];
            let (index, _) = all[from][had[from] - 1];
            let id = EventId::parse(format!("e{index}").as_bytes()).unwrap();
            let list = TopicList::parse(
                names.iter().map(|&t| TOPICS[t]).collect::<Vec<_>>().join(",").as_bytes(),
                8,
            ).unwrap();
            let read = HistoryRead {
                epoch: 0,
                topics: names.iter().map(|&t| {
                    let name = TopicName::parse(TOPICS[t]).unwrap();
                    let found = histories[t].find(&id).map(|e| e.position);
                    TopicHistory {
                        topic: name.clone(),
                        epoch: 10 + t as u64,
                        created_after: 0,
                        evicted_through: histories[t].evicted_through(),
                        head: all[t].len() as u64,
                        matches: found.into_iter().collect(),
                        shared_with: if found.is_some() {
                            topics_of[index].iter().filter(|n| **n != name).cloned().collect()
                        } else {
                            Vec::new()
                        },
                        events: found.map_or_else(Vec::new, |p| histories[t].after(p)),
                    }
                }).collect(),
            };
            let plan = plan_per_topic(&list, &id, &read);
            for &t in &names {
                let name = TopicName::parse(TOPICS[t]).unwrap();
                // The worst case: every event of the topic is also still on its way to
                // the node, so what the floor does not cover is delivered after the
                // replay.
                let floor = plan.floors.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
                let delivered: Vec<u64> = plan
                    .replay
                    .iter()
                    .filter(|e| e.topic == name)
                    .map(|e| e.seq)
                    .chain(
                        all[t]
                            .iter()
                            .map(|&(_, seq)| seq)
                            .filter(|&seq| floor.is_none_or(|f| f.epoch != 10 + t as u64 || seq > f.position)),
                    )
                    .collect();
                let named = plan.gaps.iter().any(|g| g.topics.contains(&name));
                let after: Vec<u64> = all[t][had[t]..].iter().map(|&(_, seq)| seq).collect();
                if named {
                    prop_assert!(after.ends_with(&delivered), "a gap topic delivers nothing the client had");
                } else {
                    prop_assert_eq!(&delivered, &after, "topic {} replays exactly", TOPICS[t]);
                }
            }
            let reached = names.iter().filter(|&&t| publishes[index] & (1 << t) != 0).count();
            if reached == 1 && histories[from].find(&id).is_some() && histories[from].evicted_through() < all[from][had[from] - 1].1 {
                let name = TopicName::parse(TOPICS[from]).unwrap();
                prop_assert!(
                    !plan.gaps.iter().any(|g| g.topics.contains(&name)),
                    "the topic that delivered the id alone resumes without a gap"
                );
            }
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
            5,
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
