//! The accept loop and graceful shutdown.

use std::{future::Future, io, sync::Arc};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tideway_core::{Gateway, Store};
use tokio::net::TcpListener;

use tokio::sync::{Notify, mpsc, watch};

use crate::{
    HttpConfig,
    app::{App, Peer},
    direct::First,
};

/// A first head that took less than this before hyper took over keeps the shared
/// settings; a slower one gets hyper's header timeout shortened by the time it took (for
/// every head of that connection: hyper has one setting per connection).
const HEAD_TIME_SLACK: std::time::Duration = std::time::Duration::from_millis(10);

/// Serves `gateway` on `listener` until `shutdown` completes, then drains.
///
/// Draining stops accepting, refuses new streams and publishes with 503, tells every
/// open stream to reconnect elsewhere (a `tideway.drain` event after its queued events),
/// lets in-flight requests finish, and returns once every connection is closed or
/// `config.drain_timeout` has passed.
pub async fn run<S: Store>(
    listener: TcpListener,
    gateway: Gateway<S>,
    config: HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let drain_timeout = config.drain_timeout;
    let header_read_timeout = config.header_read_timeout;
    let direct = config.direct;
    // hyper's own cap on a request head sits well above ours, so heads between the two
    // get our JSON 431 and only absurd ones get hyper's bare one.
    let max_buf_size = (config.max_header_bytes * 2).max(8192) + 8192;
    let tideway = Tideway::new(gateway.clone(), config);
    let app = tideway.app.clone();
    // Each connection task holds a clone of `alive`; when all are dropped, `all_closed`
    // yields `None` and the drain is complete (mini-redis's shutdown pattern).
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let (stop, stopping) = watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(max_buf_size);
    let builder = Arc::new(builder);
    let tls = match &tideway.app.config.tls {
        Some(files) => Some(
            crate::tls::Certificates::load(files.clone())
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?,
        ),
        None => None,
    };
    let acceptor = tls
        .as_ref()
        .map(|certificates| tokio_rustls::TlsAcceptor::from(certificates.server_config()));
    let reloader = tls.map(|certificates| {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::tls::RELOAD_CHECK).await;
                certificates.reload_if_changed();
            }
        })
    });
    let secure = Arc::new(secure_builder(
        header_read_timeout,
        max_buf_size,
        &tideway.app.config,
    ));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or a peer that reset during the handshake:
                    // neither ends the server. A short pause lets descriptors free up.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Events are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let kill = Arc::new(Notify::new());
        let context = Peer {
            addr: peer,
            kill: kill.clone(),
            alive: alive.clone(),
        };
        let alive = alive.clone();
        let stopping = stopping.clone();
        if let Some(acceptor) = &acceptor {
            let (acceptor, secure) = (acceptor.clone(), secure.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(header_read_timeout, acceptor.accept(stream));
                match Box::pin(handshake).await {
                    Ok(Ok(stream)) => {
                        let protocol = match stream.get_ref().1.alpn_protocol() {
                            Some(b"h2") => Protocol::H2,
                            _ => Protocol::Http1Tls,
                        };
                        app.protocols.count(protocol);
                        tracing::debug!(peer = %peer, protocol = protocol.label(), "connection");
                        Box::pin(serve_secure(&secure, stream, app, context, stopping)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "no TLS handshake within the header timeout")
                    }
                }
                drop(alive);
            });
            continue;
        }
        app.protocols.count(Protocol::Http1);
        let builder = builder.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            // Each step's future is boxed: the task holds only the one in progress. A
            // direct subscriber's stream, which can last for days, leaves for a task of its
            // own that holds its writer alone, not this future's room for the timer of the
            // first read, the subscribe's store calls or hyper's connection (3.6 → 2.9 KiB
            // per idle subscriber).
            // The first request's head within the header timeout, as hyper would ask; a
            // connection still silent when the server stops is closed, as hyper closes
            // its idle ones.
            let mut stop = stopping.clone();
            let accepted = tokio::time::Instant::now();
            let first = Box::pin(async {
                tokio::select! {
                    first = tokio::time::timeout(
                        header_read_timeout,
                        crate::direct::take_first(&mut stream, direct),
                    ) => Some(first),
                    _ = stop.wait_for(|&stop| stop) => None,
                }
            })
            .await;
            let Some(first) = first else {
                drop(alive);
                return;
            };
            // A head's time starts when the connection is ready for it (the accept, or
            // the direct path's last answer), not when hyper takes over: a head that
            // trickles in gets one timeout, not two.
            let for_hyper = |waited: std::time::Duration| {
                if waited < HEAD_TIME_SLACK {
                    builder.clone()
                } else {
                    let mut shorter = (*builder).clone();
                    shorter.header_read_timeout(header_read_timeout.saturating_sub(waited));
                    Arc::new(shorter)
                }
            };
            match first {
                Ok(Ok(First::Subscribe(request))) => {
                    let response = Box::pin(app.subscribe_direct(*request, &context)).await;
                    // The stream gets a task of its own, holding its writer and nothing
                    // else: this one, with room for every other step, ends here.
                    tokio::spawn(crate::direct::serve(stream, response, context));
                }
                Ok(Ok(First::Publish)) => {
                    let served = Box::pin(crate::direct::publishes(
                        stream,
                        &app,
                        &context,
                        &stopping,
                        header_read_timeout,
                        accepted,
                    ))
                    .await;
                    if let Some(handover) = served {
                        let builder = for_hyper(handover.waited);
                        Box::pin(serve_hyper(&builder, handover.io, app, context, stopping)).await;
                    }
                }
                Ok(Ok(First::Other)) => {
                    let builder = for_hyper(accepted.elapsed());
                    let io = crate::direct::Rewound::new(stream);
                    Box::pin(serve_hyper(&builder, io, app, context, stopping)).await;
                }
                Ok(Err(err)) => {
                    tracing::debug!(peer = %peer, error = %err, "connection failed before its first request");
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "no request head within the header timeout")
                }
            }
            drop(alive);
        });
    }
    drop(listener);
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    let deadline = tokio::time::Instant::now() + drain_timeout;
    tracing::info!("draining: no longer accepting; finishing publishes in flight");
    // Connections close after their current request; streams are told to reconnect once
    // the publishes already accepted are delivered.
    let _ = stop.send(true);
    drop(alive);
    if tokio::time::timeout_at(deadline, gateway.drain())
        .await
        .is_err()
    {
        tracing::warn!("publishes still in flight at the drain timeout");
        gateway.end_subscriptions();
    }
    drop(tideway);
    tokio::select! {
        _ = all_closed.recv() => tracing::info!("drained"),
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!(timeout = ?drain_timeout, "drain timed out; closing the remaining connections");
        }
    }
    Ok(())
}

/// Which protocol a connection speaks, for `/metrics` and the logs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Protocol {
    /// HTTP/1.1 on plain TCP.
    Http1,
    /// HTTP/1.1 over TLS.
    Http1Tls,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
}

impl Protocol {
    pub(crate) const ALL: [Protocol; 3] = [Protocol::Http1, Protocol::Http1Tls, Protocol::H2];

    /// Its label in `/metrics` and the logs.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http1Tls => "http1-tls",
            Protocol::H2 => "h2",
        }
    }
}

/// Connections accepted, by protocol.
#[derive(Debug, Default)]
pub(crate) struct Protocols([std::sync::atomic::AtomicU64; 3]);

impl Protocols {
    fn count(&self, protocol: Protocol) {
        self.0[protocol as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn get(&self, protocol: Protocol) -> u64 {
        self.0[protocol as usize].load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// hyper's builder for TLS connections: HTTP/2 or HTTP/1.1, whichever ALPN chose, with
/// the plain listener's limits on heads.
fn secure_builder(
    header_read_timeout: std::time::Duration,
    max_buf_size: usize,
    config: &HttpConfig,
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(max_buf_size);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        // A stream is one subscription: a page may open many on one connection.
        .max_concurrent_streams(256)
        // Pings find connections whose peer went away without a word.
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    builder
}

/// Serves a TLS connection with hyper (HTTP/2 or HTTP/1.1) until it ends, is killed or,
/// once the server stops, finishes its requests in flight.
async fn serve_secure<S: Store>(
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    app: Arc<App<S>>,
    context: Peer,
    stopping: watch::Receiver<bool>,
) {
    let peer = context.addr;
    let kill = context.kill.clone();
    let service = service_fn(move |request| app.clone().handle(request, context.clone()));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    drive(connection, |c| c.graceful_shutdown(), peer, &kill, stopping).await;
}

/// Serves a connection with hyper until it ends, is killed (a subscriber cut off that
/// stopped reading) or, once the server stops, finishes its request in flight.
async fn serve_hyper<S: Store>(
    builder: &hyper::server::conn::http1::Builder,
    stream: crate::direct::Rewound,
    app: Arc<App<S>>,
    context: Peer,
    stopping: watch::Receiver<bool>,
) {
    let peer = context.addr;
    let kill = context.kill.clone();
    let service = service_fn(move |request| app.clone().handle(request, context.clone()));
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    drive(connection, |c| c.graceful_shutdown(), peer, &kill, stopping).await;
}

/// Runs a hyper connection to its end, closing it when `kill` is notified and asking it
/// to finish once the server stops.
async fn drive<C, E>(
    mut connection: std::pin::Pin<&mut C>,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    peer: std::net::SocketAddr,
    kill: &Notify,
    mut stopping: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut stop_asked = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(err) = ended {
                    tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
                }
                break;
            }
            () = kill.notified() => {
                tracing::info!(peer = %peer, "closed a connection whose subscriber stopped reading");
                break;
            }
            _ = stopping.wait_for(|&stop| stop), if !stop_asked => {
                // Finish the request in flight (a stream ends with its drain event), then
                // close instead of waiting for another.
                stop_asked = true;
                graceful(connection.as_mut());
            }
        }
    }
}

/// Tideway's routes as a handler, for a service that serves them beside its own (see
/// `examples/rust/embed`). [`run`] uses it too. Cloning is cheap.
///
/// An embedding service gives each request to [`Tideway::handle`] and serves the answer;
/// its connections need hyper's `with_upgrades()` for `/v1/ws`. What [`run`] adds on top —
/// the accept loop, closing the connection of a subscriber cut off for falling behind, and
/// the drain on shutdown — is the embedder's to do.
#[derive(Clone)]
pub struct Tideway<S> {
    app: Arc<App<S>>,
    /// Ends the subscriptions of revoked keys; stops when the last clone is dropped.
    _key_watch: Arc<KeyWatch>,
}

struct KeyWatch(tokio::task::JoinHandle<()>);

impl Drop for KeyWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<S: Store> Tideway<S> {
    /// The routes of `gateway` with `config`. Call it inside a tokio runtime: it starts
    /// the task that ends subscriptions whose signing key is no longer in force.
    pub fn new(gateway: Gateway<S>, config: HttpConfig) -> Self {
        let keys = config.api_keys.clone();
        let watched = gateway.clone();
        // Woken by what can take a key out of force — the keys being replaced (a keys
        // file reloaded) and the next key's expiry — not by a clock scanning every grant.
        let mut changes = keys.changes();
        let task = tokio::spawn(async move {
            loop {
                let current = keys.current();
                let ended = watched.revoke_keys(|name| {
                    current
                        .named(name)
                        .is_some_and(|k| k.may(crate::Scope::Sign))
                });
                if ended > 0 {
                    tracing::info!(subscriptions = ended, "ended subscriptions of revoked keys");
                }
                let now = tideway_core::unix_millis();
                let until_expiry = current
                    .next_expiry(now)
                    .map_or(std::time::Duration::from_secs(3600), |at| {
                        std::time::Duration::from_millis(at - now + 1)
                    });
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            // The ring is gone: nothing will change it any more.
                            tokio::time::sleep(until_expiry).await;
                        }
                    }
                    () = tokio::time::sleep(until_expiry) => {}
                }
            }
        });
        Self {
            app: Arc::new(App {
                gateway,
                config,
                auth_failures: Default::default(),
                rate_limits: Default::default(),
                followers: Default::default(),
                protocols: Default::default(),
                direct: Default::default(),
            }),
            _key_watch: Arc::new(KeyWatch(task)),
        }
    }

    /// Answers one request for a Tideway route (`/v1/...`, `/admin`, `/healthz`,
    /// `/readyz`, `/metrics`) from the client at `peer`; other paths get the JSON 404.
    pub async fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
        peer: std::net::SocketAddr,
    ) -> http::Response<crate::response::Body> {
        let (alive, _) = mpsc::channel(1);
        let context = Peer {
            addr: peer,
            kill: Arc::new(Notify::new()),
            alive,
        };
        match self.app.clone().handle(request, context).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The engine the routes serve, to publish from the embedding service's own handlers.
    pub fn gateway(&self) -> &Gateway<S> {
        &self.app.gateway
    }
}
