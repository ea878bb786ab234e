//! API keys: who may publish, read the admin API or sign subscriber tokens, for which
//! topics, how fast; parsed from `SSE_PUBLISHER_API_KEYS` (full access) or a keys file,
//! checked from `Authorization: Bearer` in constant time.
//!
//! - `keys`: a key, its scopes and patterns, the keys file and the constant-time check;
//! - `pattern`: topic patterns (`billing:*`);
//! - `ring`: the keys in force, replaced when the keys file changes;
//! - `rate`: the publish rate buckets.

mod keys;
mod pattern;
mod rate;
mod ring;

use crate::head::Headers;
use serde::Deserialize;

pub use keys::{ApiKey, ApiKeys, Rate};
pub use pattern::{TopicPattern, TopicPatternError};
pub(crate) use rate::RateLimits;
pub use ring::KeyRing;

use crate::error::{ApiError, ErrorCode};

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
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Admin => "read the admin API",
            Scope::Sign => "sign subscriber tokens",
        }
    }
}

/// The credentials of `Authorization: Bearer <value>`; `None` without the header.
pub(crate) fn bearer(headers: &impl Headers) -> Result<Option<&[u8]>, ApiError> {
    let Some(value) = headers.get("authorization") else {
        return Ok(None);
    };
    match value.split_first_chunk::<7>() {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            Ok(Some(rest.trim_ascii()))
        }
        _ => Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            "the Authorization header must use the Bearer scheme: `Bearer <key>`",
        )),
    }
}
