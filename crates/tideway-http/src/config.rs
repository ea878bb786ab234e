//! Settings of the HTTP transport.

use std::time::Duration;

use crate::{KeyRing, TokenConfig};

/// Which origins may read subscribe routes from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`*`).
    Any,
    /// Only these exact origins, such as `https://app.example.com`.
    List(Vec<String>),
}

impl CorsOrigins {
    /// Parses `*` or a comma-separated list of origins.
    pub fn parse(value: &str) -> Self {
        if value.trim() == "*" {
            return Self::Any;
        }
        Self::List(
            value
                .split(',')
                .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                .filter(|origin| !origin.is_empty())
                .collect(),
        )
    }

    /// Whether a request carrying `origin` may open a subscription that CORS does not
    /// guard (a WebSocket: browsers let any page open one and read it). A request with
    /// no `Origin` is not from a browser page and is let through, as is any origin
    /// under `*`.
    pub(crate) fn admits(&self, origin: Option<&http::HeaderValue>) -> bool {
        match (self, origin) {
            (Self::Any, _) | (_, None) => true,
            (Self::List(list), Some(origin)) => origin
                .to_str()
                .is_ok_and(|origin| list.iter().any(|o| o == origin)),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    pub(crate) fn allow(&self, origin: Option<&str>) -> Option<String> {
        match self {
            Self::Any => Some("*".to_owned()),
            Self::List(list) => {
                let origin = origin?;
                list.iter().any(|o| o == origin).then(|| origin.to_owned())
            }
        }
    }
}

/// Which origins may call each group of routes from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `/v1/stream` and `/v1/ws`; any origin by default.
    pub subscribe: CorsOrigins,
    /// `/v1/publish` and `/v1/tokens*`; none by default (publishers are servers).
    pub publish: CorsOrigins,
    /// `/v1/admin/*`; none by default (the admin UI is served from the gateway itself).
    pub admin: CorsOrigins,
}

impl Default for Cors {
    fn default() -> Self {
        Self {
            subscribe: CorsOrigins::Any,
            publish: CorsOrigins::List(Vec::new()),
            admin: CorsOrigins::List(Vec::new()),
        }
    }
}

/// Settings of the HTTP transport. Defaults are the ones `tideway --help` prints.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Keys that may publish, read the admin API or sign tokens; replaceable at run time.
    pub api_keys: KeyRing,
    /// Most topics one request may name.
    pub max_topics: usize,
    /// Largest publish body, in bytes (one event's data in a batch too).
    pub max_body: usize,
    /// Largest batch publish body, in bytes.
    pub max_batch_body: usize,
    /// Interval of the heartbeat comment on idle streams.
    pub heartbeat: Duration,
    /// The reconnection delay suggested to clients in `retry:`.
    pub retry: Duration,
    /// Origins allowed to call each group of routes from a browser.
    pub cors: Cors,
    /// How long a drain waits for streams and in-flight requests before giving up.
    pub drain_timeout: Duration,
    /// How long a client may take to send a request's headers, or a publish its body.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// How long a subscriber may leave written bytes unread once it is cut off (or, on
    /// WebSocket, any single write) before its connection is closed.
    pub write_timeout: Duration,
    /// Subscriber tokens and private topics.
    pub tokens: TokenConfig,
    /// Whether subscribes and publishes that this crate can read exactly are served
    /// without hyper (see `direct`): a connection whose first bytes are one bodiless
    /// subscribe head, and the plain `Content-Length` publishes of a kept-alive publisher.
    /// On by default; off only to compare the two paths, which must answer alike.
    pub direct: bool,
    /// Serve TLS (HTTP/2 and HTTP/1.1 by ALPN) with this certificate and key instead of
    /// plain HTTP/1.1.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            api_keys: KeyRing::default(),
            max_topics: tideway_protocol::DEFAULT_MAX_TOPICS,
            max_body: 64 * 1024,
            max_batch_body: 1024 * 1024,
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            cors: Cors::default(),
            drain_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            write_timeout: Duration::from_secs(10),
            tokens: TokenConfig::default(),
            direct: true,
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins() {
        assert_eq!(CorsOrigins::parse(" * "), CorsOrigins::Any);
        let list = CorsOrigins::parse("https://a.example, https://b.example/,");
        assert_eq!(
            list,
            CorsOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert_eq!(
            list.allow(Some("https://b.example")).as_deref(),
            Some("https://b.example")
        );
        assert_eq!(list.allow(Some("https://evil.example")), None);
        assert_eq!(list.allow(None), None);
        assert_eq!(CorsOrigins::Any.allow(None).as_deref(), Some("*"));
    }
}
