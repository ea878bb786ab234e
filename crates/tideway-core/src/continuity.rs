//! Continuity of a node's channel: a store that sends each node its messages numbered
//! (Redis, the Durable-Object Worker) checks every message's place here, so a lost,
//! repeated or restarted message is told the same way whichever store sent it.

/// Where the messages on this node's channel have got to.
#[derive(Debug, Default)]
pub struct Continuity {
    /// The epoch and the number of the last message, once one came.
    last: Option<(String, u64)>,
    /// The position up to which this node received everything routed to it: the last
    /// event's, or the position a heartbeat's marker carried.
    position: u64,
}

/// Where the next message on the channel stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It follows the last one.
    InOrder,
    /// It is of another epoch: the store restarted or failed over and lost what it held.
    Restarted,
    /// Messages between the last one and it went missing.
    Hole {
        /// The events they carried are those after this position (and before the
        /// message's own).
        after: u64,
    },
    /// Its number goes back: the store went back to an older state of the same epoch (a
    /// failover that lost writes), so its history cannot be trusted to fill anything.
    WentBack,
}

impl Continuity {
    /// Checks the next message's place; either way it becomes the last one.
    pub fn next(&mut self, epoch: &str, number: u64, position: u64) -> Verdict {
        let verdict = match &self.last {
            None => Verdict::InOrder,
            Some((last_epoch, _)) if last_epoch != epoch => Verdict::Restarted,
            Some((_, last)) if number == last + 1 => Verdict::InOrder,
            Some((_, last)) if number > last + 1 => Verdict::Hole {
                after: self.position,
            },
            Some(_) => Verdict::WentBack,
        };
        self.last = Some((epoch.to_owned(), number));
        self.position = match verdict {
            Verdict::InOrder | Verdict::Hole { .. } => self.position.max(position),
            Verdict::Restarted | Verdict::WentBack => position,
        };
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_reports_restarts_holes_and_going_back() {
        let mut continuity = Continuity::default();
        assert_eq!(
            continuity.next("e1", 5, 40),
            Verdict::InOrder,
            "the first message sets the count"
        );
        assert_eq!(continuity.next("e1", 6, 41), Verdict::InOrder);
        assert_eq!(
            continuity.next("e1", 8, 47),
            Verdict::Hole { after: 41 },
            "7 went missing: what it carried came after position 41"
        );
        assert_eq!(
            continuity.next("e1", 9, 0),
            Verdict::InOrder,
            "a marker of an older node carries no position"
        );
        assert_eq!(
            continuity.next("e1", 11, 50),
            Verdict::Hole { after: 47 },
            "the watermark did not go back with that marker"
        );
        assert_eq!(continuity.next("e1", 3, 20), Verdict::WentBack);
        assert_eq!(
            continuity.next("e2", 1, 2),
            Verdict::Restarted,
            "a new epoch"
        );
        assert_eq!(continuity.next("e2", 2, 3), Verdict::InOrder);
        assert_eq!(
            continuity.next("e2", 4, 9),
            Verdict::Hole { after: 3 },
            "positions count again from the new epoch"
        );
    }
}
