//! Topic names and the comma-separated topic lists of `x-sse-topic` and `?topic=`.

use std::{fmt, sync::Arc};

use serde::Serialize;

use crate::hashed::HashedText;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;

/// How many topics one header may name unless configured otherwise.
pub const DEFAULT_MAX_TOPICS: usize = 64;

/// A legal topic name: 1–128 bytes of `A-Z a-z 0-9 _ - . : / @`.
///
/// Cloning is a reference-count bump: the same name sits in several indexes at once.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TopicName(HashedText);

/// Why one topic name is not legal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// The name has no bytes.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`].
    #[error("topic {name:?}: {len} bytes is longer than the {MAX_TOPIC_LEN} allowed")]
    TooLong {
        /// The first bytes of the name, enough to recognise it.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside the allowed set.
    #[error(
        "topic {name:?}: {found:?} at byte {index} is not allowed; names use A-Z a-z 0-9 _ - . : / @"
    )]
    InvalidChar {
        /// The name as given.
        name: String,
        /// The first character that is not allowed.
        found: char,
        /// Its byte offset in the name.
        index: usize,
    },
}

impl TopicName {
    /// Checks `name` against the topic rules.
    pub fn parse(name: &str) -> Result<Self, TopicNameError> {
        if name.is_empty() {
            return Err(TopicNameError::Empty);
        }
        if name.len() > MAX_TOPIC_LEN {
            return Err(TopicNameError::TooLong {
                name: name.chars().take(32).collect::<String>() + "…",
                len: name.len(),
            });
        }
        // By bytes: every allowed character is ASCII, so the first byte not allowed starts
        // the first character not allowed.
        if let Some(index) = name.bytes().position(|b| !TOPIC_BYTES[usize::from(b)]) {
            return Err(TopicNameError::InvalidChar {
                name: name.to_owned(),
                found: name
                    .get(index..)
                    .and_then(|rest| rest.chars().next())
                    .unwrap_or(char::REPLACEMENT_CHARACTER),
                index,
            });
        }
        Ok(Self(HashedText::new(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/' | '@')
}

/// [`is_topic_char`] as a table of bytes.
const TOPIC_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = is_topic_char(b as u8 as char);
        b += 1;
    }
    table
};

/// Where the tenant of a namespaced name ends (the separator's byte offset), if it has one.
/// A byte search: names are short, and the separator is ASCII.
fn tenant_end(name: &str) -> Option<usize> {
    const _: () = assert!(TENANT_SEPARATOR.is_ascii(), "searched for as one byte");
    name.bytes().position(|b| b == TENANT_SEPARATOR as u8)
}

/// The entries of a comma-separated list, untrimmed. Split by bytes (the comma is ASCII,
/// so every cut is at a character boundary), cheaper than a `char` pattern's searcher for
/// the short lists requests carry.
fn entries(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.bytes().position(|b| b == b',') {
            Some(comma) => {
                rest = text.get(comma + 1..);
                text.get(..comma)
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// Separates a tenant from its topic in the gateway's own names. Topic names cannot hold
/// it, so no publisher can reach into a tenant by naming a topic.
pub const TENANT_SEPARATOR: char = '~';

/// Why a name is not a tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {0:?}: 1 to 32 bytes of a-z 0-9 -")]
pub struct TenantError(String);

/// A tenant: 1–32 bytes of `a-z 0-9 -`. A tenant's topics are its own namespace.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// Checks `name` against the tenant rules.
    pub fn parse(name: &str) -> Result<Self, TenantError> {
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(Arc::from(name)))
        } else {
            Err(TenantError(name.to_owned()))
        }
    }

    /// The tenant as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl TopicName {
    /// This topic inside `tenant`'s namespace: `tenant~name`.
    pub fn in_tenant(&self, tenant: &Tenant) -> Self {
        Self(HashedText::new(&format!(
            "{tenant}{TENANT_SEPARATOR}{self}"
        )))
    }

    /// The tenant of a namespaced name, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.0.get(..tenant_end(&self.0)?)
    }

    /// The name as its tenant's clients know it: without the tenant.
    pub fn public_name(&self) -> &str {
        let name: &str = &self.0;
        tenant_end(name)
            .and_then(|end| name.get(end + 1..))
            .unwrap_or(name)
    }

    /// A name as a store recorded it: a topic name, possibly namespaced by a tenant.
    pub fn from_stored(stored: &str) -> Option<Self> {
        match stored.split_once(TENANT_SEPARATOR) {
            None => Self::parse(stored).ok(),
            Some((tenant, name)) => Some(
                Self::parse(name)
                    .ok()?
                    .in_tenant(&Tenant::parse(tenant).ok()?),
            ),
        }
    }
}

impl TopicList {
    /// Every topic inside `tenant`'s namespace.
    pub fn in_tenant(&self, tenant: &Tenant) -> Self {
        Self(match &self.0 {
            Names::One([one]) => Names::One([one.in_tenant(tenant)]),
            Names::Many(many) => Names::Many(many.iter().map(|t| t.in_tenant(tenant)).collect()),
        })
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl<'de> serde::Deserialize<'de> for TopicName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_stored(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a topic name")))
    }
}

impl<'de> serde::Deserialize<'de> for TopicList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<TopicName>::deserialize(deserializer)?;
        Self::from_names(names).ok_or_else(|| {
            serde::de::Error::custom("a topic list is non-empty and has no duplicates")
        })
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A non-empty list of distinct topic names, in the order first given.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicList(Names);

/// A list's names. Most lists name one topic, held inline: no allocation of its own for
/// a one-topic publish or subscriber. `Many` always holds two or more, so each list has
/// one form and the derived equality is the names'.
#[derive(Clone, PartialEq, Eq)]
enum Names {
    One([TopicName; 1]),
    Many(Vec<TopicName>),
}

impl Names {
    fn as_slice(&self) -> &[TopicName] {
        match self {
            Self::One(one) => one,
            Self::Many(many) => many,
        }
    }

    /// `names` (non-empty) in their form.
    fn of(mut names: Vec<TopicName>) -> Self {
        match names.len() {
            1 => Self::One([names.remove(0)]),
            _ => Self::Many(names),
        }
    }

    /// Appends `name` to `names` (which `None` starts empty).
    fn push(names: &mut Option<Self>, name: TopicName) {
        *names = Some(match names.take() {
            None => Self::One([name]),
            Some(Self::One([first])) => Self::Many(vec![first, name]),
            Some(Self::Many(mut many)) => {
                many.push(name);
                Self::Many(many)
            }
        });
    }
}

impl Serialize for TopicList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(serializer)
    }
}

/// Why a topic list is not legal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// No topic was given at all.
    #[error("no topic given: send a comma-separated list in x-sse-topic or ?topic=")]
    Missing,
    /// The value is not text.
    #[error("the topic list is not valid UTF-8")]
    NotUtf8,
    /// An entry between commas is empty after trimming.
    #[error("topic list {list:?}: entry {position} is empty")]
    EmptyEntry {
        /// The list as given (cut to 200 bytes).
        list: String,
        /// The 1-based position of the empty entry.
        position: usize,
    },
    /// One name breaks the rules.
    #[error(transparent)]
    Name(#[from] TopicNameError),
    /// More distinct names than allowed.
    #[error("{count} topics given; at most {max} are allowed in one request")]
    TooMany {
        /// How many distinct topics were given.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
}

impl TopicList {
    /// Parses one comma-separated list, as found in an `x-sse-topic` header.
    ///
    /// Names are trimmed of spaces and tabs, duplicates collapse to their first place,
    /// an empty entry is an error, and at most `max` distinct names are accepted.
    pub fn parse(value: &[u8], max: usize) -> Result<Self, TopicError> {
        Self::parse_all([value], max)
    }

    /// Parses several comma-separated lists as one (a repeated header or `?topic=`).
    pub fn parse_all<'a>(
        values: impl IntoIterator<Item = &'a [u8]>,
        max: usize,
    ) -> Result<Self, TopicError> {
        // Most lists name one topic: held inline, a vector only for more.
        let mut names: Option<Names> = None;
        let mut position = 0;
        for value in values {
            let text = std::str::from_utf8(value).map_err(|_| TopicError::NotUtf8)?;
            for entry in entries(text) {
                position += 1;
                let entry = entry.trim_matches([' ', '\t']);
                if entry.is_empty() {
                    return Err(TopicError::EmptyEntry {
                        list: cut(text, 200),
                        position,
                    });
                }
                // Linear search keeps the first-given order and beats hashing for the
                // handful of topics a request names.
                let held = names.as_ref().map_or(&[][..], Names::as_slice);
                if held.iter().any(|n| n.as_str() == entry) {
                    continue;
                }
                let name = TopicName::parse(entry)?;
                if held.len() == max {
                    return Err(TopicError::TooMany {
                        count: count_distinct(text),
                        max,
                    });
                }
                Names::push(&mut names, name);
            }
        }
        names.map(Self).ok_or(TopicError::Missing)
    }

    /// A list of exactly the given names, which must be distinct and non-empty.
    pub fn from_names(names: Vec<TopicName>) -> Option<Self> {
        let distinct = names
            .iter()
            .enumerate()
            .all(|(i, n)| !names[..i].contains(n));
        (!names.is_empty() && distinct).then(|| Self(Names::of(names)))
    }

    /// The names, in the order first given.
    pub fn names(&self) -> &[TopicName] {
        self.0.as_slice()
    }

    /// How many distinct names the list holds (at least one).
    pub fn len(&self) -> usize {
        self.names().len()
    }

    /// Always false: a list holds at least one name. Here for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }

    /// Iterates over the names.
    pub fn iter(&self) -> std::slice::Iter<'_, TopicName> {
        self.names().iter()
    }

    /// Whether `name` is in the list.
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n.as_str() == name)
    }
}

impl fmt::Debug for TopicList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl fmt::Display for TopicList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name.as_str())?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a TopicList {
    type Item = &'a TopicName;
    type IntoIter = std::slice::Iter<'a, TopicName>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

fn count_distinct(text: &str) -> usize {
    let mut seen: Vec<&str> = Vec::new();
    for entry in entries(text).map(|e| e.trim_matches([' ', '\t'])) {
        if !seen.contains(&entry) {
            seen.push(entry);
        }
    }
    seen.len()
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use proptest::prelude::*;

    use super::*;

    fn check(input: &str, expect: Expect) {
        let actual = match TopicList::parse(input.as_bytes(), 3) {
            Ok(list) => format!("ok {list:?}"),
            Err(err) => format!("error: {err}"),
        };
        expect.assert_eq(&actual);
    }

    #[test]
    fn lists() {
        check("news", expect![[r#"ok ["news"]"#]]);
        check(" a , b,a,  c ", expect![[r#"ok ["a", "b", "c"]"#]]);
        check("a,a,a,a,a", expect![[r#"ok ["a"]"#]]);
        check(
            "user@example.com:inbox/1",
            expect![[r#"ok ["user@example.com:inbox/1"]"#]],
        );
        check("", expect![[r#"error: topic list "": entry 1 is empty"#]]);
        check(
            "a,,b",
            expect![[r#"error: topic list "a,,b": entry 2 is empty"#]],
        );
        check(
            "a, ",
            expect![[r#"error: topic list "a, ": entry 2 is empty"#]],
        );
        check(
            "ok,a b",
            expect![[
                r#"error: topic "a b": ' ' at byte 1 is not allowed; names use A-Z a-z 0-9 _ - . : / @"#
            ]],
        );
        check(
            "café",
            expect![[
                r#"error: topic "café": 'é' at byte 3 is not allowed; names use A-Z a-z 0-9 _ - . : / @"#
            ]],
        );
        check(
            "a,b,c,d",
            expect![[r#"error: 4 topics given; at most 3 are allowed in one request"#]],
        );
        check(
            &"x".repeat(129),
            expect![[
                r#"error: topic "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…": 129 bytes is longer than the 128 allowed"#
            ]],
        );
    }

    #[test]
    fn longest_name_and_most_topics_pass() {
        let name = "y".repeat(MAX_TOPIC_LEN);
        assert_eq!(TopicList::parse(name.as_bytes(), 1).unwrap().len(), 1);
        let list = (0..64)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(TopicList::parse(list.as_bytes(), 64).unwrap().len(), 64);
        let list = format!("{list},t64");
        assert_eq!(
            TopicList::parse(list.as_bytes(), 64),
            Err(TopicError::TooMany { count: 65, max: 64 })
        );
    }

    #[test]
    fn tenants_namespace_names_no_publisher_can_write() {
        let acme = Tenant::parse("acme").unwrap();
        let news = TopicName::parse("news").unwrap();
        let inside = news.in_tenant(&acme);
        assert_eq!(
            (inside.as_str(), inside.public_name(), inside.tenant()),
            ("acme~news", "news", Some("acme"))
        );
        assert_eq!((news.public_name(), news.tenant()), ("news", None));
        assert!(
            TopicName::parse("acme~news").is_err(),
            "a publisher cannot name it"
        );
        assert_eq!(TopicName::from_stored("acme~news"), Some(inside));
        assert_eq!(TopicName::from_stored("Acme~news"), None);
        assert!(
            Tenant::parse("Acme").is_err()
                && Tenant::parse("").is_err()
                && Tenant::parse(&"a".repeat(33)).is_err()
        );
    }

    #[test]
    fn json_round_trips_and_checks() {
        let list = TopicList::parse(b"a,b/c", 8).unwrap();
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, r#"["a","b/c"]"#);
        assert_eq!(serde_json::from_str::<TopicList>(&json).unwrap(), list);
        assert!(serde_json::from_str::<TopicList>(r#"["a b"]"#).is_err());
        assert!(serde_json::from_str::<TopicList>(r#"["a","a"]"#).is_err());
        assert!(serde_json::from_str::<TopicList>("[]").is_err());
    }

    #[test]
    fn repeated_values_join_and_not_utf8_is_refused() {
        let list = TopicList::parse_all([&b"a,b"[..], b"b,c"], 8).unwrap();
        assert_eq!(list.to_string(), "a,b,c");
        assert_eq!(TopicList::parse(b"\xff", 8), Err(TopicError::NotUtf8));
        assert_eq!(
            TopicList::parse_all(std::iter::empty(), 8),
            Err(TopicError::Missing)
        );
    }

    fn name_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:/@-]{1,128}"
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = TopicList::parse(&bytes, DEFAULT_MAX_TOPICS);
        }

        #[test]
        fn display_then_parse_round_trips(names in proptest::collection::vec(name_strategy(), 1..20)) {
            let list = TopicList::parse(names.join(" , ").as_bytes(), DEFAULT_MAX_TOPICS).unwrap();
            let again = TopicList::parse(list.to_string().as_bytes(), DEFAULT_MAX_TOPICS).unwrap();
            prop_assert_eq!(&list, &again);
            let mut distinct: Vec<&String> = Vec::new();
            for n in &names {
                if !distinct.contains(&n) {
                    distinct.push(n);
                }
            }
            prop_assert_eq!(list.len(), distinct.len());
            for (got, want) in list.iter().zip(distinct) {
                prop_assert_eq!(got.as_str(), want.as_str());
            }
        }

        /// However a list is built (parsed, from names, through serde, put in a tenant),
        /// the same names make an equal list that writes the same JSON and text, whether
        /// it holds one name inline or more in a vector.
        #[test]
        fn every_way_to_a_list_agrees(names in proptest::collection::vec(name_strategy(), 1..5)) {
            let parsed = TopicList::parse(names.join(",").as_bytes(), DEFAULT_MAX_TOPICS).unwrap();
            let distinct: Vec<TopicName> = parsed.iter().cloned().collect();
            let built = TopicList::from_names(distinct.clone()).unwrap();
            prop_assert_eq!(&parsed, &built);
            let json = serde_json::to_string(&parsed).unwrap();
            let texts: Vec<&str> = distinct.iter().map(TopicName::as_str).collect();
            prop_assert_eq!(&json, &serde_json::to_string(&texts).unwrap());
            let read: TopicList = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&read, &parsed);
            prop_assert_eq!(parsed.to_string(), texts.join(","));
            let tenant = Tenant::parse("acme").unwrap();
            let inside = parsed.in_tenant(&tenant);
            prop_assert_eq!(inside.len(), parsed.len());
            let each: Vec<TopicName> = distinct.iter().map(|n| n.in_tenant(&tenant)).collect();
            prop_assert_eq!(&inside, &TopicList::from_names(each).unwrap());
            // A list of one and a list of more never compare equal.
            if let Some(first) = distinct.first().filter(|_| distinct.len() > 1) {
                prop_assert_ne!(&TopicList::from_names(vec![first.clone()]).unwrap(), &parsed);
            }
        }

        /// One character outside the set, anywhere in an otherwise valid list, is refused
        /// naming the name, the character and where it is.
        #[test]
        fn one_bad_char_in_a_valid_list_is_refused_at_its_place(
            names in proptest::collection::vec(name_strategy(), 1..6),
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            bad in prop_oneof![Just(' '), Just('~'), Just('*'), Just('é'), Just('\u{0}'), Just('"')],
        ) {
            let mut names = names;
            let target = which.index(names.len());
            let mut name: Vec<char> = names[target].chars().collect();
            // Not at either end of a name: a space there would be trimmed as separator
            // padding, which is allowed.
            let index = 1 + at.index(name.len().max(1));
            if index >= name.len() {
                return Ok(());
            }
            name.insert(index, bad);
            names[target] = name.into_iter().collect();
            match TopicList::parse(names.join(",").as_bytes(), DEFAULT_MAX_TOPICS) {
                Err(TopicError::Name(TopicNameError::InvalidChar { found, index: at, .. })) => {
                    prop_assert_eq!(found, bad);
                    prop_assert_eq!(at, index);
                }
                // Made too long by the insertion (each name is up to 128 bytes).
                Err(TopicError::Name(TopicNameError::TooLong { .. })) => {}
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// The byte splitter cuts where `split(',')` does, whatever the text.
        #[test]
        fn entries_are_what_split_gives(text in "[a-z,é~ ]{0,40}") {
            prop_assert_eq!(entries(&text).collect::<Vec<_>>(), text.split(',').collect::<Vec<_>>());
        }

        /// A namespaced name's parts are what splitting at the separator gives.
        #[test]
        fn a_tenant_and_public_name_are_the_parts(tenant in "[a-z0-9-]{1,8}", name in name_strategy()) {
            let plain = TopicName::parse(&name).unwrap();
            prop_assert_eq!(plain.tenant(), None);
            prop_assert_eq!(plain.public_name(), name.as_str());
            let spaced = plain.in_tenant(&Tenant::parse(&tenant).unwrap());
            prop_assert_eq!(spaced.tenant(), Some(tenant.as_str()));
            prop_assert_eq!(spaced.public_name(), name.as_str());
        }

        #[test]
        fn parsed_names_obey_the_rules(text in "[ -~]{0,300}") {
            if let Ok(list) = TopicList::parse(text.as_bytes(), DEFAULT_MAX_TOPICS) {
                for name in &list {
                    prop_assert!(!name.as_str().is_empty() && name.as_str().len() <= MAX_TOPIC_LEN);
                    prop_assert!(name.as_str().chars().all(is_topic_char));
                }
            }
        }
    }
}
