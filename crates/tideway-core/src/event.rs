//! Events as published, and as delivered on one topic with their encodings built once.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tideway_protocol::{
    EventData, EventId, EventType, TopicName,
    sse::{self, Envelope},
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
    /// The JSON encodings, held apart: most events are only ever framed as SSE, and each
    /// cached encoding costs its room in every event a history keeps.
    json: OnceLock<Box<JsonEncodings>>,
}

/// The encodings a JSON subscriber asks for, built on first use.
#[derive(Debug, Default)]
struct JsonEncodings {
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
            json: OnceLock::new(),
        }
    }

    /// The event's bytes in `encoding`, built on first use.
    pub fn encoded(&self, encoding: Encoding) -> &Bytes {
        match encoding {
            // A publish to this topic alone came framed already, its data inside the frame:
            // that frame is shared, not built again.
            Encoding::Sse => self.sse.get_or_init(|| {
                self.event
                    .data
                    .frame_on(&self.topic)
                    .cloned()
                    .unwrap_or_else(|| self.frame(self.event.data.as_str()))
            }),
            Encoding::SseJson => self
                .json_encodings()
                .sse_json
                .get_or_init(|| self.frame(&self.envelope())),
            Encoding::Json => self
                .json_encodings()
                .json
                .get_or_init(|| Bytes::from(self.envelope())),
        }
    }

    fn json_encodings(&self) -> &JsonEncodings {
        self.json.get_or_init(Box::default)
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
        // Clients see their topic's name; a tenant's namespace stays the gateway's business.
        sse::event_frame(
            &self.event.id,
            self.event.event_type.as_ref(),
            &self.topic,
            data,
        )
    }
}

#[cfg(test)]
mod tests {
    use tideway_protocol::TopicList;

    use super::*;

    fn on(topic: &str, data: EventData) -> TopicEvent {
        let event = Event {
            id: EventId::parse(b"e1").expect("an id"),
            event_type: None,
            data,
            published_at: 0,
        };
        let topic = TopicName::parse(topic).expect("a name");
        TopicEvent::new(topic, 1, 1, 1, Arc::new(event))
    }

    #[test]
    fn a_body_published_framed_is_delivered_in_the_frame_it_came_in() {
        let id = EventId::parse(b"e1").expect("an id");
        let list = TopicList::parse(b"news", 1).expect("a topic");
        let framed = EventData::for_topics(&id, None, &list, b"hello").expect("UTF-8");
        let came_in = framed.frame_on(&list.names()[0]).expect("framed").clone();
        let plain = EventData::parse(Bytes::from_static(b"hello")).expect("UTF-8");
        let delivered = on("news", framed.clone());
        // The same bytes as a frame built on delivery, and the very frame it came in.
        assert_eq!(
            delivered.encoded(Encoding::Sse),
            on("news", plain).encoded(Encoding::Sse)
        );
        assert_eq!(delivered.encoded(Encoding::Sse).as_ptr(), came_in.as_ptr());
        // On another topic (a copy a store made elsewhere) it is framed anew, for that topic.
        let elsewhere = on("other", framed);
        assert_eq!(
            &elsewhere.encoded(Encoding::Sse)[..],
            b"id: e1\ntopic: other\ndata: hello\n\n"
        );
        assert!(
            String::from_utf8_lossy(delivered.encoded(Encoding::Json))
                .contains("\"data\":\"hello\"")
        );
    }
}
