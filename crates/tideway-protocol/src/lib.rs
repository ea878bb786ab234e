//! Tideway's wire rules, with no IO: bytes and `&str` in, values or errors out.
//!
//! Everything a peer sends is validated here once, at the edge, into types that can only
//! hold legal values ([`TopicName`], [`TopicList`], [`EventId`], [`EventType`]), so the
//! layers above take them without checking again. [`sse`] turns an event into the bytes of
//! one Server-Sent Events frame and, for clients and tests, parses such bytes back.
#![forbid(unsafe_code)]

mod event;
mod hashed;
mod query;
pub mod sse;
mod topic;

pub use event::{
    EventData, EventDataError, EventId, EventIdError, EventType, EventTypeError, MAX_EVENT_ID_LEN,
};
pub use hashed::{Prehashed, PrehashedMap};
pub use query::{query_value, query_values};
pub use topic::{
    DEFAULT_MAX_TOPICS, MAX_TOPIC_LEN, TENANT_SEPARATOR, Tenant, TenantError, TopicError,
    TopicList, TopicName, TopicNameError,
};

/// Prefix of the event types the gateway itself sends (resume gaps, slow-consumer cuts,
/// drains). Publishers may not use it, so a client can always tell the two apart.
pub const SYSTEM_EVENT_PREFIX: &str = "tideway.";
