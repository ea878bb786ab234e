//! `tideway`: the gateway binary. Parses flags, starts the store and the engine, serves
//! HTTP until SIGTERM or Ctrl-C, then drains.
#![forbid(unsafe_code)]

mod config;
mod keys_file;
mod probe;

use anyhow::Context;
use clap::Parser;
use tideway_core::{CoreConfig, Gateway, NodeRecord, Store, unix_millis};
use tideway_http::{ApiKeys, Cors, CorsOrigins, HttpConfig, KeyRing, TlsFiles, TokenConfig};
use tideway_store_do::{DoConfig, DoStore, WorkerConfig, WorkerStore};
use tideway_store_memory::{MemoryConfig, MemoryStore};
use tideway_store_redis::{RedisClusterStore, RedisConfig, RedisStore};
use tokio::net::TcpListener;

use crate::config::{Adapter, Args, Command, LogFormat};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(wrong) = args.validate() {
        eprintln!("tideway: refusing to start:\n{wrong}");
        std::process::exit(2);
    }
    if let Some(Command::Probe { path }) = &args.command {
        let status = probe::probe(args.listen, path)?;
        println!("{status}");
        return Ok(());
    }
    init_logs(args.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let from_file = match &args.keys_file {
        Some(path) => keys_file::load(path)?,
        None => ApiKeys::default(),
    };
    let plain = args
        .api_keys
        .as_deref()
        .map(ApiKeys::parse)
        .unwrap_or_default();
    let api_keys = match plain.merged(from_file).map_err(|e| anyhow::anyhow!(e))? {
        keys if !keys.is_empty() => keys,
        _ => {
            let key = config::generate_key()?;
            // Printed once, on purpose: it is the only way to learn a generated key.
            eprintln!(
                "\n  No API key was configured (--api-keys / SSE_PUBLISHER_API_KEYS), so Tideway made one:\n\n      {key}\n\n  Publishers and the admin API send it as `Authorization: Bearer {key}`.\n  It lasts until this process exits; set SSE_PUBLISHER_API_KEYS to keep a key.\n"
            );
            ApiKeys::parse(&key)
        }
    };
    let hostname = config::hostname();
    let node = NodeRecord {
        id: args
            .node_id
            .clone()
            .unwrap_or_else(|| config::default_node_id(&hostname))
            .into(),
        advertise_host: args.advertise_host.clone().unwrap_or_else(config::own_ip),
        hostname,
        started_at: unix_millis(),
        ..NodeRecord::default()
    };
    let core = CoreConfig {
        queue_capacity: args.queue_capacity,
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        max_connections_per_subject: args.max_connections_per_subject,
    };
    let token_secret = match &args.token_secret {
        Some(secret) if !secret.is_empty() => secret.as_bytes().to_vec(),
        _ => {
            tracing::warn!(
                "no --token-secret: subscriber tokens are signed with a random secret of this process, so other nodes and restarts refuse them; set TIDEWAY_TOKEN_SECRET in a cluster"
            );
            config::generate_key()?.into_bytes()
        }
    };
    let ring = KeyRing::new(api_keys);
    if let Some(path) = &args.keys_file {
        keys_file::watch(path.clone(), args.api_keys.clone(), ring.clone());
    }
    let http = HttpConfig {
        api_keys: ring,
        max_topics: args.max_topics,
        max_body: args.max_body.0,
        max_batch_body: args.max_batch_body.0,
        heartbeat: args.heartbeat.0,
        retry: args.retry.0,
        cors: Cors {
            subscribe: CorsOrigins::parse(&args.cors_origins),
            publish: CorsOrigins::parse(&args.publish_cors_origins),
            admin: CorsOrigins::parse(&args.admin_cors_origins),
        },
        drain_timeout: args.drain_timeout.0,
        header_read_timeout: args.header_read_timeout.0,
        max_header_bytes: args.max_header_bytes.0,
        write_timeout: args.write_timeout.0,
        tokens: TokenConfig {
            secret: token_secret,
            private_prefix: args.private_prefix.clone(),
            max_ttl: args.token_max_ttl.0,
            ..TokenConfig::default()
        },
        direct: true,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
    };
    let listener = listen(args.listen).with_context(|| format!("listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, adapter = ?args.adapter, tls = args.tls_cert.is_some(), "tideway listening");
    match args.adapter {
        Adapter::Memory => {
            let store = MemoryStore::new(MemoryConfig {
                history: args.history,
                topic_grace: args.topic_grace.0,
            });
            serve_on(store, node, core, http, listener).await?;
        }
        Adapter::Do => match args.do_url.clone().filter(|u| !u.is_empty()) {
            Some(url) => {
                let store = WorkerStore::connect(WorkerConfig {
                    url: url.clone(),
                    secret: args.do_secret.clone().unwrap_or_default(),
                    ca_cert: args.do_ca_cert.clone(),
                    history: args.history,
                    topic_grace: args.topic_grace.0,
                    node_ttl: args.node_ttl.0,
                })
                .await
                .with_context(|| format!("connect to the Durable-Object Worker at {url}"))?;
                serve_on(store, node, core, http, listener).await?;
            }
            None => {
                let store = DoStore::new(DoConfig {
                    history: args.history,
                    topic_grace: args.topic_grace.0,
                    ..DoConfig::default()
                });
                serve_on(store, node, core, http, listener).await?;
            }
        },
        Adapter::Redis => {
            let redis = RedisConfig {
                url: args.redis_url.clone(),
                prefix: args.redis_prefix.clone(),
                history: args.history,
                topic_grace: args.topic_grace.0,
                node_ttl: args.node_ttl.0,
                ca_cert: args.redis_ca_cert.clone(),
            };
            if args.redis_cluster {
                let store = RedisClusterStore::connect(redis).await.with_context(|| {
                    format!("connect to the Redis Cluster at {}", args.redis_url)
                })?;
                serve_on(store, node, core, http, listener).await?;
            } else {
                let store = RedisStore::connect(redis)
                    .await
                    .with_context(|| format!("connect to Redis at {}", args.redis_url))?;
                serve_on(store, node, core, http, listener).await?;
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn serve_on<S: Store>(
    store: S,
    node: NodeRecord,
    core: CoreConfig,
    http: HttpConfig,
    listener: TcpListener,
) -> anyhow::Result<()> {
    let gateway = Gateway::start(store, node, core).await?;
    tideway_http::run(listener, gateway, http, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for SIGTERM; Ctrl-C still drains");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// How many connections the kernel may hold for us before we accept them; the kernel caps
/// it at `net.core.somaxconn`. tokio's `bind` asks for 128, which a burst of reconnecting
/// subscribers overflows: the dropped SYNs are retried a whole second later.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's `bind` does: a restarted gateway can listen while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
