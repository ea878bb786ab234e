//! The response body type and small builders of common answers.

use std::convert::Infallible;

use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Every route answers with this body: a full buffer, or an SSE stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A response of this crate.
pub(crate) type Response = http::Response<Body>;

/// A response with a whole body.
pub(crate) fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut response = http::Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    JsonAnswer::new(status, value).into_response()
}

/// A whole JSON answer before it is made a [`Response`]: the direct path writes it as it
/// is (its head and body in one buffer), sparing the response's header map and boxed
/// body on every publish.
pub(crate) struct JsonAnswer {
    pub(crate) status: StatusCode,
    /// The JSON document.
    pub(crate) body: Vec<u8>,
    /// Whether the connection ends after it (`Connection: close`).
    pub(crate) close: bool,
}

impl JsonAnswer {
    pub(crate) const CONTENT_TYPE: &'static str = "application/json";

    pub(crate) fn new(status: StatusCode, value: &impl serde::Serialize) -> Self {
        // Our reply types are plain structs of strings and numbers; serialising them into
        // a Vec cannot fail, and an empty body would show at once in tests if it did.
        Self::with_body(status, serde_json::to_vec(value).unwrap_or_default())
    }

    /// An answer whose JSON document `body` is written already.
    pub(crate) fn with_body(status: StatusCode, body: Vec<u8>) -> Self {
        Self {
            status,
            body,
            close: false,
        }
    }

    pub(crate) fn into_response(self) -> Response {
        let mut response = full(self.status, Self::CONTENT_TYPE, self.body);
        if self.close {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// A Server-Sent Events response around `body`: the content type, no caching, and no
/// buffering by proxies that honour `X-Accel-Buffering` (nginx).
pub(crate) fn event_stream(body: Body) -> Response {
    let mut response = http::Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    response
}
