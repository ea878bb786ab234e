//! API keys: who may publish, read the admin API or sign subscriber tokens, for which
//! topics, how fast; parsed from `SSE_PUBLISHER_API_KEYS` (full access) or a keys file,
//! checked from `Authorization: Bearer` in constant time.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tideway_core::unix_millis;
use tideway_protocol::{Tenant, TopicList, TopicName};

use crate::error::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /v1/publish`.
    Publish,
    /// `GET /v1/admin/...` and the admin UI.
    Admin,
    /// `POST /v1/tokens`: sign subscriber tokens for private topics.
    Sign,
}

impl Scope {
    fn verb(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Admin => "read the admin API",
            Scope::Sign => "sign subscriber tokens",
        }
    }
}

/// A topic pattern: an exact name, `prefix*` (every name starting with `prefix`), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    prefix: String,
    wildcard: bool,
}

impl TopicPattern {
    /// Parses `logs:*`, `metrics:workspace123:*`, `orders` or `*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (prefix, wildcard) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        let valid =
            prefix.is_empty() && wildcard || TopicName::parse(&format!("{prefix}x")).is_ok();
        if !valid || prefix.contains('*') {
            return Err(format!(
                "topic pattern {text:?}: use a topic name, a prefix ending in *, or *"
            ));
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
                StatusCode::FORBIDDEN,
                "topic_not_allowed",
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
    keys: Vec<ApiKey>,
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
            .map(|(i, key)| ApiKey::full(format!("key-{}", i + 1), key))
            .collect();
        Self { keys }
    }

    /// Keys from the JSON of a keys file; says which entry is wrong and why.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: KeysFile = serde_json::from_str(text).map_err(|e| format!("keys file: {e}"))?;
        let mut keys: Vec<ApiKey> = Vec::with_capacity(file.keys.len());
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
            keys.push(ApiKey {
                tenant,
                name,
                secret: entry.key.trim().as_bytes().to_vec(),
                scopes: entry.scopes,
                topics,
                rate: entry.publish_rate,
                expires_at: entry.expires_at,
            });
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
    }

    /// The key whose secret is `candidate`. Every key is compared, each in constant time,
    /// so the answer's timing does not tell which key matched or how much of one.
    fn find(&self, candidate: &[u8]) -> Option<&ApiKey> {
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
    pub(crate) fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<ApiKey, ApiError> {
        let Some(token) = bearer(headers)? else {
            return Err(ApiError::unauthorized(
                "missing_api_key",
                "send an API key as `Authorization: Bearer <key>`",
            ));
        };
        let Some(key) = self.find(token) else {
            tracing::warn!("auth failure: unknown API key");
            return Err(ApiError::unauthorized(
                "invalid_api_key",
                "the API key is not valid",
            ));
        };
        if key.expires_at.is_some_and(|at| at <= unix_millis()) {
            tracing::warn!(key = %key.name, "auth failure: expired API key");
            return Err(ApiError::unauthorized(
                "expired_api_key",
                format!("the API key {:?} has expired", key.name),
            ));
        }
        if !key.scopes.contains(&scope) {
            tracing::warn!(key = %key.name, scope = ?scope, "auth failure: key lacks the scope");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("key {:?} may not {}", key.name, scope.verb()),
            ));
        }
        Ok(key.clone())
    }
}

/// The credentials of `Authorization: Bearer <value>`; `None` without the header.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&[u8]>, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    match value.as_bytes().split_first_chunk::<7>() {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            Ok(Some(rest.trim_ascii()))
        }
        _ => Err(ApiError::unauthorized(
            "invalid_api_key",
            "the Authorization header must use the Bearer scheme: `Bearer <key>`",
        )),
    }
}

/// The keys in force, replaceable while the server runs (a keys file that changed).
/// Cloning bumps a reference count.
#[derive(Clone)]
pub struct KeyRing {
    keys: Arc<RwLock<Arc<ApiKeys>>>,
    /// Counts replacements, so a watcher wakes on each (see [`KeyRing::changes`]).
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for KeyRing {
    fn default() -> Self {
        Self::new(ApiKeys::default())
    }
}

impl KeyRing {
    /// A ring holding `keys`.
    pub fn new(keys: ApiKeys) -> Self {
        Self {
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Wakes its holder each time the keys are replaced.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<ApiKeys> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `keys` in force for every request from now on.
    pub fn replace(&self, keys: ApiKeys) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        self.changed.send_modify(|n| *n += 1);
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({} keys)", self.current().len())
    }
}

/// Token buckets of the keys that have a publish rate.
#[derive(Default)]
pub(crate) struct RateLimits {
    /// A std mutex: one map lookup and a little arithmetic per publish.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimits {
    /// Takes one publish from `key`'s bucket, or says how long until one is there.
    pub(crate) fn take(&self, key: &ApiKey) -> Result<(), ApiError> {
        let Some(rate) = key.rate else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let (tokens, at) = buckets.entry(key.name.clone()).or_insert((rate.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * rate.per_second).min(rate.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        // Rates are bounded when the keys are read; a wait too long for a Duration is
        // still no reason to panic.
        let wait = Duration::try_from_secs_f64((1.0 - *tokens) / rate.per_second)
            .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
        let seconds = wait.as_secs() as u32 + u32::from(wait.subsec_nanos() > 0);
        Err(ApiError {
            retry_after: Some(seconds.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "key {:?} may publish {} times per second (burst {}); try again in {} ms",
                    key.name,
                    rate.per_second,
                    rate.burst,
                    wait.as_millis().max(1)
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
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
            .map(|k| k.name)
            .map_err(|e| e.code)
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

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_when_to_retry() {
        let mut key = ApiKey::full("limited".into(), "s");
        key.rate = Some(Rate {
            per_second: 0.5,
            burst: 2.0,
        });
        let limits = RateLimits::default();
        assert!(limits.take(&key).is_ok());
        assert!(limits.take(&key).is_ok());
        let refused = limits.take(&key).unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (429, "rate_limited")
        );
        assert_eq!(refused.retry_after, Some(2));
        assert!(
            limits.take(&ApiKey::full("free".into(), "t")).is_ok(),
            "no rate, no limit"
        );
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
