//! Events as the Worker holds them: JSON, checked again on the way back (a value that is
//! not a valid event is refused, never delivered).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tideway_core::{Event, TopicEvent};
use tideway_protocol::{EventData, EventId, EventType, TopicName};

/// An event as the Worker holds it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireEvent {
    id: String,
    r#type: Option<String>,
    data: String,
    published_at: u64,
}

/// A [`WireEvent`] to write, borrowed from the event (its data is not copied).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventRef<'a> {
    id: &'a str,
    r#type: Option<&'a str>,
    data: &'a str,
    published_at: u64,
}

impl<'a> EventRef<'a> {
    pub(crate) fn of(event: &'a Event) -> Self {
        Self {
            id: event.id.as_str(),
            r#type: event.event_type.as_ref().map(|t| t.as_str()),
            data: event.data.as_str(),
            published_at: event.published_at,
        }
    }
}

impl WireEvent {
    /// The event, if the Worker kept it whole (anything else is refused rather than sent
    /// on to subscribers).
    pub(crate) fn event(self) -> Option<Event> {
        Some(Event {
            id: EventId::parse(self.id.as_bytes()).ok()?,
            event_type: match self.r#type {
                None => None,
                Some(t) => Some(EventType::parse(t.as_bytes()).ok()?),
            },
            data: EventData::parse(Bytes::from(self.data)).ok()?,
            published_at: self.published_at,
        })
    }
}

/// One topic's copy of an event, as the Worker holds it.
#[derive(Debug, Deserialize)]
pub(crate) struct WireTopicEvent {
    pub(crate) topic: String,
    pub(crate) seq: u64,
    pub(crate) position: u64,
    pub(crate) event: WireEvent,
}

impl WireTopicEvent {
    pub(crate) fn into_topic_event(self, epoch: u64) -> Option<Arc<TopicEvent>> {
        Some(Arc::new(TopicEvent::new(
            TopicName::from_stored(&self.topic)?,
            self.seq,
            epoch,
            self.position,
            Arc::new(self.event.event()?),
        )))
    }
}
