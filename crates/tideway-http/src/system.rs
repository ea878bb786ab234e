//! The gateway's own messages to subscribers: `tideway.<what>` events with JSON data.

use tideway_core::{EndReason, Gap, GapReason, Revocation};

/// One message of the gateway's own.
pub(crate) enum System<'a> {
    /// Events of some topics may be missing (see [`GapReason`]).
    Gap(&'a Gap),
    /// The end of a subscription.
    End(EndReason),
}

impl System<'_> {
    /// The event name, `tideway.<what>`.
    pub(crate) fn event(&self) -> &'static str {
        match self {
            System::Gap(_) => "tideway.gap",
            System::End(EndReason::SlowConsumer) => "tideway.slow_consumer",
            System::End(EndReason::Draining) => "tideway.drain",
            System::End(EndReason::Revoked(_)) => "tideway.revoked",
            System::End(EndReason::Interrupted) => "tideway.resync",
        }
    }

    /// The JSON data: always `reason` and `message`, and what else the reason needs.
    pub(crate) fn data(&self) -> String {
        let value = match self {
            System::Gap(gap) => {
                let message = match gap.reason {
                    GapReason::UnknownLastEventId => {
                        "no history of your topics holds this id (never published to them, evicted, or from before the store restarted); events since then may be missing, live events follow"
                    }
                    GapReason::HistoryEvicted => {
                        "these topics' histories no longer hold every event after your last one (raise --history); what they hold and live events follow"
                    }
                    GapReason::TopicExpired => {
                        "these topics had no subscriber for a while after your last event (longer than --topic-grace), so events published then were dropped; what their histories hold and live events follow"
                    }
                    GapReason::StoreRestarted => {
                        "the state store restarted or failed over and lost what it held; events published around then may be missing, live events follow"
                    }
                    GapReason::CrossTopicCursor => {
                        "this gateway orders each topic on its own (Redis Cluster), and your last event id places you only in the one topic that delivered it, not in these; events of these topics since your last connection may be missing, live events follow"
                    }
                };
                let topics: Vec<&str> = gap.topics.iter().map(|t| t.public_name()).collect();
                serde_json::json!({
                    "reason": gap.reason.code(),
                    "topics": topics,
                    "lastEventId": gap.last_event_id,
                    "message": message,
                })
            }
            System::End(EndReason::SlowConsumer) => serde_json::json!({
                "reason": "slow_consumer",
                "message": "this connection fell too far behind and was closed; reconnect with Last-Event-ID to resume",
            }),
            System::End(EndReason::Interrupted) => serde_json::json!({
                "reason": "delivery_interrupted",
                "message": "events on their way to this node may have been lost; reconnect with Last-Event-ID: history fills the hole, or a tideway.gap says what it cannot",
            }),
            System::End(EndReason::Draining) => serde_json::json!({
                "reason": "drain",
                "message": "this node is shutting down; reconnect with Last-Event-ID to continue on another node",
            }),
            System::End(EndReason::Revoked(why)) => {
                let (reason, message) = match why {
                    Revocation::TokenExpired => (
                        "token_expired",
                        "the subscriber token expired; get a new one and reconnect with Last-Event-ID",
                    ),
                    Revocation::TokenRevoked => {
                        ("token_revoked", "the subscriber token was revoked")
                    }
                    Revocation::KeyRevoked => (
                        "key_revoked",
                        "the key that signed the subscriber token was revoked",
                    ),
                };
                serde_json::json!({ "reason": reason, "message": message })
            }
        };
        value.to_string()
    }

    /// The JSON envelope of a WebSocket text frame, shaped like an event's.
    pub(crate) fn envelope(&self) -> String {
        serde_json::json!({
            "topic": null,
            "id": null,
            "event": self.event(),
            "data": self.data(),
        })
        .to_string()
    }
}
