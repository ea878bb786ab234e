//! One API key and what it may do, the keys file that lists them, and the check of a
//! request's `Authorization: Bearer` against them in constant time.

use std::{fmt, sync::Arc};

use crate::head::Headers;
use serde::Deserialize;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tideway_core::unix_millis;
use tideway_protocol::{Tenant, TopicList};

use super::{Scope, TopicPattern, bearer};
use crate::error::{ApiError, ErrorCode};

/// A token bucket's settings: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    /// Publishes per second, sustained.
    pub per_second: f64,
    /// Publishes allowed at once after a quiet spell (at least 1).
    #[serde(default = "one")]
    pub burst: f64,
}

fn one() -> f64 {
    1.0
}

/// The slowest rate a key may be given: one publish in about 17 minutes.
const MIN_RATE: f64 = 0.001;
/// The fastest rate and largest burst a key may be given.
const MAX_RATE: f64 = 1_000_000.0;

/// One API key and what it may do.
#[derive(Clone)]
pub struct ApiKey {
    /// A name for logs, metrics and tokens; never the secret.
    pub name: String,
    secret: Vec<u8>,
    scopes: Vec<Scope>,
    /// Empty means every topic.
    topics: Vec<TopicPattern>,
    /// Publishes per second, if limited.
    pub rate: Option<Rate>,
    /// When it stops being accepted, in milliseconds since the Unix epoch.
    pub expires_at: Option<u64>,
    /// The tenant whose namespace the key works in, if any.
    pub tenant: Option<Tenant>,
}

impl ApiKey {
    /// A key that may do everything (`SSE_PUBLISHER_API_KEYS`).
    pub fn full(name: String, secret: &str) -> Self {
        Self {
            name,
            secret: secret.as_bytes().to_vec(),
            scopes: vec![Scope::Publish, Scope::Admin, Scope::Sign],
            topics: Vec::new(),
            rate: None,
            expires_at: None,
            tenant: None,
        }
    }

    /// Whether the key has `scope`.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether every topic `pattern` matches is one the key may reach.
    pub fn covers(&self, pattern: &TopicPattern) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|mine| mine.covers(pattern))
    }

    /// Whether the key may reach `topic`.
    pub fn allows(&self, topic: &str) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|p| p.matches(topic))
    }

    /// Whether the key is bound to topic patterns (then every read it makes is too).
    pub(crate) fn is_bounded(&self) -> bool {
        !self.topics.is_empty()
    }

    /// Refuses the first of `topics` the key may not reach.
    pub(crate) fn check_topics(&self, topics: &TopicList, verb: &str) -> Result<(), ApiError> {
        match topics.iter().find(|t| !self.allows(t.as_str())) {
            None => Ok(()),
            Some(topic) => Err(ApiError::new(
                ErrorCode::TopicNotAllowed,
                format!(
                    "key {:?} may not {verb} topic {:?}; it is limited to {}",
                    self.name,
                    topic.as_str(),
                    self.topics
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret.
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// The keys file: `{"keys": [{"name", "key", "scopes", "topics", "publishRate", "expiresAt"}]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyEntry {
    name: String,
    key: String,
    #[serde(default = "least_scopes")]
    scopes: Vec<Scope>,
    #[serde(default)]
    topics: Vec<String>,
    publish_rate: Option<Rate>,
    expires_at: Option<u64>,
    tenant: Option<String>,
}

/// What a keys-file entry may do when it does not say: publish, nothing more. Admin
/// (which reads every topic and connection) and signing tokens must be asked for.
fn least_scopes() -> Vec<Scope> {
    vec![Scope::Publish]
}

/// The keys that may use the gateway.
#[derive(Clone, Default, Debug)]
pub struct ApiKeys {
    /// Shared: a request holds its key for as long as it runs, and a reference count is
    /// all a check costs (a copy was three allocations per publish).
    keys: Vec<Arc<ApiKey>>,
}

impl ApiKeys {
    /// Full-access keys from a comma-separated list (`SSE_PUBLISHER_API_KEYS`); blanks are
    /// skipped. They are named `key-1`, `key-2`, … in logs and tokens.
    pub fn parse(list: &str) -> Self {
        let keys = list
            .split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .enumerate()
            .map(|(i, key)| Arc::new(ApiKey::full(format!("key-{}", i + 1), key)))
            .collect();
        Self { keys }
    }

    /// Keys from the JSON of a keys file; says which entry is wrong and why.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: KeysFile = serde_json::from_str(text).map_err(|e| format!("keys file: {e}"))?;
        let mut keys: Vec<Arc<ApiKey>> = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            let name = entry.name;
            if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                return Err(format!(
                    "keys file: the name {name:?} must be 1 to 64 bytes with no control characters"
                ));
            }
            if entry.key.trim().is_empty() {
                return Err(format!("keys file: key {name:?} is empty"));
            }
            // Names say which key did what in logs, tokens (`kid`) and revocations: one
            // name, one key. And one secret, one key: which entry would it be?
            for other in &keys {
                if other.name == name {
                    return Err(format!("keys file: the name {name:?} is given to two keys"));
                }
                if other.secret == entry.key.trim().as_bytes() {
                    return Err(format!(
                        "keys file: keys {:?} and {name:?} have the same secret",
                        other.name
                    ));
                }
            }
            if entry.scopes.is_empty() {
                return Err(format!("keys file: key {name:?} has no scope"));
            }
            if let Some(rate) = entry.publish_rate
                && !((MIN_RATE..=MAX_RATE).contains(&rate.per_second)
                    && (1.0..=MAX_RATE).contains(&rate.burst))
            {
                return Err(format!(
                    "keys file: key {name:?}: publishRate needs perSecond from {MIN_RATE} to {MAX_RATE} and burst from 1 to {MAX_RATE} (got perSecond {}, burst {})",
                    rate.per_second, rate.burst
                ));
            }
            let topics = entry
                .topics
                .iter()
                .map(|p| TopicPattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("keys file: key {name:?}: {e}"))?;
            let tenant = entry
                .tenant
                .as_deref()
                .map(Tenant::parse)
                .transpose()
                .map_err(|e| format!("keys file: key {name:?}: {e}"))?;
            keys.push(Arc::new(ApiKey {
                tenant,
                name,
                secret: entry.key.trim().as_bytes().to_vec(),
                scopes: entry.scopes,
                topics,
                rate: entry.publish_rate,
                expires_at: entry.expires_at,
            }));
        }
        Ok(Self { keys })
    }

    /// These keys (from `--api-keys`) and those of `other` (a keys file); refuses a name
    /// or a secret the two share, naming it (never the secret).
    pub fn merged(mut self, other: ApiKeys) -> Result<Self, String> {
        for key in &other.keys {
            if let Some(plain) = self.keys.iter().find(|k| k.name == key.name) {
                return Err(format!(
                    "keys file: the name {:?} is already that of a key of --api-keys (they are named key-1, key-2, …); rename it",
                    plain.name
                ));
            }
            if let Some(plain) = self.keys.iter().find(|k| k.secret == key.secret) {
                return Err(format!(
                    "keys file: key {:?} has the same secret as {:?} of --api-keys",
                    key.name, plain.name
                ));
            }
        }
        self.keys.extend(other.keys);
        Ok(self)
    }

    /// When the next of these keys expires (milliseconds since the Unix epoch), if one
    /// still will.
    pub(crate) fn next_expiry(&self, now: u64) -> Option<u64> {
        self.keys
            .iter()
            .filter_map(|k| k.expires_at)
            .filter(|&at| at > now)
            .min()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key (then nothing can publish).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key named `name`, if it is still configured and unexpired.
    pub fn named(&self, name: &str) -> Option<&ApiKey> {
        let now = unix_millis();
        self.keys
            .iter()
            .find(|k| k.name == name && k.expires_at.is_none_or(|at| at > now))
            .map(|key| &**key)
    }

    /// The key whose secret is `candidate`. Every key is compared, each in constant time,
    /// so the answer's timing does not tell which key matched or how much of one.
    fn find(&self, candidate: &[u8]) -> Option<&Arc<ApiKey>> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, key) in self.keys.iter().enumerate() {
            let matches = key.secret.as_slice().ct_eq(candidate);
            index.conditional_assign(&(i as u64), matches);
            found |= matches;
        }
        bool::from(found).then(|| &self.keys[index as usize])
    }

    /// The key of a request's `Authorization: Bearer <key>`, if it may use `scope`.
    pub(crate) fn check(
        &self,
        headers: &impl Headers,
        scope: Scope,
    ) -> Result<Arc<ApiKey>, ApiError> {
        let Some(token) = bearer(headers)? else {
            return Err(ApiError::new(
                ErrorCode::MissingApiKey,
                "send an API key as `Authorization: Bearer <key>`",
            ));
        };
        let Some(key) = self.find(token) else {
            tracing::warn!("auth failure: unknown API key");
            return Err(ApiError::new(
                ErrorCode::InvalidApiKey,
                "the API key is not valid",
            ));
        };
        if key.expires_at.is_some_and(|at| at <= unix_millis()) {
            tracing::warn!(key = %key.name, "auth failure: expired API key");
            return Err(ApiError::new(
                ErrorCode::ExpiredApiKey,
                format!("the API key {:?} has expired", key.name),
            ));
        }
        if !key.scopes.contains(&scope) {
            tracing::warn!(key = %key.name, scope = ?scope, "auth failure: key lacks the scope");
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("key {:?} may not {}", key.name, scope.verb()),
            ));
        }
        Ok(key.clone())
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    fn check(
        keys: &ApiKeys,
        authorization: Option<&str>,
        scope: Scope,
    ) -> Result<String, &'static str> {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        keys.check(&headers, scope)
            .map(|k| k.name.clone())
            .map_err(|e| e.code.as_str())
    }

    #[test]
    fn bearer_keys() {
        let keys = ApiKeys::parse(" k1 ,, k2");
        assert_eq!(keys.len(), 2);
        assert_eq!(
            check(&keys, Some("Bearer k1"), Scope::Publish),
            Ok("key-1".into())
        );
        assert_eq!(
            check(&keys, Some("bearer   k2 "), Scope::Admin),
            Ok("key-2".into())
        );
        assert_eq!(
            check(&keys, Some("Bearer k3"), Scope::Publish),
            Err("invalid_api_key")
        );
        assert_eq!(
            check(&keys, Some("Bearer k"), Scope::Publish),
            Err("invalid_api_key")
        );
        assert_eq!(
            check(&keys, Some("Basic k1"), Scope::Publish),
            Err("invalid_api_key")
        );
        assert_eq!(
            check(&keys, Some("Bearer"), Scope::Publish),
            Err("invalid_api_key")
        );
        assert_eq!(check(&keys, None, Scope::Publish), Err("missing_api_key"));
        assert_eq!(
            check(&ApiKeys::default(), Some("Bearer "), Scope::Publish),
            Err("invalid_api_key")
        );
        assert!(!format!("{keys:?}").contains("k1"), "secrets never print");
    }

    #[test]
    fn scoped_keys_from_a_file() {
        let keys = ApiKeys::from_json(
            r#"{"keys": [
                {"name": "logs", "key": "s1", "scopes": ["publish"], "topics": ["logs:*", "audit"]},
                {"name": "ops", "key": "s2", "scopes": ["admin"]},
                {"name": "old", "key": "s3", "expiresAt": 1},
                {"name": "plain", "key": "s4"}
            ]}"#,
        )
        .unwrap();
        // An entry that names no scope may publish, and nothing more.
        assert_eq!(
            check(&keys, Some("Bearer s4"), Scope::Publish),
            Ok("plain".into())
        );
        for scope in [Scope::Admin, Scope::Sign] {
            assert_eq!(check(&keys, Some("Bearer s4"), scope), Err("forbidden"));
        }
        // A file key may not take the name or the secret of an --api-keys key.
        let file = |json: &str| ApiKeys::from_json(json).unwrap();
        let named = ApiKeys::parse("p1,p2")
            .merged(file(r#"{"keys": [{"name": "key-2", "key": "other"}]}"#))
            .unwrap_err();
        assert!(
            named.contains("\"key-2\" is already that of a key of --api-keys"),
            "{named}"
        );
        let same = ApiKeys::parse("p1")
            .merged(file(r#"{"keys": [{"name": "f", "key": "p1"}]}"#))
            .unwrap_err();
        assert!(
            same.contains("same secret") && !same.contains("p1\""),
            "{same}"
        );
        assert_eq!(
            ApiKeys::parse("p1")
                .merged(file(r#"{"keys": [{"name": "f", "key": "s"}]}"#))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            check(&keys, Some("Bearer s1"), Scope::Publish),
            Ok("logs".into())
        );
        assert_eq!(
            check(&keys, Some("Bearer s1"), Scope::Admin),
            Err("forbidden")
        );
        assert_eq!(
            check(&keys, Some("Bearer s2"), Scope::Admin),
            Ok("ops".into())
        );
        assert_eq!(
            check(&keys, Some("Bearer s2"), Scope::Sign),
            Err("forbidden")
        );
        assert_eq!(
            check(&keys, Some("Bearer s3"), Scope::Publish),
            Err("expired_api_key")
        );
        let logs = keys.named("logs").unwrap();
        assert!(logs.allows("logs:app") && logs.allows("audit"));
        assert!(!logs.allows("audit2") && !logs.allows("metrics"));
        assert!(
            keys.named("old").is_none(),
            "an expired key is not in force"
        );
        for (bad, says) in [
            (r#"{"keys": [{"name": "a", "key": ""}]}"#, "is empty"),
            (
                r#"{"keys": [{"name": "a", "key": "k1"}, {"name": "a", "key": "k2"}]}"#,
                "the name \"a\" is given to two keys",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k1"}, {"name": "b", "key": "k1"}]}"#,
                "keys \"a\" and \"b\" have the same secret",
            ),
            (r#"{"keys": [{"name": "", "key": "k"}]}"#, "1 to 64 bytes"),
            (
                r#"{"keys": [{"name": "a", "key": "k", "scopes": []}]}"#,
                "no scope",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k", "topics": ["a b*"]}]}"#,
                "topic pattern",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k", "topics": ["a*b"]}]}"#,
                "topic pattern",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k", "scopes": ["root"]}]}"#,
                "unknown variant",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k", "publishRate": {"perSecond": 0}}]}"#,
                "perSecond from",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k", "publishRate": {"perSecond": 1e-20}}]}"#,
                "got perSecond 0.00000000000000000001",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k", "publishRate": {"perSecond": 5, "burst": 1e300}}]}"#,
                "burst from 1",
            ),
            (
                r#"{"keys": [{"name": "a", "key": "k", "colour": "red"}]}"#,
                "unknown field",
            ),
        ] {
            let err = ApiKeys::from_json(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_authorization_values_never_panic_or_pass(value in proptest::collection::vec(any::<u8>(), 0..80)) {
            let keys = ApiKeys::parse("the-one-key");
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                let mut headers = HeaderMap::new();
                headers.insert(http::header::AUTHORIZATION, value.clone());
                let passed = keys.check(&headers, Scope::Publish).is_ok();
                let text = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
                prop_assert_eq!(passed, text.starts_with("bearer ") && value.as_bytes()[7..].trim_ascii() == b"the-one-key");
            }
        }

        #[test]
        fn arbitrary_patterns_and_key_files_never_panic(text in "\\PC{0,60}") {
            let _ = TopicPattern::parse(&text);
            let _ = ApiKeys::from_json(&text);
        }

        /// Keys files shaped like real ones, with hostile values in every field: reading
        /// one never panics, and every refusal says it is the keys file and, where an
        /// entry is at fault, names it.
        #[test]
        fn key_files_are_taken_whole_or_refused_by_entry(entries in proptest::collection::vec(key_entry(), 0..5)) {
            let json = format!(r#"{{"keys": [{}]}}"#, entries.join(","));
            match ApiKeys::from_json(&json) {
                Ok(keys) => prop_assert!(keys.len() <= entries.len()),
                Err(err) => {
                    prop_assert!(err.starts_with("keys file:"), "{err}");
                    prop_assert!(!err.contains("secret-"), "a secret was printed: {err}");
                }
            }
        }
    }

    /// One entry of a keys file, as JSON: names, secrets, scopes, topics, rates and
    /// tenants drawn from valid values and from noise.
    fn key_entry() -> impl Strategy<Value = String> {
        let text = prop_oneof!["[a-z0-9:*-]{0,12}", "\\PC{0,12}"];
        (
            prop_oneof!["[a-z]{1,4}", "\\PC{0,70}"],
            prop_oneof!["secret-[a-z]{1,4}", Just(String::new())],
            proptest::collection::vec(
                prop_oneof![Just("publish"), Just("admin"), Just("sign"), Just("root")],
                0..3,
            ),
            proptest::collection::vec(text.clone(), 0..3),
            proptest::option::of((
                prop_oneof![Just(0.0), Just(1e-20), 0.001f64..1e7],
                prop_oneof![Just(0.0), 1.0f64..1e7],
            )),
            proptest::option::of(text),
        )
            .prop_map(|(name, key, scopes, topics, rate, tenant)| {
                let mut entry = serde_json::json!({"name": name, "key": key});
                if !scopes.is_empty() {
                    entry["scopes"] = serde_json::json!(scopes);
                }
                if !topics.is_empty() {
                    entry["topics"] = serde_json::json!(topics);
                }
                if let Some((per_second, burst)) = rate {
                    entry["publishRate"] =
                        serde_json::json!({"perSecond": per_second, "burst": burst});
                }
                if let Some(tenant) = tenant {
                    entry["tenant"] = serde_json::json!(tenant);
                }
                entry.to_string()
            })
    }
}
