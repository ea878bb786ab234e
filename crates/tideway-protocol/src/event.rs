//! Event ids (`x-sse-id`) and event types (`x-sse-event`).

use std::{fmt, sync::Arc};

use serde::Serialize;

use crate::{SYSTEM_EVENT_PREFIX, TopicList, TopicName, hashed::HashedText};

/// Longest event id and event type, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 128;

/// A publisher's event id: 1–128 bytes of printable ASCII (`0x20`–`0x7E`), not starting or
/// ending with a space. It becomes the SSE `id:` line, so it can never carry CR, LF or NUL.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventId(HashedText);

/// Why an event id is not legal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventIdError {
    /// No bytes.
    #[error("event id is empty")]
    Empty,
    /// Longer than [`MAX_EVENT_ID_LEN`].
    #[error("event id is {len} bytes; at most {MAX_EVENT_ID_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte outside printable ASCII.
    #[error("event id: byte 0x{byte:02x} at {index} is not printable ASCII")]
    NotPrintable {
        /// The offending byte.
        byte: u8,
        /// Its offset.
        index: usize,
    },
    /// Starts or ends with a space, which HTTP and SSE would both trim.
    #[error("event id starts or ends with a space")]
    EdgeSpace,
}

impl EventId {
    /// Checks `bytes` against the id rules.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventIdError> {
        let text = printable(bytes, b' ').map_err(|e| match e {
            Printable::Empty => EventIdError::Empty,
            Printable::TooLong(len) => EventIdError::TooLong { len },
            Printable::Bad(byte, index) => EventIdError::NotPrintable { byte, index },
            Printable::EdgeSpace => EventIdError::EdgeSpace,
        })?;
        Ok(Self(HashedText::new(text)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's SipHash under a random key of this process, computed when it was parsed:
    /// what its `Hash` writes, for tables that take a hash directly.
    pub fn prehash(&self) -> u64 {
        self.0.hash()
    }
}

/// A publisher's SSE event type: 1–128 bytes of printable ASCII without spaces, not
/// starting with `tideway.` (the gateway's own events use that prefix).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventType(Arc<str>);

/// Why an event type is not legal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    /// No bytes.
    #[error("event type is empty")]
    Empty,
    /// Longer than [`MAX_EVENT_ID_LEN`].
    #[error("event type is {len} bytes; at most {MAX_EVENT_ID_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte outside printable ASCII, or a space.
    #[error("event type: byte 0x{byte:02x} at {index} is not allowed (printable ASCII, no spaces)")]
    NotAllowed {
        /// The offending byte.
        byte: u8,
        /// Its offset.
        index: usize,
    },
    /// Uses the prefix kept for the gateway's own events.
    #[error("event type {0:?}: the prefix \"tideway.\" is reserved for the gateway's own events")]
    Reserved(String),
}

impl EventType {
    /// Checks `bytes` against the event type rules.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventTypeError> {
        let text = printable(bytes, b'!').map_err(|e| match e {
            Printable::Empty => EventTypeError::Empty,
            Printable::TooLong(len) => EventTypeError::TooLong { len },
            Printable::Bad(byte, index) => EventTypeError::NotAllowed { byte, index },
            // Spaces are below `!` and were refused as `Bad`; kept total so nothing panics.
            Printable::EdgeSpace => EventTypeError::NotAllowed {
                byte: b' ',
                index: 0,
            },
        })?;
        if text.starts_with(SYSTEM_EVENT_PREFIX) {
            return Err(EventTypeError::Reserved(text.to_owned()));
        }
        Ok(Self(Arc::from(text)))
    }

    /// An event type of the gateway's own, `tideway.<what>`.
    pub fn system(what: &str) -> Self {
        Self(Arc::from(format!("{SYSTEM_EVENT_PREFIX}{what}")))
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

enum Printable {
    Empty,
    TooLong(usize),
    Bad(u8, usize),
    EdgeSpace,
}

/// Checks that `bytes` are 1–128 bytes from `lowest` to `~`, with no space at either end.
fn printable(bytes: &[u8], lowest: u8) -> Result<&str, Printable> {
    if bytes.is_empty() {
        return Err(Printable::Empty);
    }
    if bytes.len() > MAX_EVENT_ID_LEN {
        return Err(Printable::TooLong(bytes.len()));
    }
    if let Some(index) = bytes.iter().position(|b| !(lowest..=b'~').contains(b)) {
        return Err(Printable::Bad(bytes[index], index));
    }
    if bytes[0] == b' ' || bytes[bytes.len() - 1] == b' ' {
        return Err(Printable::EdgeSpace);
    }
    // Every byte is printable ASCII, checked just above, so this cannot fail.
    std::str::from_utf8(bytes).map_err(|_| Printable::Empty)
}

macro_rules! text_impls {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    };
}
text_impls!(EventId);
text_impls!(EventType);

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use proptest::prelude::*;

    use super::*;

    fn check(id: &[u8], event: &[u8], expect: Expect) {
        let id = match EventId::parse(id) {
            Ok(id) => format!("id {id:?}"),
            Err(err) => format!("id error: {err}"),
        };
        let event = match EventType::parse(event) {
            Ok(event) => format!("event {event:?}"),
            Err(err) => format!("event error: {err}"),
        };
        expect.assert_eq(&format!("{id} | {event}"));
    }

    #[test]
    fn ids_and_types() {
        check(
            b"evt-1",
            b"update",
            expect![[r#"id "evt-1" | event "update""#]],
        );
        check(
            b"a b",
            b"a b",
            expect![[
                r#"id "a b" | event error: event type: byte 0x20 at 1 is not allowed (printable ASCII, no spaces)"#
            ]],
        );
        check(
            b"",
            b"",
            expect![[r#"id error: event id is empty | event error: event type is empty"#]],
        );
        check(
            b"x\r\nid: 2",
            b"x\ndata: evil",
            expect![
                "id error: event id: byte 0x0d at 1 is not printable ASCII | event error: event type: byte 0x0a at 1 is not allowed (printable ASCII, no spaces)"
            ],
        );
        check(
            b" x",
            b"tideway.drain",
            expect![[
                r#"id error: event id starts or ends with a space | event error: event type "tideway.drain": the prefix "tideway." is reserved for the gateway's own events"#
            ]],
        );
        check(
            "é".as_bytes(),
            b"\0",
            expect![[
                r#"id error: event id: byte 0xc3 at 0 is not printable ASCII | event error: event type: byte 0x00 at 0 is not allowed (printable ASCII, no spaces)"#
            ]],
        );
    }

    #[test]
    fn length_limit_is_crossed_exactly() {
        assert!(EventId::parse(&[b'a'; MAX_EVENT_ID_LEN]).is_ok());
        assert_eq!(
            EventId::parse(&[b'a'; MAX_EVENT_ID_LEN + 1]),
            Err(EventIdError::TooLong { len: 129 })
        );
        assert!(EventType::parse(&[b'a'; MAX_EVENT_ID_LEN]).is_ok());
        assert_eq!(
            EventType::parse(&[b'a'; MAX_EVENT_ID_LEN + 1]),
            Err(EventTypeError::TooLong { len: 129 })
        );
    }

    /// Ids from the grammar: 1–128 bytes of printable ASCII, spaces inside only.
    fn valid_id() -> impl Strategy<Value = String> {
        "[!-~]([ -~]{0,126}[!-~])?"
    }

    /// A byte no id or event type may hold.
    fn bad_byte() -> impl Strategy<Value = u8> {
        prop_oneof![0u8..0x20, Just(0x7f), 0x80u8..=0xff]
    }

    proptest! {
        /// Random bytes rarely make an id, so valid ones come from the grammar too:
        /// every one is taken whole.
        #[test]
        fn ids_from_the_grammar_are_taken_whole(id in valid_id()) {
            let parsed = EventId::parse(id.as_bytes());
            prop_assert_eq!(parsed.as_ref().map(EventId::as_str), Ok(id.as_str()));
            if !id.contains(' ') && !id.starts_with("tideway.") {
                let event = EventType::parse(id.as_bytes());
                prop_assert_eq!(event.as_ref().map(EventType::as_str), Ok(id.as_str()));
            }
        }

        /// One bad byte anywhere in a valid id is refused, naming that byte and where.
        #[test]
        fn one_bad_byte_anywhere_in_an_id_is_refused_at_its_place(
            id in "[!-~]{1,100}",
            at in any::<prop::sample::Index>(),
            bad in bad_byte(),
        ) {
            let mut bytes = id.into_bytes();
            let index = at.index(bytes.len() + 1);
            bytes.insert(index, bad);
            prop_assert_eq!(
                EventId::parse(&bytes),
                Err(EventIdError::NotPrintable { byte: bad, index })
            );
            prop_assert!(EventType::parse(&bytes).is_err());
        }

        #[test]
        fn accepted_ids_are_safe_on_an_sse_line(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(id) = EventId::parse(&bytes) {
                prop_assert_eq!(id.as_str().as_bytes(), &bytes[..]);
                prop_assert!(!id.as_str().contains(['\r', '\n', '\0']));
            }
            if let Ok(event) = EventType::parse(&bytes) {
                prop_assert!(!event.as_str().contains(['\r', '\n', '\0', ' ']));
            }
        }
    }
}

/// An event body: bytes that are valid UTF-8, since an event stream is UTF-8 text.
///
/// Cloning shares the bytes. A body published to one topic is kept inside its SSE frame
/// on that topic (see [`Self::for_topics`]): a history then holds the body once, not once
/// as data and again inside the frame.
#[derive(Clone, Default)]
pub struct EventData {
    bytes: bytes::Bytes,
    /// The SSE frame the body was published in, on the one topic it went to; `bytes` is
    /// its `data:` line's value. Which topic is read from the frame itself (see
    /// [`Self::frame_on`]) rather than kept beside it in every event a history holds.
    framed: Option<bytes::Bytes>,
}

/// Why an event body is not legal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event body is not valid UTF-8 (first bad byte at {valid_up_to}); SSE carries text only")]
pub struct EventDataError {
    /// How many leading bytes are valid.
    pub valid_up_to: usize,
}

impl EventData {
    /// Checks that `bytes` are UTF-8.
    pub fn parse(bytes: bytes::Bytes) -> Result<Self, EventDataError> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Self {
                bytes,
                framed: None,
            }),
            Err(err) => Err(EventDataError {
                valid_up_to: err.valid_up_to(),
            }),
        }
    }

    /// The body `body` of event `id` (of type `event_type`) published to `topics`, copied
    /// once, at its own length: a slice of a request's read buffer kept in history would
    /// pin that whole buffer for as long as the event lives.
    ///
    /// To one topic and on one line (the usual publish), the copy is the event's SSE frame
    /// on that topic ([`crate::sse::event_frame`]) with the body inside it, and the
    /// engine delivers that frame as it is.
    pub fn for_topics(
        id: &EventId,
        event_type: Option<&EventType>,
        topics: &TopicList,
        body: &[u8],
    ) -> Result<Self, EventDataError> {
        let text = std::str::from_utf8(body).map_err(|err| EventDataError {
            valid_up_to: err.valid_up_to(),
        })?;
        Ok(Self::for_topics_text(id, event_type, topics, text))
    }

    /// [`Self::for_topics`] for a body already known to be text (a batch's, which its
    /// JSON parser checked): the same copy, without checking the bytes a second time.
    pub fn for_topics_text(
        id: &EventId,
        event_type: Option<&EventType>,
        topics: &TopicList,
        text: &str,
    ) -> Self {
        let body = text.as_bytes();
        let copy = || Self {
            bytes: bytes::Bytes::copy_from_slice(body),
            framed: None,
        };
        let [topic] = topics.names() else {
            return copy();
        };
        // Several lines are several `data:` lines: the body is not one run of the frame.
        let Some((frame, data)) = crate::sse::one_line_frame(id, event_type, topic, text) else {
            return copy();
        };
        Self {
            bytes: frame.slice(data),
            framed: Some(frame),
        }
    }

    /// The SSE frame the body was published in, if that frame is the one subscribers of
    /// `topic` receive: its `topic:` line names `topic` as they know it.
    pub fn frame_on(&self, topic: &TopicName) -> Option<&bytes::Bytes> {
        let frame = self.framed.as_ref()?;
        let (_, named) = crate::sse::one_line_parts(frame, self.bytes.len())?;
        (named == topic.public_name().as_bytes()).then_some(frame)
    }

    /// The body as text.
    pub fn as_str(&self) -> &str {
        // Checked to be UTF-8 in `parse`; without `unsafe` we check again, which costs one
        // pass over the bytes each time an encoding of the event is built (once per format).
        std::str::from_utf8(&self.bytes).unwrap_or_default()
    }

    /// The body's bytes.
    pub fn as_bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Two bodies are equal when their bytes are: a frame is how one was kept, not what it is.
impl PartialEq for EventData {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for EventData {}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventData({} bytes)", self.bytes.len())
    }
}

#[cfg(test)]
mod data_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Tenant, sse::event_frame};

    fn topics(names: &[&str]) -> TopicList {
        TopicList::parse(names.join(",").as_bytes(), 10).expect("topics")
    }

    fn id(id: &str) -> EventId {
        EventId::parse(id.as_bytes()).expect("an id")
    }

    #[test]
    fn a_body_to_one_topic_is_kept_inside_its_frame() {
        let list = topics(&["news"]);
        let data = EventData::for_topics(&id("e1"), None, &list, b"hello").expect("UTF-8");
        assert_eq!(data.as_str(), "hello");
        let frame = data.frame_on(&list.names()[0]).expect("framed");
        assert_eq!(&frame[..], b"id: e1\ntopic: news\ndata: hello\n\n");
        assert_eq!(
            frame,
            &event_frame(&id("e1"), None, &list.names()[0], "hello")
        );
        // The body is a view of the frame, not a second copy.
        let inside = frame.as_ptr_range();
        assert!(inside.contains(&data.as_bytes().as_ptr()));
        let other = TopicName::parse("sports").expect("a name");
        assert!(data.frame_on(&other).is_none(), "framed for its topic only");
    }

    #[test]
    fn a_tenant_s_frame_names_the_topic_as_its_subscribers_know_it() {
        let tenant = Tenant::parse("acme").expect("a tenant");
        let list = topics(&["news"]).in_tenant(&tenant);
        let kind = EventType::parse(b"update").expect("a type");
        let data = EventData::for_topics(&id("e1"), Some(&kind), &list, b"{}").expect("UTF-8");
        let frame = data.frame_on(&list.names()[0]).expect("framed");
        assert_eq!(
            &frame[..],
            b"id: e1\nevent: update\ntopic: news\ndata: {}\n\n"
        );
    }

    #[test]
    fn several_topics_or_lines_are_plain_copies() {
        for (names, body) in [
            (&["a", "b"][..], &b"x"[..]),
            (&["a"][..], b"x\ny"),
            (&["a"][..], b"x\r"),
        ] {
            let list = topics(names);
            let data = EventData::for_topics(&id("e"), None, &list, body).expect("UTF-8");
            assert_eq!(data.as_bytes(), body);
            assert!(list.iter().all(|topic| data.frame_on(topic).is_none()));
        }
    }

    proptest! {
        /// Whatever the body, framed or not, it is the body `parse` would keep or the
        /// error `parse` would give; a frame is exactly the engine's frame of it.
        #[test]
        fn a_body_is_kept_as_parse_keeps_it(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            text in "[ -~\u{a0}-\u{2fff}]{0,80}",
            pick_text in any::<bool>(),
            names in proptest::collection::vec("[a-z]{1,4}", 1..3),
            probe in "[a-z]{1,5}",
        ) {
            let body = if pick_text { text.into_bytes() } else { body };
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let list = topics(&names);
            let kept = EventData::for_topics(&id("e"), None, &list, &body);
            let parsed = EventData::parse(bytes::Bytes::copy_from_slice(&body));
            prop_assert_eq!(&kept, &parsed);
            if let Ok(data) = kept {
                for topic in list.iter() {
                    if let Some(frame) = data.frame_on(topic) {
                        prop_assert_eq!(list.len(), 1);
                        prop_assert_eq!(frame, &event_frame(&id("e"), None, topic, data.as_str()));
                        // Any other name, a prefix or a suffix of this one included, is
                        // refused the frame.
                        let probe = TopicName::parse(&probe).expect("a name");
                        prop_assert_eq!(data.frame_on(&probe).is_some(), probe == *topic);
                    }
                }
            }
        }
    }
}
