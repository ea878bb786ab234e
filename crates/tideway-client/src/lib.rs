//! A Rust client for Tideway.
//!
//! [`Client::publish`] sends one event and tells whether it was accepted or dropped (no
//! topic had a subscriber). [`Client::subscribe`] opens a Server-Sent Events stream and
//! keeps it open: when the connection drops, or stays silent past the heartbeat timeout,
//! it reconnects with backoff and resumes after the last event it saw (`Last-Event-ID`), so
//! the caller sees each event once. `https://` gateways are checked against the system's
//! CA certificates, or those given to [`Client::trusting`].
//!
//! ```no_run
//! # async fn example() -> Result<(), tideway_client::ClientError> {
//! let client = tideway_client::Client::new("http://127.0.0.1:8080", Some("my-key"))?;
//! let mut news = client.subscribe(&["news"]).await?;
//! client.publish(&["news"], "evt-1", None, "hello").await?;
//! while let Some(message) = news.next().await? {
//!     println!("{message:?}");
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod publish;
mod subscribe;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

pub use publish::{BatchEvent, BatchOutcome, Published};
pub use subscribe::{Message, Subscription, SubscriptionOptions};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not `http://host:port` or `https://host:port`.
    #[error("the gateway URL {0:?} is not http://host[:port] or https://host[:port]")]
    BadUrl(String),
    /// The certificates to trust could not be used.
    #[error("the TLS certificates to trust cannot be used: {0}")]
    Tls(String),
    /// The gateway could not be reached.
    #[error("could not reach the gateway")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("the HTTP exchange with the gateway failed")]
    Http(#[source] hyper::Error),
    /// The gateway answered with an error.
    #[error("the gateway answered {status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code of the JSON error body.
        code: String,
        /// Its message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the gateway: {0}")]
    Protocol(String),
}

/// A gateway to publish to and subscribe from. Cloning is cheap.
#[derive(Clone)]
pub struct Client {
    host: String,
    authority: String,
    api_key: Option<String>,
    /// For `https://`: the TLS settings and the name the certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the gateway at `base` (`http://host:port`, or `https://host:port`
    /// checked against the system's CA certificates), with the API key publishers need
    /// (subscribers need none).
    pub fn new(base: &str, api_key: Option<&str>) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(base.to_owned());
        let uri: Uri = base.parse().map_err(|_| bad())?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        let host = uri.host().ok_or_else(bad)?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tls = if secure {
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|_| bad())?;
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system certificate rustls cannot parse is one fewer to trust.
                let _ = roots.add(cert);
            }
            Some((tls_config(roots)?, name))
        } else {
            None
        };
        Ok(Self {
            host: format!("{host}:{port}"),
            authority: uri.authority().map_or(host.to_owned(), |a| a.to_string()),
            api_key: api_key.map(str::to_owned),
            tls,
        })
    }

    /// The same client trusting only the CA certificates in `pem` for `https://` (a
    /// private CA, or the gateway's own self-signed certificate).
    pub fn trusting(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let Some((_, name)) = self.tls.take() else {
            return Err(ClientError::Tls("the gateway URL is not https://".into()));
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| ClientError::Tls(format!("not a PEM certificate ({e})")))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Tls("no PEM certificate given".into()));
        }
        self.tls = Some((tls_config(roots)?, name));
        Ok(self)
    }

    /// Sends one request on a new connection; returns the status and the whole body.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(u16, Bytes), ClientError> {
        let response = self.open(request).await?;
        let status = response.status().as_u16();
        Ok((status, whole_body(response).await?))
    }

    /// Sends one request on a new connection and hands back the response as it starts.
    async fn open(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let stream = TcpStream::connect(&self.host)
            .await
            .map_err(ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => exchange(stream, request).await,
            Some((config, name)) => {
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(ClientError::Connect)?;
                exchange(stream, request).await
            }
        }
    }
}

/// TLS settings trusting `roots`, speaking HTTP/1.1.
fn tls_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Sends `request` on `io` (one HTTP/1.1 exchange) and hands back the response as it
/// starts; the connection is driven in the background until it ends.
async fn exchange<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, ClientError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(ClientError::Http)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "connection to the gateway ended");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(ClientError::Http)
}

/// The whole body of `response`.
async fn whole_body(response: http::Response<hyper::body::Incoming>) -> Result<Bytes, ClientError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(ClientError::Http)?
        .to_bytes())
}

/// The error of an answer that is not a success, from its JSON body.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    ClientError::Api {
        status,
        code: value["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
        message: value["error"]["message"]
            .as_str()
            .unwrap_or_else(|| std::str::from_utf8(body).unwrap_or(""))
            .to_owned(),
    }
}

/// Doubles `delay` up to `max`.
fn backoff(delay: Duration, max: Duration) -> Duration {
    (delay * 2).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(Client::new("http://127.0.0.1:8080", None).is_ok());
        assert!(Client::new("http://localhost", None).is_ok());
        assert!(Client::new("https://example.com", None).is_ok());
        assert!(
            Client::new("http://localhost", None)
                .unwrap()
                .trusting(b"")
                .is_err(),
            "trusting a CA is for https"
        );
        for bad in ["127.0.0.1:8080", "ftp://example.com", "not a url"] {
            assert!(
                matches!(Client::new(bad, None), Err(ClientError::BadUrl(_))),
                "{bad}"
            );
        }
        assert_eq!(
            backoff(Duration::from_secs(8), Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }
}
