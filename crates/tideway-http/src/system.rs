//! The gateway's own messages to subscribers: `tideway.<what>` events with JSON data.

use tideway_core::{EndReason, Revocation};
use tideway_protocol::EventId;

/// One message of the gateway's own.
pub(crate) enum System<'a> {
    /// A resume whose `Last-Event-ID` no history holds.
    Gap(&'a EventId),
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
        }
    }

    /// The JSON data: always `reason` and `message`, and what else the reason needs.
    pub(crate) fn data(&self) -> String {
        let value = match self {
            System::Gap(id) => serde_json::json!({
                "reason": "unknown_last_event_id",
                "lastEventId": id,
                "message": "no history of your topics holds this id (never published to them, or expired); events since then may be missing, live events follow",
            }),
            System::End(EndReason::SlowConsumer) => serde_json::json!({
                "reason": "slow_consumer",
                "message": "this connection fell too far behind and was closed; reconnect with Last-Event-ID to resume",
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
