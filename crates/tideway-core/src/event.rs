//! Events as published, and as delivered on one topic with their encodings built once.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tideway_protocol::{
    EventData, EventId, EventType, TopicName,
    sse::{Envelope, FrameBuilder},
};

/// An event as a publisher sent it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The publisher's id, sent as the SSE `id:`.
    pub id: EventId,
    /// The SSE event type, if any.
    pub event_type: Option<EventType>,
    /// The body.
    pub data: EventData,
    /// When the gateway accepted it, in milliseconds since the Unix epoch.
    pub published_at: u64,
}

/// How a subscriber wants its events written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// SSE with `id:`, `event:`, `topic:` and the body as `data:` lines.
    Sse,
    /// SSE whose `data:` is the JSON envelope `{"topic","id","event","data"}`.
    SseJson,
    /// The JSON envelope alone, the text of one WebSocket frame.
    Json,
}

/// One event on one topic, with its place in the topic's history.
///
/// Every subscriber of the topic gets a clone of the same `Arc<TopicEvent>`; each encoding
/// is built the first time a subscriber asks for it and then shared, so an event is framed
/// once per format, never once per subscriber.
#[derive(Debug)]
pub struct TopicEvent {
    /// The topic it was delivered on.
    pub topic: TopicName,
    /// Its sequence number in the topic, counting from 1, assigned by the store.
    pub seq: u64,
    /// The lifetime of the store that gave it its position (see [`crate::Store`]): a
    /// store that restarted empty or failed over starts a new epoch, and positions of
    /// two epochs are never compared.
    pub epoch: u64,
    /// Its place in the order the store delivers publishes, shared by every topic of one
    /// publish and increasing from one publish to the next within an epoch. Resume
    /// compares positions.
    pub position: u64,
    /// The event.
    pub event: Arc<Event>,
    sse: OnceLock<Bytes>,
    sse_json: OnceLock<Bytes>,
    json: OnceLock<Bytes>,
}

impl TopicEvent {
    /// The event as the `seq`th of `topic`, delivered at `position` of store epoch `epoch`.
    pub fn new(topic: TopicName, seq: u64, epoch: u64, position: u64, event: Arc<Event>) -> Self {
        Self {
            topic,
            seq,
            epoch,
            position,
            event,
            sse: OnceLock::new(),
            sse_json: OnceLock::new(),
            json: OnceLock::new(),
        }
    }

    /// The event's bytes in `encoding`, built on first use.
    pub fn encoded(&self, encoding: Encoding) -> &Bytes {
        match encoding {
            Encoding::Sse => self
                .sse
                .get_or_init(|| self.frame(self.event.data.as_str())),
            Encoding::SseJson => self.sse_json.get_or_init(|| self.frame(&self.envelope())),
            Encoding::Json => self.json.get_or_init(|| Bytes::from(self.envelope())),
        }
    }

    fn envelope(&self) -> String {
        Envelope {
            topic: self.topic.public_name(),
            id: self.event.id.as_str(),
            event: self.event.event_type.as_ref().map(EventType::as_str),
            data: self.event.data.as_str(),
        }
        .to_json()
    }

    fn frame(&self, data: &str) -> Bytes {
        let event = &self.event;
        let topic = self.topic.public_name();
        let mut frame = FrameBuilder::with_capacity(data.len() + 64 + topic.len());
        // Ids, types and topic names are validated types that hold no CR, LF or NUL, so
        // the builder's checks pass; were they ever to fail the field is left out.
        let _ = frame.id(event.id.as_str());
        if let Some(event_type) = &event.event_type {
            let _ = frame.event(event_type.as_str());
        }
        // Clients see their topic's name; a tenant's namespace stays the gateway's business.
        let _ = frame.field("topic", topic);
        frame.data(data);
        frame.finish()
    }
}
