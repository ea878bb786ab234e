//! A Rust client for Tideway.
//!
//! [`Client::publish`] sends one event and tells whether it was accepted or dropped (no
//! topic had a subscriber). [`Client::subscribe`] opens a Server-Sent Events stream and
//! keeps it open: when the connection drops, or stays silent past the heartbeat timeout,
//! it reconnects with backoff and resumes after the last event it saw (`Last-Event-ID`), so
//! the caller sees each event once. `https://` gateways are checked against the system's
//! CA certificates, or those given to [`Client::trusting`].
//!
//! Publishes share kept-alive connections, give up on an exchange after
//! [`Client::timeout`] (10 s), and are sent again after a failure that may pass — the
//! gateway unreachable, a broken or timed-out exchange, 429 or 5xx — up to
//! [`Client::retries`] times (3), waiting what `Retry-After` says or a random time up to
//! 100 ms doubling to 5 s. A retry carries the same id, so the gateway answers it as the
//! first and delivers the event once.
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
//!
//! Reconnects wait a random time below a ceiling that starts at the gateway's `retry:`
//! hint and doubles per failed try up to 30 s ("full jitter"), and the first connect is
//! retried the same way: [`Client::subscribe`] returns once a stream is open and fails
//! only on a refusal. A [`TokenProvider`] is asked for a subscriber token before the first
//! connect and again after `tideway.revoked` or a 401; the state goes to
//! [`SubscriptionOptions::on_state`]. The rules are those of every Tideway client
//! (`docs/clients.md`).
//!
//! ```no_run
//! # async fn example() -> Result<(), tideway_client::ClientError> {
//! use std::{sync::Arc, time::Duration};
//! use tideway_client::{Client, Message, SubscriptionOptions, TokenProvider};
//!
//! // A backend signs tokens with a key that has the `sign` scope...
//! let signer = Client::new("http://127.0.0.1:8080", Some("signing-key"))?;
//! let provider: TokenProvider = Arc::new(move || {
//!     let signer = signer.clone();
//!     Box::pin(async move {
//!         signer
//!             .create_token("user-42", &["private:user42:*"], Duration::from_secs(900))
//!             .await
//!             .map_err(|e| e.to_string())
//!     })
//! });
//! // ...and a subscriber of private topics asks for one whenever it needs it.
//! let options = SubscriptionOptions {
//!     token_provider: Some(provider),
//!     on_state: Some(Arc::new(|state| eprintln!("{state}"))),
//!     ..SubscriptionOptions::default()
//! };
//! let client = Client::new("http://127.0.0.1:8080", None)?;
//! let mut inbox = client
//!     .subscribe_with(&["private:user42:inbox"], options)
//!     .await?;
//! while let Some(message) = inbox.next().await? {
//!     if let Message::Gap { topics, .. } = &message {
//!         eprintln!("refetch {topics:?}: events may be missing");
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod backoff;
mod publish;
mod subscribe;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

pub use backoff::{backoff_delay, retry_after};
pub use publish::{BatchEvent, BatchOutcome, Published};
pub use subscribe::{ConnectionState, Message, Subscription, SubscriptionOptions, TokenProvider};

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
        /// The wait the gateway asked for (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the gateway: {0}")]
    Protocol(String),
    /// No answer within the client's timeout (after its retries).
    #[error("no answer from the gateway within {0:?}")]
    Timeout(Duration),
    /// The token provider failed.
    #[error("the token provider failed: {0}")]
    Token(String),
    /// The subscription was closed.
    #[error("the subscription is closed")]
    Closed,
}

impl ClientError {
    /// Whether the same request may succeed if sent again: the gateway was unreachable,
    /// the exchange broke or timed out, or it answered 408, 429 or 5xx. A publish retried
    /// with its id is answered as the first one was and delivered once.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect(_) | ClientError::Http(_) | ClientError::Timeout(_) => true,
            ClientError::Api { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// A gateway to publish to and subscribe from. Cloning is cheap.
#[derive(Clone)]
pub struct Client {
    host: String,
    authority: String,
    api_key: Option<String>,
    /// For `https://`: the TLS settings and the name the certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Idle kept-alive connections for publishing.
    pool: Arc<std::sync::Mutex<Vec<Sender>>>,
    /// How long one exchange may take.
    timeout: Duration,
    /// How many times a publish is sent again after a retryable failure.
    retries: u32,
}

/// One kept-alive HTTP/1.1 connection's request half.
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle connections kept per client.
const POOL: usize = 8;
/// The first retry's longest wait; it doubles up to [`RETRY_CAP`].
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

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
            pool: Arc::default(),
            timeout: Duration::from_secs(10),
            retries: 3,
        })
    }

    /// The same client giving up on one exchange after `timeout` (10 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client sending a publish again up to `retries` times (3 by default) after
    /// a retryable failure ([`ClientError::is_retryable`]), with the same id, waiting a
    /// random time up to 100 ms doubling to 5 s, or what `Retry-After` says.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
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

    /// Sends the request `build` makes, on a kept-alive connection, within the timeout,
    /// again after a retryable failure (see [`Client::retries`]); returns the status, the
    /// whole body and `Retry-After`, or the last failure.
    async fn send(
        &self,
        build: impl Fn() -> Result<Request<Full<Bytes>>, ClientError>,
    ) -> Result<(u16, Bytes), ClientError> {
        let mut attempt = 0;
        loop {
            let outcome = match tokio::time::timeout(self.timeout, self.exchange(build()?)).await {
                Ok(Ok((status, body, retry_after))) => {
                    let err = api_error(status, &body, retry_after);
                    if !err.is_retryable() {
                        return Ok((status, body));
                    }
                    (err, retry_after)
                }
                Ok(Err(err)) => (err, None),
                Err(_) => (ClientError::Timeout(self.timeout), None),
            };
            let (err, retry_after) = outcome;
            if attempt >= self.retries || !err.is_retryable() {
                return Err(err);
            }
            let wait = retry_after.unwrap_or_else(|| {
                backoff::backoff_delay(attempt, RETRY_BASE, RETRY_CAP, backoff::random_fraction())
            });
            tracing::debug!(error = %err, ?wait, attempt, "retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One exchange on an idle kept-alive connection (or a new one), which goes back to
    /// the pool once its answer is read.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes, Option<Duration>), ClientError> {
        let idle = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            std::iter::from_fn(|| pool.pop()).find(|s| !s.is_closed())
        };
        let mut sender = match idle {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        sender.ready().await.map_err(ClientError::Http)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(ClientError::Http)?;
        let status = response.status().as_u16();
        let retry_after = answer_retry_after(&response);
        let body = whole_body(response).await?;
        if !sender.is_closed() {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL {
                pool.push(sender);
            }
        }
        Ok((status, body, retry_after))
    }

    /// A new connection to the gateway (TLS for `https://`), driven in the background.
    async fn connect(&self) -> Result<Sender, ClientError> {
        let stream = TcpStream::connect(&self.host)
            .await
            .map_err(ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => handshake(stream).await,
            Some((config, name)) => {
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(ClientError::Connect)?;
                handshake(stream).await
            }
        }
    }

    /// Sends one request on a new connection and hands back the response as it starts.
    async fn open(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let mut sender = self.connect().await?;
        sender
            .send_request(request)
            .await
            .map_err(ClientError::Http)
    }
}

/// What the answer's `Retry-After` asks for, at most a minute.
fn answer_retry_after<B>(response: &http::Response<B>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    backoff::retry_after(value, Duration::from_secs(60), std::time::SystemTime::now())
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

/// An HTTP/1.1 connection on `io`, driven in the background until it ends.
async fn handshake<I>(io: I) -> Result<Sender, ClientError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(ClientError::Http)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "connection to the gateway ended");
        }
    });
    Ok(sender)
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
fn api_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> ClientError {
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
        retry_after,
    }
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
    }
}
