//! What handlers read of a request's headers, whichever path read the request: hyper's
//! `HeaderMap`, or the direct path's head borrowed from its read buffer (`direct::RawHead`),
//! which builds no header map (its allocations and hashing were a fifth of the
//! instructions of a unicast publish; docs/performance.md).
//!
//! Every check that reads a header (the API key, the topics, the event's id and type, the
//! body's length, CORS, `Connection`) takes `&impl Headers`, so both paths pass through
//! the same rule.

use http::HeaderMap;

/// A request's (or response's) headers, read by name.
pub(crate) trait Headers {
    /// Every header in order, as name and value (names as sent: compare them without
    /// regard to case).
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// Every value of header `name` (lower case), in the order sent.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        Named {
            each: self.each(),
            name: name.as_bytes(),
        }
    }

    /// The first value of header `name` (lower case).
    fn get<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }
}

/// The values of the headers of one name. A type of its own rather than a filter's
/// closure: a dozen lookups read every head, and the closure's comparison was left out of
/// line or not depending on how the crate's code was split (docs/performance.md).
struct Named<'a, I> {
    each: I,
    name: &'a [u8],
}

impl<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>> Iterator for Named<'a, I> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        self.each
            .find(|(sent, _)| sent.eq_ignore_ascii_case(self.name))
            .map(|(_, value)| value)
    }
}

impl Headers for HeaderMap {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(http::HeaderValue::as_bytes)
    }
}

/// The size of a head as the head-size limit counts it: each header's name and value
/// with four bytes for `: ` and CRLF, and the request target.
pub(crate) fn head_size(headers: &impl Headers, target_len: usize) -> usize {
    headers
        .each()
        .map(|(name, value)| name.len() + value.len() + 4)
        .sum::<usize>()
        + target_len
}
