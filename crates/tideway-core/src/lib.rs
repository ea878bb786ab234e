//! Tideway's fan-out engine: topics, connections, events, and the store they live in.
//!
//! [`Gateway`] is what the transport talks to. It keeps this node's subscribers in a
//! [`Hub`] (bounded queues, one per connection) and the shared state — which topics are
//! live, which connections exist, each topic's recent events — in a [`Store`], the trait
//! every state adapter implements. The store is shaped after Durable Objects: its state is
//! a set of single-writer objects addressed by name (one per topic, plus the directory of
//! nodes and connections), and every method is one message to one object.
//!
//! Core knows nothing of hyper: it takes validated values from `tideway-protocol` and hands
//! out events whose SSE bytes are built once and shared by every subscriber.
#![forbid(unsafe_code)]

mod continuity;
mod event;
mod gateway;
mod history;
mod hub;
mod objects;
mod queue;
mod record;
mod resume;
mod stats;
mod store;

pub use continuity::{Continuity, Verdict};
pub use event::{Encoding, Event, TopicEvent};
pub use gateway::{
    CoreConfig, CoreError, Gateway, LimitScope, Next, Published, Route, Subscribe, Subscription,
};
pub use history::History;
pub use hub::{EndReason, Grant, Inbox, Interruption, Revocation};
pub use objects::{Directory, TopicMeta, TopicObject};
pub use queue::Wakes;
pub use record::{
    ConnectionId, ConnectionRecord, Listed, NodeRecord, Page, Paged, TopicRecord, Transport,
    unix_millis,
};
pub use resume::{Gap, GapReason, HistoryRead, TopicHistory, new_epoch};
pub use stats::{Histogram, LATENCY_BUCKETS_US, Stats};
pub use store::{
    Drift, Order, Store, StoreError, append_each, connection_digest, spawn_heartbeat, step_failed,
};
