//! API keys: parsing `Authorization: Bearer` and comparing in constant time.

use std::fmt;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The keys that may publish and read the admin API.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
}

impl ApiKeys {
    /// Keys from a comma-separated list (`SSE_PUBLISHER_API_KEYS`); blanks are skipped.
    pub fn parse(list: &str) -> Self {
        Self {
            keys: list
                .split(',')
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(|key| key.as_bytes().to_vec())
                .collect(),
        }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key (then nothing can publish).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `candidate` is one of the keys. Every key is compared, each in constant
    /// time, so the answer's timing does not tell which key matched or how much of one.
    fn contains(&self, candidate: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0);
        for key in &self.keys {
            found |= key.as_slice().ct_eq(candidate);
        }
        found.into()
    }

    /// Checks a request's `Authorization: Bearer <key>`.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "missing_api_key",
                "send an API key as `Authorization: Bearer <key>`",
            ));
        };
        let value = value.as_bytes();
        let token = match value.split_first_chunk::<7>() {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
            _ => {
                return Err(ApiError::unauthorized(
                    "invalid_api_key",
                    "the Authorization header must use the Bearer scheme: `Bearer <key>`",
                ));
            }
        };
        if !self.contains(token) {
            tracing::warn!("auth failure: unknown API key");
            return Err(ApiError::unauthorized(
                "invalid_api_key",
                "the API key is not valid",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a key.
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_authorization_values_never_panic_or_pass(value in proptest::collection::vec(any::<u8>(), 0..80)) {
            let keys = ApiKeys::parse("the-one-key");
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                let mut headers = HeaderMap::new();
                headers.insert(http::header::AUTHORIZATION, value.clone());
                let passed = keys.check(&headers).is_ok();
                let text = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
                prop_assert_eq!(passed, text.starts_with("bearer ") && value.as_bytes()[7..].trim_ascii() == b"the-one-key");
            }
        }
    }

    fn check(keys: &ApiKeys, authorization: Option<&str>) -> Result<(), &'static str> {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        keys.check(&headers).map_err(|e| e.code)
    }

    #[test]
    fn bearer_keys() {
        let keys = ApiKeys::parse(" k1 ,, k2");
        assert_eq!(keys.len(), 2);
        assert_eq!(check(&keys, Some("Bearer k1")), Ok(()));
        assert_eq!(check(&keys, Some("bearer   k2 ")), Ok(()));
        assert_eq!(check(&keys, Some("Bearer k3")), Err("invalid_api_key"));
        assert_eq!(check(&keys, Some("Bearer k")), Err("invalid_api_key"));
        assert_eq!(check(&keys, Some("Basic k1")), Err("invalid_api_key"));
        assert_eq!(check(&keys, Some("Bearer")), Err("invalid_api_key"));
        assert_eq!(check(&keys, None), Err("missing_api_key"));
        assert_eq!(
            check(&ApiKeys::default(), Some("Bearer ")),
            Err("invalid_api_key")
        );
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys)");
    }
}
