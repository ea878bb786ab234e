//! CORS: which origins may call each group of routes from a browser, and the answers to
//! their preflights.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::{
    CorsOrigins,
    head::Headers,
    response::{Response, full},
};

/// The request headers a browser may send.
const ALLOW_HEADERS: &str = "authorization, content-type, x-sse-topic, x-sse-id, x-sse-event, x-sse-tenant, last-event-id, cache-control";

/// The `Origin` a request came with, if any: all [`allow`] needs of it.
pub(crate) fn origin(request: &impl Headers) -> Option<HeaderValue> {
    request
        .get("origin")
        .and_then(|value| HeaderValue::from_bytes(value).ok())
}

/// Adds `Access-Control-Allow-Origin` when the request's `origin` is allowed; says whether.
pub(crate) fn allow(
    origins: &CorsOrigins,
    origin: Option<&HeaderValue>,
    response: &mut Response,
) -> bool {
    let allowed = allowed(origins, origin);
    let headers = response.headers_mut();
    if allowed.vary {
        headers.insert(header::VARY, HeaderValue::from_static(VARY_ORIGIN));
    }
    match allowed.origin {
        Some(value) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            true
        }
        None => false,
    }
}

/// `Vary: Origin`'s value.
const VARY_ORIGIN: &str = "Origin";

/// The CORS headers an answer to a request from `origin` carries.
pub(crate) struct Allowed {
    /// `Vary: Origin`: the answer depends on the origin.
    vary: bool,
    /// `Access-Control-Allow-Origin`, when the origin is allowed.
    origin: Option<HeaderValue>,
}

/// The CORS headers for an answer to a request from `origin`.
pub(crate) fn allowed(origins: &CorsOrigins, origin: Option<&HeaderValue>) -> Allowed {
    // With a list, the answer depends on the Origin, whether it is allowed or not: a
    // cache must not hand one origin's answer to another.
    let vary = matches!(origins, CorsOrigins::List(_));
    let origin = origins
        .allow(origin.and_then(|o| o.to_str().ok()))
        .and_then(|allowed| HeaderValue::from_str(&allowed).ok());
    Allowed { vary, origin }
}

impl Allowed {
    /// The headers, as name and value.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let vary = self
            .vary
            .then_some((header::VARY.as_str().as_bytes(), VARY_ORIGIN.as_bytes()));
        let origin = self.origin.as_ref().map(|value| {
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN.as_str().as_bytes(),
                value.as_bytes(),
            )
        });
        vary.into_iter().chain(origin)
    }
}

/// Answers a preflight: 204, with the allowed methods and headers when the origin may.
pub(crate) fn preflight(
    origins: &CorsOrigins,
    request: &HeaderMap,
    methods: &'static str,
) -> Response {
    let mut response = full(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
    if allow(origins, request.get(header::ORIGIN), &mut response) {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    response
}
