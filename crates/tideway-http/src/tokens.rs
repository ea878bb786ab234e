//! Subscriber tokens for private topics: `POST /v1/tokens` signs them (HS256 JWTs),
//! `POST /v1/tokens/revoke` revokes them, and subscribe routes check them.

use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tideway_core::{Grant, Store, unix_millis};
use tideway_protocol::{Tenant, TopicList, query_value};

use crate::{
    Scope, TopicPattern,
    app::App,
    auth::bearer,
    error::{ApiError, ErrorCode},
    response::{Response, json},
};

/// Settings of subscriber tokens. Defaults are the ones `tideway --help` prints.
#[derive(Clone)]
pub struct TokenConfig {
    /// The HS256 secret every node of a cluster shares; empty disables tokens (private
    /// topics then admit nobody).
    pub secret: Vec<u8>,
    /// The audience tokens are issued for and must name (`aud`).
    pub audience: String,
    /// Topics starting with this prefix need a token.
    pub private_prefix: String,
    /// Lifetime of a token when the request names none.
    pub default_ttl: Duration,
    /// Longest lifetime a token may ask for.
    pub max_ttl: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            secret: Vec::new(),
            audience: "tideway".to_owned(),
            private_prefix: "private:".to_owned(),
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("TokenConfig")
            .field("audience", &self.audience)
            .field("private_prefix", &self.private_prefix)
            .field("default_ttl", &self.default_ttl)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

/// A token's claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Who it is for.
    sub: String,
    aud: String,
    /// Seconds since the Unix epoch.
    exp: u64,
    iat: u64,
    /// Its id, for revocation.
    jti: String,
    /// The topic patterns it grants.
    topics: Vec<String>,
    /// The name of the key that signed it.
    kid: String,
    /// The tenant of that key, whose namespace the token's topics are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignRequest {
    subject: String,
    topics: Vec<String>,
    ttl_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    token: String,
}

fn no_tokens() -> ApiError {
    ApiError::new(
        ErrorCode::TokensDisabled,
        "this gateway has no token secret (--token-secret), so it signs and accepts no tokens",
    )
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    let body = Limited::new(request.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|err| {
            ApiError::new(
                ErrorCode::InvalidBody,
                format!("could not read the body: {err}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|err| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("the body is not the JSON this route takes: {err}"),
        )
    })
}

/// `POST /v1/tokens`: a key with the `sign` scope gets a token for topics within its own.
pub(crate) async fn sign<S: Store>(
    app: &App<S>,
    request: Request<Incoming>,
) -> Result<Response, ApiError> {
    let key = app.authorize(request.headers(), Scope::Sign)?;
    let config = &app.config.tokens;
    if config.secret.is_empty() {
        return Err(no_tokens());
    }
    let wanted: SignRequest = read_json(request).await?;
    if wanted.subject.is_empty() || wanted.subject.len() > 128 {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "subject: 1 to 128 bytes",
        ));
    }
    if wanted.topics.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "topics: grant at least one topic or pattern",
        ));
    }
    for text in &wanted.topics {
        let pattern = TopicPattern::parse(text)
            .map_err(|e| ApiError::new(ErrorCode::InvalidTopic, e.to_string()))?;
        if !key.covers(&pattern) {
            return Err(ApiError::new(
                ErrorCode::TopicNotAllowed,
                format!(
                    "key {:?} may not grant {text:?}: it reaches only its own topics",
                    key.name
                ),
            ));
        }
    }
    let ttl = wanted
        .ttl_seconds
        .map_or(config.default_ttl, Duration::from_secs);
    if ttl.is_zero() || ttl > config.max_ttl {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            format!("ttlSeconds: between 1 and {}", config.max_ttl.as_secs()),
        ));
    }
    let now = unix_millis() / 1000;
    let claims = Claims {
        sub: wanted.subject,
        aud: config.audience.clone(),
        exp: now + ttl.as_secs(),
        iat: now,
        jti: token_id()?,
        topics: wanted.topics,
        kid: key.name.clone(),
        tenant: key.tenant.as_ref().map(|t| t.as_str().to_owned()),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&config.secret),
    )
    .map_err(|err| ApiError::new(ErrorCode::TokenFailed, err.to_string()))?;
    tracing::info!(key = %key.name, subject = %claims.sub, token = %claims.jti, "token signed");
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "token": token, "id": claims.jti, "expiresAt": claims.exp * 1000 }),
    ))
}

/// `POST /v1/tokens/revoke` with `{"token": "…"}`: refused from now on, and every
/// subscription it granted, on every node, ends with `tideway.revoked`.
pub(crate) async fn revoke<S: Store>(
    app: &App<S>,
    request: Request<Incoming>,
) -> Result<Response, ApiError> {
    let key = app.authorize(request.headers(), Scope::Sign)?;
    let config = &app.config.tokens;
    if config.secret.is_empty() {
        return Err(no_tokens());
    }
    let wanted: RevokeRequest = read_json(request).await?;
    let claims = decode(config, &wanted.token, false)?;
    // A key revokes only what it could have signed: its tenant's tokens, within its
    // topics. A key of the whole gateway (no tenant, no topic bound) revokes any.
    let whole_gateway = key.tenant.is_none() && !key.is_bounded();
    let own_tenant =
        whole_gateway || key.tenant.as_ref().map(|t| t.as_str()) == claims.tenant.as_deref();
    let within = claims
        .topics
        .iter()
        .all(|text| TopicPattern::parse(text).is_ok_and(|pattern| key.covers(&pattern)));
    if !own_tenant || !within {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "key {:?} may not revoke this token: it was not for the key's tenant and topics",
                key.name
            ),
        ));
    }
    app.gateway
        .revoke_token(&claims.jti, claims.exp * 1000)
        .await?;
    tracing::info!(token = %claims.jti, "token revoked");
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "revoked": claims.jti }),
    ))
}

/// What a subscriber's credentials give: the grant of its token (if it needs or sends
/// one) and the tenant whose namespace its topics are in.
pub(crate) struct Access {
    pub(crate) grant: Option<Grant>,
    pub(crate) tenant: Option<Tenant>,
}

/// The access of a subscription to `topics`. A token (from `Authorization: Bearer` or
/// `?token=`) is needed for private topics and must grant each of them; it also sets the
/// tenant. Without one, `?tenant=` (or `x-sse-tenant`) picks a tenant's public topics.
pub(crate) async fn access<S: Store>(
    app: &App<S>,
    headers: &HeaderMap,
    query: &str,
    topics: &TopicList,
) -> Result<Access, ApiError> {
    let config = &app.config.tokens;
    let named_tenant = match (headers.get("x-sse-tenant"), query_value(query, "tenant")) {
        (Some(value), _) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        (None, Some(value)) => Some(value.into_owned()),
        (None, None) => None,
    };
    let named_tenant = named_tenant
        .as_deref()
        .map(Tenant::parse)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::InvalidTenant, e.to_string()))?;
    let private: Vec<&str> = topics
        .iter()
        .map(|t| t.as_str())
        .filter(|t| t.starts_with(&config.private_prefix))
        .collect();
    let from_query = query_value(query, "token");
    let token = match (bearer(headers)?, from_query.as_deref()) {
        (Some(token), _) => String::from_utf8_lossy(token).into_owned(),
        (None, Some(token)) => token.to_owned(),
        (None, None) => {
            if let Some(first) = private.first() {
                return Err(ApiError::new(
                    ErrorCode::MissingToken,
                    format!(
                        "topic {first:?} is private: send a subscriber token as `Authorization: Bearer <token>` or `?token=`"
                    ),
                ));
            }
            return Ok(Access {
                grant: None,
                tenant: named_tenant,
            });
        }
    };
    if config.secret.is_empty() {
        return Err(no_tokens());
    }
    let claims = decode(config, &token, true)?;
    let in_force = app
        .config
        .api_keys
        .current()
        .named(&claims.kid)
        .is_some_and(|k| k.may(Scope::Sign));
    if !in_force || app.gateway.token_revoked(&claims.jti).await? {
        return Err(ApiError::new(
            ErrorCode::TokenRevoked,
            "this token was revoked, or the key that signed it was",
        ));
    }
    let patterns: Vec<TopicPattern> = claims
        .topics
        .iter()
        .filter_map(|p| TopicPattern::parse(p).ok())
        .collect();
    if let Some(topic) = private
        .iter()
        .find(|t| !patterns.iter().any(|p| p.matches(t)))
    {
        return Err(ApiError::new(
            ErrorCode::TopicNotGranted,
            format!(
                "the token does not grant topic {topic:?}; it grants {}",
                claims.topics.join(", ")
            ),
        ));
    }
    let tenant = claims
        .tenant
        .as_deref()
        .map(Tenant::parse)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::InvalidToken, e.to_string()))?;
    if named_tenant.is_some() && named_tenant != tenant {
        return Err(ApiError::new(
            ErrorCode::TenantNotGranted,
            "the token is for another tenant than the one asked for",
        ));
    }
    Ok(Access {
        grant: Some(Grant {
            token_id: claims.jti,
            key: claims.kid,
            subject: claims.sub,
            expires_at: claims.exp * 1000,
        }),
        tenant,
    })
}

fn decode(config: &TokenConfig, token: &str, check_expiry: bool) -> Result<Claims, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    validation.leeway = 0;
    validation.validate_exp = check_expiry;
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(&config.secret),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|err| match err.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::new(
            ErrorCode::TokenExpired,
            "the subscriber token has expired; ask for a new one",
        ),
        _ => {
            tracing::warn!(error = %err, "auth failure: invalid subscriber token");
            ApiError::new(
                ErrorCode::InvalidToken,
                format!("the subscriber token is not valid: {err}"),
            )
        }
    })
}

/// 128 random bits from the operating system, as hex: a token id cannot be guessed, so
/// nobody can revoke (or predict) another's token by its id.
fn token_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| {
        ApiError::new(
            ErrorCode::NoRandomness,
            format!("the operating system gave no randomness for a token id: {err}"),
        )
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
