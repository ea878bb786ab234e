//! Query-string values, for clients that cannot set headers (EventSource).

use std::borrow::Cow;

/// Every value of `key` in a URL query string (`a=1&a=2`), percent-decoded, in order.
///
/// Bytes that are not UTF-8 after decoding become U+FFFD, which no topic or id rule
/// accepts, so a bad value is still refused with a clear error further on.
pub fn query_values<'q>(query: &'q str, key: &str) -> Vec<Cow<'q, str>> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// The first value of `key` in a URL query string, percent-decoded.
pub fn query_value<'q>(query: &'q str, key: &str) -> Option<Cow<'q, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_queries_never_panic(query in "\\PC{0,200}", key in "[a-zA-Z]{1,8}") {
            let values = query_values(&query, &key);
            prop_assert_eq!(query_value(&query, &key), values.first().cloned());
        }

        #[test]
        fn encoded_values_come_back(value in "\\PC{0,50}") {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("topic", &value)
                .append_pair("other", "x")
                .finish();
            prop_assert_eq!(query_values(&query, "topic"), [value.as_str()]);
        }
    }

    #[test]
    fn repeated_and_encoded_values() {
        let q = "topic=a%2Cb&x=1&topic=c+d&lastEventId=7";
        assert_eq!(query_values(q, "topic"), ["a,b", "c d"]);
        assert_eq!(query_value(q, "lastEventId").as_deref(), Some("7"));
        assert_eq!(query_value(q, "missing"), None);
        assert_eq!(query_values("topic=%FF", "topic"), ["\u{fffd}"]);
    }
}
