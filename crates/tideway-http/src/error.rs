//! Errors as the HTTP contract shows them: a status and `{"error":{"code","message"}}`.

use http::{StatusCode, header};
use tideway_core::CoreError;

use crate::response::{Response, json};

/// Declares [`ErrorCode`]: each variant with its status and the code the body carries.
macro_rules! error_codes {
    ($($variant:ident => ($status:ident, $code:literal),)*) => {
        /// Every error code the HTTP API answers with, each with its one status: the only
        /// list of them (the OpenAPI document's is checked against it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $(
                #[doc = concat!("`", $code, "`")]
                $variant,
            )*
        }

        impl ErrorCode {
            /// All of them, by status.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The status it is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            /// The code as the body's `error.code` carries it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    BodyReadFailed => (BAD_REQUEST, "body_read_failed"),
    InvalidBody => (BAD_REQUEST, "invalid_body"),
    InvalidEvent => (BAD_REQUEST, "invalid_event"),
    InvalidId => (BAD_REQUEST, "invalid_id"),
    InvalidLastEventId => (BAD_REQUEST, "invalid_last_event_id"),
    InvalidParameter => (BAD_REQUEST, "invalid_parameter"),
    InvalidTenant => (BAD_REQUEST, "invalid_tenant"),
    InvalidTopic => (BAD_REQUEST, "invalid_topic"),
    InvalidUpgrade => (BAD_REQUEST, "invalid_upgrade"),
    MissingId => (BAD_REQUEST, "missing_id"),
    ExpiredApiKey => (UNAUTHORIZED, "expired_api_key"),
    InvalidApiKey => (UNAUTHORIZED, "invalid_api_key"),
    InvalidToken => (UNAUTHORIZED, "invalid_token"),
    MissingApiKey => (UNAUTHORIZED, "missing_api_key"),
    MissingToken => (UNAUTHORIZED, "missing_token"),
    TokenExpired => (UNAUTHORIZED, "token_expired"),
    TokenRevoked => (UNAUTHORIZED, "token_revoked"),
    Forbidden => (FORBIDDEN, "forbidden"),
    OriginNotAllowed => (FORBIDDEN, "origin_not_allowed"),
    TenantNotGranted => (FORBIDDEN, "tenant_not_granted"),
    TopicNotAllowed => (FORBIDDEN, "topic_not_allowed"),
    TopicNotGranted => (FORBIDDEN, "topic_not_granted"),
    AdminUiMissing => (NOT_FOUND, "admin_ui_missing"),
    NotFound => (NOT_FOUND, "not_found"),
    TopicNotFound => (NOT_FOUND, "topic_not_found"),
    MethodNotAllowed => (METHOD_NOT_ALLOWED, "method_not_allowed"),
    BodyTimeout => (REQUEST_TIMEOUT, "body_timeout"),
    BodyTooLarge => (PAYLOAD_TOO_LARGE, "body_too_large"),
    UpgradeRequired => (UPGRADE_REQUIRED, "upgrade_required"),
    RateLimited => (TOO_MANY_REQUESTS, "rate_limited"),
    TooManyConnections => (TOO_MANY_REQUESTS, "too_many_connections"),
    TooManyFollowers => (TOO_MANY_REQUESTS, "too_many_followers"),
    HeadersTooLarge => (REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
    TokenFailed => (INTERNAL_SERVER_ERROR, "token_failed"),
    Draining => (SERVICE_UNAVAILABLE, "draining"),
    NoRandomness => (SERVICE_UNAVAILABLE, "no_randomness"),
    StoreUnavailable => (SERVICE_UNAVAILABLE, "store_unavailable"),
    TokensDisabled => (SERVICE_UNAVAILABLE, "tokens_disabled"),
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    /// Methods to list in `Allow` (405 only).
    pub(crate) allow: Option<&'static str>,
    /// Seconds to put in `Retry-After` (429 and 503).
    pub(crate) retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            allow: None,
            retry_after: None,
        }
    }

    /// Its status, which its code decides.
    pub(crate) fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                ErrorCode::MethodNotAllowed,
                format!("this route answers {allow}"),
            )
        }
    }

    pub(crate) fn into_response(self) -> Response {
        self.respond(None)
    }

    /// The answer with one more field beside `error` (`name`: `value`), as a refused
    /// atomic batch lists each event's verdict.
    pub(crate) fn into_response_with(self, name: &str, value: serde_json::Value) -> Response {
        self.respond(Some((name, value)))
    }

    fn respond(self, extra: Option<(&str, serde_json::Value)>) -> Response {
        let status = self.status();
        let mut body = serde_json::json!({
            "error": { "code": self.code.as_str(), "message": self.message }
        });
        if let Some((name, value)) = extra {
            body[name] = value;
        }
        let mut response = json(status, &body);
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tideway\""),
            );
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::Draining => Self::new(ErrorCode::Draining, err.to_string()),
            CoreError::TooManyConnections { .. } => Self {
                retry_after: Some(1),
                ..Self::new(
                    ErrorCode::TooManyConnections,
                    format!("{err}; try again later"),
                )
            },
            CoreError::NotAttempted => Self::new(ErrorCode::StoreUnavailable, err.to_string()),
            CoreError::Store(source) => {
                tracing::warn!(error = %source, "state store error");
                Self::new(
                    ErrorCode::StoreUnavailable,
                    "the state store is unreachable; try again shortly",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_a_batch_never_attempted_is_a_503_that_says_to_send_it_again() {
        let refused = ApiError::from(CoreError::NotAttempted);
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.code.as_str(), "store_unavailable");
        assert!(
            refused.message.contains("send this one again after it"),
            "{}",
            refused.message
        );
    }
}
