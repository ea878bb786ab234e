//! Server-Sent Events: a checked frame builder and an incremental parser.
//!
//! The builder refuses CR, LF and NUL wherever they would end a line early (`id`, `event`,
//! other field values, comments) and splits data at every line end (CRLF, CR or LF) into
//! `data:` lines, so no publisher input can inject a field. The parser follows the HTML
//! standard's event-stream interpretation and is what our test fixtures and clients read
//! streams with; it tells "need more bytes" ([`ParseError::Incomplete`]) apart from "these
//! bytes are wrong" ([`ParseError::Invalid`]).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::{EventId, EventType, TopicName};

/// Why a field could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The value holds a byte that would end the line or is ignored by browsers.
    #[error("SSE field {field:?}: {byte:?} at byte {index} would break the frame")]
    LineBreak {
        /// The field name.
        field: String,
        /// The offending character.
        byte: char,
        /// Its offset in the value.
        index: usize,
    },
    /// The field name is empty or holds a colon, CR, LF or NUL.
    #[error("SSE field name {0:?} is not allowed")]
    BadName(String),
}

/// Builds one SSE frame: some fields, then the blank line that dispatches it.
#[derive(Debug, Default)]
pub struct FrameBuilder {
    buf: BytesMut,
}

impl FrameBuilder {
    /// A builder that expects a frame of about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
        }
    }

    /// Writes `id: <id>`.
    pub fn id(&mut self, id: &str) -> Result<&mut Self, FieldError> {
        self.field("id", id)
    }

    /// Writes `event: <event>`.
    pub fn event(&mut self, event: &str) -> Result<&mut Self, FieldError> {
        self.field("event", event)
    }

    /// Writes `<name>: <value>`; any name but `data`, whose values go through [`Self::data`].
    pub fn field(&mut self, name: &str, value: &str) -> Result<&mut Self, FieldError> {
        if name.is_empty() || name == "data" || name.contains([':', '\r', '\n', '\0']) {
            return Err(FieldError::BadName(name.to_owned()));
        }
        check_line(name, value)?;
        self.line(name, value);
        Ok(self)
    }

    /// The bytes [`Self::field`] writes for `name` and `value`.
    pub fn field_len(name: &str, value: &str) -> usize {
        name.len() + value.len() + 3
    }

    /// The bytes [`Self::data`] writes for `data`: with [`Self::field_len`] and the one of
    /// [`Self::finish`], a frame's exact size, so it can be built without regrowing or slack.
    pub fn data_len(data: &str) -> usize {
        lines(data).map(|line| Self::field_len("data", line)).sum()
    }

    /// Writes `data` as one `data:` line per line of it; CRLF, CR and LF all end a line.
    pub fn data(&mut self, data: &str) -> &mut Self {
        for line in lines(data) {
            self.line("data", line);
        }
        self
    }

    /// Writes `retry: <ms>`, the reconnection delay hint.
    pub fn retry(&mut self, ms: u64) -> &mut Self {
        self.buf.put_slice(b"retry: ");
        self.buf.put_slice(ms.to_string().as_bytes());
        self.buf.put_u8(b'\n');
        self
    }

    /// Writes a comment line, `: <text>`, which clients ignore (heartbeats use it).
    pub fn comment(&mut self, text: &str) -> Result<&mut Self, FieldError> {
        check_line("comment", text)?;
        self.buf.put_slice(b": ");
        self.buf.put_slice(text.as_bytes());
        self.buf.put_u8(b'\n');
        Ok(self)
    }

    /// Ends the frame with its blank line and hands out the bytes.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_u8(b'\n');
        self.buf.freeze()
    }

    fn line(&mut self, name: &str, value: &str) {
        self.buf.reserve(Self::field_len(name, value));
        self.buf.put_slice(name.as_bytes());
        self.buf.put_slice(b": ");
        self.buf.put_slice(value.as_bytes());
        self.buf.put_u8(b'\n');
    }
}

/// An event's SSE frame as subscribers of `topic` receive it: `id:`, `event:` if it has a
/// type, `topic:` (the name they asked for, without a tenant's namespace), then `data` as
/// `data:` lines. Built exactly to size, so a frame a history keeps holds no slack. The one
/// place this frame's layout is written: the engine frames an event with it on delivery,
/// and a publish to one topic with [`one_line_frame`] at once (see
/// [`crate::EventData::for_topics`]).
///
/// Written straight, without [`FrameBuilder`]'s checks: the id, the type and the topic's
/// name are validated types, which hold no CR, LF or NUL, and `data` is split at its line
/// ends.
pub fn event_frame(
    id: &EventId,
    event_type: Option<&EventType>,
    topic: &TopicName,
    data: &str,
) -> Bytes {
    if let Some((frame, _)) = one_line_frame(id, event_type, topic, data) {
        return frame;
    }
    let topic = topic.public_name();
    let size = head_len(id, event_type, topic) + FrameBuilder::data_len(data) + 1;
    let mut frame = Vec::with_capacity(size);
    head(&mut frame, id, event_type, topic);
    for line in lines(data) {
        push_line(&mut frame, "data", line);
    }
    frame.push(b'\n');
    debug_assert_eq!(frame.len(), size, "sized exactly");
    Bytes::from(frame)
}

/// [`event_frame`] of `data` that is one line (holds no CR or LF), with where the data
/// lies in the frame; `None` for data of several lines. One pass over `data` to look for
/// a line end, one copy of it into the frame.
pub fn one_line_frame(
    id: &EventId,
    event_type: Option<&EventType>,
    topic: &TopicName,
    data: &str,
) -> Option<(Bytes, std::ops::Range<usize>)> {
    if memchr::memchr2(b'\r', b'\n', data.as_bytes()).is_some() {
        return None;
    }
    let topic = topic.public_name();
    let size = head_len(id, event_type, topic) + FrameBuilder::field_len("data", data) + 1;
    let mut frame = Vec::with_capacity(size);
    head(&mut frame, id, event_type, topic);
    let start = frame.len() + "data: ".len();
    push_line(&mut frame, "data", data);
    frame.push(b'\n');
    debug_assert_eq!(frame.len(), size, "sized exactly");
    Some((Bytes::from(frame), start..start + data.len()))
}

/// The bytes [`head`] writes.
fn head_len(id: &EventId, event_type: Option<&EventType>, topic: &str) -> usize {
    FrameBuilder::field_len("id", id.as_str())
        + event_type.map_or(0, |t| FrameBuilder::field_len("event", t.as_str()))
        + FrameBuilder::field_len("topic", topic)
}

/// An event frame's lines before its data.
fn head(frame: &mut Vec<u8>, id: &EventId, event_type: Option<&EventType>, topic: &str) {
    push_line(frame, "id", id.as_str());
    if let Some(event_type) = event_type {
        push_line(frame, "event", event_type.as_str());
    }
    push_line(frame, "topic", topic);
}

/// `<name>: <value>\n`, of a value known to hold no line end.
fn push_line(frame: &mut Vec<u8>, name: &str, value: &str) {
    frame.extend_from_slice(name.as_bytes());
    frame.extend_from_slice(b": ");
    frame.extend_from_slice(value.as_bytes());
    frame.push(b'\n');
}

/// Where a frame [`event_frame`] wrote with one line of data, `data_len` bytes long, holds
/// that data, and its `topic:` line's value: read from the frame's end, where the layout
/// puts them (`…\ntopic: <topic>\ndata: <data>\n\n`). `None` for bytes not of that shape.
/// Beside the writer, so the two cannot drift apart.
pub(crate) fn one_line_parts(
    frame: &[u8],
    data_len: usize,
) -> Option<(std::ops::Range<usize>, &[u8])> {
    const TOPIC: &[u8] = b"\ntopic: ";
    const DATA: &[u8] = b"\ndata: ";
    let data = frame.len().checked_sub(data_len + 2)?..frame.len() - 2;
    let topic_end = data.start.checked_sub(DATA.len())?;
    if frame.get(topic_end..data.start)? != DATA || frame.get(data.end..)? != b"\n\n" {
        return None;
    }
    // A topic name holds no line break: the one before the topic's value starts its line.
    let line = frame.get(..topic_end)?.iter().rposition(|&b| b == b'\n')?;
    let topic = frame.get(line..topic_end)?.strip_prefix(TOPIC)?;
    Some((data, topic))
}

fn check_line(field: &str, value: &str) -> Result<(), FieldError> {
    // Bytes, not chars: the three are ASCII, and a byte of a multi-byte char never is.
    match value
        .bytes()
        .position(|b| matches!(b, b'\r' | b'\n' | b'\0'))
    {
        Some(index) => Err(FieldError::LineBreak {
            field: field.to_owned(),
            byte: char::from(value.as_bytes()[index]),
            index,
        }),
        None => Ok(()),
    }
}

/// The lines of `text`, split at CRLF, CR or LF; `n` line ends give `n + 1` lines.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        // A byte search: CR and LF are ASCII, so where one is found is a char boundary.
        match memchr::memchr2(b'\r', b'\n', text.as_bytes()) {
            None => {
                rest = None;
                Some(text)
            }
            Some(at) => {
                let skip = if text.as_bytes()[at..].starts_with(b"\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
        }
    })
}

/// The JSON form of an event (`envelope=json` and WebSocket frames).
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// The topic the event was delivered on.
    pub topic: &'a str,
    /// The publisher's id.
    pub id: &'a str,
    /// The event type, if the publisher gave one.
    pub event: Option<&'a str>,
    /// The body, as text.
    pub data: &'a str,
}

impl Envelope<'_> {
    /// The envelope as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One parsed SSE block: the fields seen up to a blank line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block {
    /// The `id:` value, if any.
    pub id: Option<String>,
    /// The `event:` value, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by LF, if any `data:` line was seen.
    pub data: Option<String>,
    /// The `retry:` value, if it was all digits.
    pub retry: Option<u64>,
    /// Comment lines, without their leading colon and one space.
    pub comments: Vec<String>,
    /// Every other field, in order (Tideway sends `topic`).
    pub fields: Vec<(String, String)>,
}

impl Block {
    /// The value of another field, such as `topic`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a block could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The block has not ended yet: read more bytes and try again.
    #[error("incomplete SSE block")]
    Incomplete,
    /// The bytes are not an event stream.
    #[error("invalid SSE stream: {0}")]
    Invalid(&'static str),
}

/// Parses the first block of `buf`; returns it with the number of bytes it took.
pub fn parse_block(buf: &[u8]) -> Result<(Block, usize), ParseError> {
    let mut block = Block::default();
    let mut pos = 0;
    loop {
        let (line, next) = next_line(buf, pos)?;
        pos = next;
        if line.is_empty() {
            return Ok((block, pos));
        }
        let line = std::str::from_utf8(line).map_err(|_| ParseError::Invalid("not UTF-8"))?;
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "" => block.comments.push(value.to_owned()),
            "id" => block.id = Some(value.to_owned()),
            "event" => block.event = Some(value.to_owned()),
            "data" => match &mut block.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => block.data = Some(value.to_owned()),
            },
            "retry" => {
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    block.retry = value.parse().ok();
                }
            }
            _ => block.fields.push((name.to_owned(), value.to_owned())),
        }
    }
}

/// The line starting at `pos` and the offset after its line end.
fn next_line(buf: &[u8], pos: usize) -> Result<(&[u8], usize), ParseError> {
    let rest = &buf[pos..];
    let Some(at) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Err(ParseError::Incomplete);
    };
    if rest[at] == b'\n' {
        return Ok((&rest[..at], pos + at + 1));
    }
    // A CR at the end of what we have may be the first half of a CRLF.
    match rest.get(at + 1) {
        None => Err(ParseError::Incomplete),
        Some(b'\n') => Ok((&rest[..at], pos + at + 2)),
        Some(_) => Ok((&rest[..at], pos + at + 1)),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use proptest::prelude::*;

    use super::*;

    fn check(frame: Bytes, expect: Expect) {
        expect.assert_eq(std::str::from_utf8(&frame).unwrap());
    }

    fn event(id: &str, event: Option<&str>, topic: &str, data: &str) -> Bytes {
        let mut frame = FrameBuilder::default();
        frame.id(id).unwrap();
        if let Some(event) = event {
            frame.event(event).unwrap();
        }
        frame.field("topic", topic).unwrap().data(data);
        frame.finish()
    }

    #[test]
    fn frames() {
        check(
            event("1", None, "news", "hello"),
            expect![[r#"
                id: 1
                topic: news
                data: hello

            "#]],
        );
        check(
            event("2", Some("update"), "a", "one\r\ntwo\rthree\nfour\n"),
            expect![[r#"
                id: 2
                event: update
                topic: a
                data: one
                data: two
                data: three
                data: four
                data: 

            "#]],
        );
        let mut hello = FrameBuilder::default();
        hello.retry(3000).comment("tideway").unwrap();
        check(
            hello.finish(),
            expect![[r#"
                retry: 3000
                : tideway

            "#]],
        );
    }

    #[test]
    fn injection_is_refused() {
        let mut frame = FrameBuilder::default();
        expect![[r#"
            Err(
                LineBreak {
                    field: "id",
                    byte: '\n',
                    index: 1,
                },
            )
        "#]]
        .assert_debug_eq(&frame.id("1\ndata: x").map(|_| ()));
        assert!(matches!(
            frame.event("a\rb"),
            Err(FieldError::LineBreak { index: 1, .. })
        ));
        assert!(matches!(
            frame.comment("\0"),
            Err(FieldError::LineBreak { index: 0, .. })
        ));
        assert_eq!(
            frame.field("da:ta", "x").map(|_| ()),
            Err(FieldError::BadName("da:ta".into()))
        );
        assert_eq!(
            frame.field("data", "x").map(|_| ()),
            Err(FieldError::BadName("data".into()))
        );
        assert_eq!(frame.finish(), Bytes::from_static(b"\n"));
    }

    #[test]
    fn parses_what_browsers_parse() {
        let stream = b"retry: 10\r\n: hi\r\n\r\nid:7\rdata\rdata:  x\r\r\n";
        let (first, used) = parse_block(stream).unwrap();
        assert_eq!(first.retry, Some(10));
        assert_eq!(first.comments, ["hi"]);
        let (second, rest) = parse_block(&stream[used..]).unwrap();
        assert_eq!(second.id.as_deref(), Some("7"));
        assert_eq!(second.data.as_deref(), Some("\n x"));
        assert_eq!(used + rest, stream.len());
        assert_eq!(parse_block(b"data: x\n\r"), Err(ParseError::Incomplete));
        assert_eq!(
            parse_block(b"data: \xff\n\n"),
            Err(ParseError::Invalid("not UTF-8"))
        );
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("\r\n".to_owned()),
                Just("\r".to_owned()),
                Just("\n".to_owned()),
                "[^\r\n]{0,8}"
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut rest = &bytes[..];
            while let Ok((_, used)) = parse_block(rest) {
                prop_assert!(used > 0);
                rest = &rest[used..];
            }
        }

        #[test]
        fn frame_then_parse_gives_the_event_back(
            id in "[!-~]{1,20}",
            event in proptest::option::of("[!-~]{1,20}"),
            topic in "[A-Za-z0-9_.:/@-]{1,20}",
            data in text(),
        ) {
            let frame = super::tests::event(&id, event.as_deref(), &topic, &data);
            let (block, used) = parse_block(&frame).unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(block.id.as_deref(), Some(id.as_str()));
            prop_assert_eq!(&block.event, &event);
            prop_assert_eq!(block.field("topic"), Some(topic.as_str()));
            let normalised = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(block.data.as_deref(), Some(normalised.as_str()));
            for end in 0..frame.len() {
                prop_assert_eq!(parse_block(&frame[..end]), Err(ParseError::Incomplete));
            }
        }

        /// The event frame, written straight, is the frame the checked builder writes for
        /// the same event (and the builder's frames parse back: see above); a one-line
        /// frame says where its data lies, and there is none for data of several lines.
        #[test]
        fn an_event_frame_is_what_the_builder_writes(
            id in "[!-~]{1,20}",
            event in proptest::option::of("[!-~]{1,20}"),
            tenant in proptest::option::of("[a-z]{1,8}"),
            topic in "[A-Za-z0-9_.:/@-]{1,20}",
            data in text(),
        ) {
            let parsed_id = EventId::parse(id.as_bytes()).unwrap();
            let parsed_type = event.as_ref().map(|e| EventType::parse(e.as_bytes()).unwrap());
            let mut name = TopicName::parse(&topic).unwrap();
            if let Some(tenant) = &tenant {
                name = name.in_tenant(&crate::Tenant::parse(tenant).unwrap());
            }
            let built = super::tests::event(&id, event.as_deref(), &topic, &data);
            let frame = event_frame(&parsed_id, parsed_type.as_ref(), &name, &data);
            prop_assert_eq!(&frame, &built);
            let one_line = one_line_frame(&parsed_id, parsed_type.as_ref(), &name, &data);
            prop_assert_eq!(one_line.is_some(), !data.contains(['\r', '\n']));
            if let Some((frame, at)) = one_line {
                prop_assert_eq!(&frame, &built);
                prop_assert_eq!(&frame[at.clone()], data.as_bytes());
                prop_assert_eq!(one_line_parts(&frame, data.len()), Some((at, topic.as_bytes())));
            }
        }

        /// The sizes a frame is allocated by are the sizes it is written at.
        #[test]
        fn a_frame_is_as_long_as_its_parts_say(
            id in "[!-~]{1,20}",
            topic in "[A-Za-z0-9_.:/@-]{1,20}",
            data in text(),
        ) {
            let mut frame = FrameBuilder::default();
            frame.id(&id).unwrap().field("topic", &topic).unwrap().data(&data);
            let expected = FrameBuilder::field_len("id", &id)
                + FrameBuilder::field_len("topic", &topic)
                + FrameBuilder::data_len(&data)
                + 1;
            prop_assert_eq!(frame.finish().len(), expected);
        }
    }
}
