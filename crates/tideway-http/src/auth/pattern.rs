//! Topic patterns: an exact name, `prefix*` or `*`, which bound what a key reaches.

use std::fmt;

use tideway_protocol::TopicName;

/// Why text is not a topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic pattern {0:?}: use a topic name, a prefix ending in *, or *")]
pub struct TopicPatternError(String);

/// A topic pattern: an exact name, `prefix*` (every name starting with `prefix`), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    prefix: String,
    wildcard: bool,
}

impl TopicPattern {
    /// Parses `logs:*`, `metrics:workspace123:*`, `orders` or `*`.
    pub fn parse(text: &str) -> Result<Self, TopicPatternError> {
        let (prefix, wildcard) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        let valid =
            prefix.is_empty() && wildcard || TopicName::parse(&format!("{prefix}x")).is_ok();
        if !valid || prefix.contains('*') {
            return Err(TopicPatternError(text.to_owned()));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            wildcard,
        })
    }

    /// Whether every topic `other` matches, this one matches too.
    pub fn covers(&self, other: &TopicPattern) -> bool {
        if self.wildcard {
            other.prefix.starts_with(&self.prefix)
        } else {
            !other.wildcard && other.prefix == self.prefix
        }
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        if self.wildcard {
            topic.starts_with(&self.prefix)
        } else {
            topic == self.prefix
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, if self.wildcard { "*" } else { "" })
    }
}
