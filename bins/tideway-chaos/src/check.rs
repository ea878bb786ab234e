//! The checker: what each subscriber received against what publishers were told.

use std::collections::{HashMap, HashSet};

/// One thing a subscriber received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// An event of `topic` with publisher id `id`.
    Event { topic: String, id: String },
    /// A `tideway.gap` naming `topics`.
    Gap { reason: String, topics: Vec<String> },
    /// Another `tideway.*` message (`event`), which ends the stream; the client resumes.
    End { event: String },
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Event { topic, id } => write!(f, "{topic}:{id}"),
            Self::Gap { reason, topics } => write!(f, "gap({reason}, {})", topics.join(",")),
            Self::End { event } => write!(f, "{event}"),
        }
    }
}

/// What the checker found for one subscriber.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Events received.
    pub(crate) events: u64,
    /// Gaps received.
    pub(crate) gaps: u64,
    /// Events skipped with no gap naming their topic, or a topic's newest event missing.
    pub(crate) lost: u64,
    /// Events received twice on one topic.
    pub(crate) duplicates: u64,
    /// Events received after a later one of the same topic.
    pub(crate) reorders: u64,
    /// Where each loss, duplicate or reorder was found (the first few), for the report.
    pub(crate) findings: Vec<String>,
}

/// How many findings one verdict keeps.
const FINDINGS: usize = 8;

impl Verdict {
    /// Notes `what`, found at entry `at` of `log`, with the entries just before it.
    fn found(&mut self, log: &[Entry], at: usize, what: String) {
        if self.findings.len() < FINDINGS {
            let before: Vec<String> = log[at.saturating_sub(4)..at.min(log.len())]
                .iter()
                .map(Entry::to_string)
                .collect();
            self.findings.push(format!(
                "entry {at}: {what}; before it: {}",
                before.join(" ")
            ));
        }
    }
}

/// Checks one subscriber's record on its `topics`.
///
/// `accepted` maps (topic, id) to the sequence number a `202` reported; an event whose
/// publish was never acknowledged (its answer timed out, yet the store appended it) is
/// counted as the next number, which in-order delivery makes it. `newest` maps a topic to
/// the id of its newest event at the end: the subscriber must have received it. Every
/// topic's numbering starts at 1 (scenarios use fresh topics) and starts again anywhere
/// after a gap naming the topic (a store that restarted numbers from 1 again).
pub(crate) fn check(
    log: &[Entry],
    topics: &[String],
    accepted: &HashMap<(String, String), u64>,
    newest: &HashMap<String, String>,
) -> Verdict {
    let mut verdict = Verdict {
        events: log
            .iter()
            .filter(|e| matches!(e, Entry::Event { .. }))
            .count() as u64,
        gaps: log
            .iter()
            .filter(|e| matches!(e, Entry::Gap { .. }))
            .count() as u64,
        ..Verdict::default()
    };
    for topic in topics {
        let mut expected = Some(1u64);
        let mut seen = HashSet::new();
        let mut last = None;
        for (at, entry) in log.iter().enumerate() {
            match entry {
                Entry::Gap { topics, .. } if topics.contains(topic) => expected = None,
                Entry::Event { topic: t, id } if t == topic => {
                    if !seen.insert(id.as_str()) {
                        verdict.duplicates += 1;
                        verdict.found(log, at, format!("{topic} event {id} again"));
                        continue;
                    }
                    last = Some(id.as_str());
                    let Some(&seq) = accepted.get(&(topic.clone(), id.clone())) else {
                        expected = expected.map(|e| e + 1);
                        continue;
                    };
                    match expected {
                        None => expected = Some(seq + 1),
                        Some(e) if seq == e => expected = Some(e + 1),
                        Some(e) if seq > e => {
                            verdict.lost += seq - e;
                            verdict.found(
                                log,
                                at,
                                format!("{topic} {seq} ({id}) where {e} was due"),
                            );
                            expected = Some(seq + 1);
                        }
                        Some(e) => {
                            verdict.reorders += 1;
                            verdict.found(log, at, format!("{topic} {seq} ({id}) after {e}"));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(newest) = newest.get(topic)
            && last != Some(newest.as_str())
            && !seen.contains(newest.as_str())
        {
            verdict.lost += 1;
            verdict.found(
                log,
                log.len(),
                format!("{topic} never reached its newest, {newest}"),
            );
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topic: &str, id: &str) -> Entry {
        Entry::Event {
            topic: topic.into(),
            id: id.into(),
        }
    }

    fn accepted(list: &[(&str, &str, u64)]) -> HashMap<(String, String), u64> {
        list.iter()
            .map(|(t, id, seq)| (((*t).to_owned(), (*id).to_owned()), *seq))
            .collect()
    }

    #[test]
    fn counts_what_is_missing_twice_or_late_and_excuses_what_a_gap_names() {
        let topics = vec!["a".to_owned()];
        let acks = accepted(&[("a", "1", 1), ("a", "2", 2), ("a", "3", 3), ("a", "4", 4)]);
        let newest: HashMap<String, String> = [("a".to_owned(), "4".to_owned())].into();
        let clean = [
            event("a", "1"),
            event("a", "2"),
            event("a", "3"),
            event("a", "4"),
        ];
        assert_eq!(check(&clean, &topics, &acks, &newest).lost, 0);
        let skipped = [event("a", "1"), event("a", "3"), event("a", "4")];
        assert_eq!(check(&skipped, &topics, &acks, &newest).lost, 1);
        let told = [
            event("a", "1"),
            Entry::Gap {
                reason: "store_restarted".into(),
                topics: topics.clone(),
            },
            event("a", "3"),
            event("a", "4"),
        ];
        assert_eq!(check(&told, &topics, &acks, &newest).lost, 0);
        let twice = [
            event("a", "1"),
            event("a", "2"),
            event("a", "2"),
            event("a", "3"),
            event("a", "4"),
        ];
        assert_eq!(check(&twice, &topics, &acks, &newest).duplicates, 1);
        let late = [
            event("a", "1"),
            event("a", "3"),
            event("a", "2"),
            event("a", "4"),
        ];
        let verdict = check(&late, &topics, &acks, &newest);
        assert_eq!((verdict.reorders, verdict.lost), (1, 1));
        let short = [event("a", "1"), event("a", "2"), event("a", "3")];
        assert_eq!(
            check(&short, &topics, &acks, &newest).lost,
            1,
            "the newest is missing"
        );
        let unacknowledged = [
            event("a", "1"),
            event("a", "x"),
            event("a", "3"),
            event("a", "4"),
        ];
        let acks = accepted(&[("a", "1", 1), ("a", "3", 3), ("a", "4", 4)]);
        assert_eq!(check(&unacknowledged, &topics, &acks, &newest).lost, 0);
    }
}
