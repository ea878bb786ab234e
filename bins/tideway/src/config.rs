//! Flags and environment variables of `tideway`, and the values derived at start.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use clap::{Parser, ValueEnum};

/// Tideway: publishers POST events over HTTP, clients receive them over Server-Sent Events.
#[derive(Debug, Parser)]
#[command(name = "tideway", version, about, max_term_width = 100)]
pub(crate) struct Args {
    /// Without a command, `tideway` runs the gateway.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// Address and port to listen on.
    #[arg(long, env = "TIDEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub(crate) listen: SocketAddr,

    /// Serve HTTPS with this certificate chain (PEM, leaf first): HTTP/2 and HTTP/1.1 by
    /// ALPN. Read again when the file changes. Needs --tls-key.
    #[arg(long, env = "TIDEWAY_TLS_CERT")]
    pub(crate) tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TIDEWAY_TLS_KEY")]
    pub(crate) tls_key: Option<std::path::PathBuf>,

    /// Comma-separated API keys for publishers and the admin API. Without one, a key is
    /// generated and printed at start.
    #[arg(long, env = "SSE_PUBLISHER_API_KEYS", hide_env_values = true)]
    pub(crate) api_keys: Option<String>,

    /// A JSON file of scoped API keys (see docs/security.md), reloaded when it changes;
    /// its keys join those of --api-keys.
    #[arg(long, env = "TIDEWAY_KEYS_FILE")]
    pub(crate) keys_file: Option<std::path::PathBuf>,

    /// The HS256 secret of subscriber tokens, at least 32 bytes; every node of a cluster
    /// needs the same one [default: random, for this process only].
    #[arg(long, env = "TIDEWAY_TOKEN_SECRET", hide_env_values = true)]
    pub(crate) token_secret: Option<String>,

    /// Topics starting with this prefix need a subscriber token.
    #[arg(long, env = "TIDEWAY_PRIVATE_PREFIX", default_value = "private:")]
    pub(crate) private_prefix: String,

    /// Longest lifetime a subscriber token may be given.
    #[arg(long, env = "TIDEWAY_TOKEN_MAX_TTL", default_value = "24h")]
    pub(crate) token_max_ttl: Seconds,

    /// Where shared state lives: `memory` keeps it in this process (one node); `redis`
    /// shares it with every node using the same Redis; `do` keeps it in Durable Objects,
    /// on the Worker at `--do-url` (shared by every node using it) or, without it,
    /// emulated in this process.
    #[arg(long, env = "TIDEWAY_ADAPTER", value_enum, default_value = "memory")]
    pub(crate) adapter: Adapter,

    /// The Redis of `--adapter redis`.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub(crate) redis_url: String,

    /// For a `rediss://` (TLS) Redis: the CA certificates (PEM) its certificate must chain
    /// to, instead of the system's.
    #[arg(long, env = "TIDEWAY_REDIS_CA_CERT")]
    pub(crate) redis_ca_cert: Option<std::path::PathBuf>,

    /// Use Redis Cluster: `--redis-url` lists seed nodes, comma-separated. Each topic is
    /// ordered on its own shard (sharded pub/sub, Redis 7); see docs/cluster.md for what
    /// changes from one Redis.
    #[arg(long, env = "TIDEWAY_REDIS_CLUSTER")]
    pub(crate) redis_cluster: bool,

    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    #[arg(long, env = "TIDEWAY_REDIS_PREFIX", default_value = "tideway:")]
    pub(crate) redis_prefix: String,

    /// With `--adapter do`: the Durable-Object Worker (`worker/`, on Cloudflare or
    /// workerd) as `http(s)://host[:port]`. Without it, `do` emulates the objects in this
    /// process (one node).
    #[arg(long, env = "TIDEWAY_DO_URL")]
    pub(crate) do_url: Option<String>,

    /// The secret the Worker at `--do-url` was given as its `TIDEWAY_DO_SECRET`.
    #[arg(long, env = "TIDEWAY_DO_SECRET", hide_env_values = true)]
    pub(crate) do_secret: Option<String>,

    /// For an `https://` Worker: the CA certificates (PEM) its certificate must chain
    /// to, instead of the system's.
    #[arg(long, env = "TIDEWAY_DO_CA_CERT")]
    pub(crate) do_ca_cert: Option<std::path::PathBuf>,

    /// How long a node counts as alive after its last heartbeat to the shared store
    /// (Redis or the Worker); a node that dies leaves the shared state this long after
    /// its last heartbeat.
    #[arg(long, env = "TIDEWAY_NODE_TTL", default_value = "5s")]
    pub(crate) node_ttl: Seconds,

    /// This node's id in the cluster [default: hostname and a random suffix].
    #[arg(long, env = "TIDEWAY_NODE_ID")]
    pub(crate) node_id: Option<String>,

    /// Host or IP other nodes and operators reach this node at [default: the node's own IP].
    #[arg(long, env = "TIDEWAY_ADVERTISE_HOST")]
    pub(crate) advertise_host: Option<String>,

    /// Interval of the heartbeat comment on idle streams.
    #[arg(long, env = "TIDEWAY_HEARTBEAT", default_value = "15s")]
    pub(crate) heartbeat: Seconds,

    /// Events kept per topic for resume and the admin tail.
    #[arg(long, env = "TIDEWAY_HISTORY", default_value_t = 1000)]
    pub(crate) history: usize,

    /// How long a topic whose last connection left still counts as live and keeps its
    /// history (0s drops it at once).
    #[arg(long, env = "TIDEWAY_TOPIC_GRACE", default_value = "0s")]
    pub(crate) topic_grace: Seconds,

    /// Largest publish body (B, KiB, MiB); in a batch, the largest event data.
    #[arg(long, env = "TIDEWAY_MAX_BODY", default_value = "64KiB")]
    pub(crate) max_body: Size,

    /// Largest batch publish body (`POST /v1/publish/batch`, up to 1,000 events).
    #[arg(long, env = "TIDEWAY_MAX_BATCH_BODY", default_value = "1MiB")]
    pub(crate) max_batch_body: Size,

    /// Origins allowed to read subscribe routes from a browser: `*` or a comma-separated list.
    #[arg(long, env = "TIDEWAY_CORS_ORIGINS", default_value = "*")]
    pub(crate) cors_origins: String,

    /// Origins allowed to publish and sign tokens from a browser: `*`, a list, or empty
    /// for none.
    #[arg(long, env = "TIDEWAY_PUBLISH_CORS_ORIGINS", default_value = "")]
    pub(crate) publish_cors_origins: String,

    /// Origins allowed to call the admin API from a browser (the admin UI needs none).
    #[arg(long, env = "TIDEWAY_ADMIN_CORS_ORIGINS", default_value = "")]
    pub(crate) admin_cors_origins: String,

    /// Most topics one request may name.
    #[arg(long, env = "TIDEWAY_MAX_TOPICS", default_value_t = 64)]
    pub(crate) max_topics: usize,

    /// Events queued per connection before it counts as a slow consumer and is cut off.
    #[arg(long, env = "TIDEWAY_QUEUE_CAPACITY", default_value_t = 1024)]
    pub(crate) queue_capacity: usize,

    /// Most subscriber connections (SSE and WebSocket) this node holds; 0 for no limit.
    #[arg(long, env = "TIDEWAY_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub(crate) max_connections: usize,

    /// Most subscriber connections from one client IP; 0 for no limit (behind a load
    /// balancer every client has its address).
    #[arg(long, env = "TIDEWAY_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub(crate) max_connections_per_ip: usize,

    /// Most subscriber connections of one token subject; 0 for no limit.
    #[arg(long, env = "TIDEWAY_MAX_CONNECTIONS_PER_SUBJECT", default_value_t = 0)]
    pub(crate) max_connections_per_subject: usize,

    /// Largest request line and headers (B, KiB).
    #[arg(long, env = "TIDEWAY_MAX_HEADER_BYTES", default_value = "16KiB")]
    pub(crate) max_header_bytes: Size,

    /// How long a subscriber cut off for falling behind may leave its last bytes unread
    /// (and a WebSocket write may wait) before the connection is closed.
    #[arg(long, env = "TIDEWAY_WRITE_TIMEOUT", default_value = "10s")]
    pub(crate) write_timeout: Seconds,

    /// Reconnection delay suggested to clients (`retry:`).
    #[arg(long, env = "TIDEWAY_RETRY", default_value = "2s")]
    pub(crate) retry: Seconds,

    /// How long a drain (SIGTERM) waits for streams and requests to finish.
    #[arg(long, env = "TIDEWAY_DRAIN_TIMEOUT", default_value = "10s")]
    pub(crate) drain_timeout: Seconds,

    /// How long a client may take to send a request's headers, and how long a connection
    /// may sit idle between requests.
    #[arg(long, env = "TIDEWAY_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub(crate) header_read_timeout: Seconds,

    /// Log format on stderr (`RUST_LOG` filters).
    #[arg(long, env = "TIDEWAY_LOG_FORMAT", value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
}

/// The shortest token secret taken: an HS256 key shorter than its hash's 32 bytes is
/// weaker than the signature it makes, and short secrets are guessed offline from one
/// token.
pub(crate) const MIN_TOKEN_SECRET: usize = 32;

impl Args {
    /// Refuses settings that cannot make a working gateway: every duration, size and count
    /// against its sensible range, and the token secret's length. Every refusal names the
    /// flag and its variable, the value given and what is needed; all are reported at once.
    pub(crate) fn validate(&self) -> Result<(), String> {
        const MS: Duration = Duration::from_millis(1);
        const SECOND: Duration = Duration::from_secs(1);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(86_400);
        let mut wrong = Vec::new();
        let durations: [(&str, &str, Duration, Duration, Duration, &str); 8] = [
            (
                "heartbeat",
                "TIDEWAY_HEARTBEAT",
                self.heartbeat.0,
                100 * MS,
                HOUR,
                "idle streams get a comment this often",
            ),
            (
                "header-read-timeout",
                "TIDEWAY_HEADER_READ_TIMEOUT",
                self.header_read_timeout.0,
                100 * MS,
                HOUR,
                "shorter closes connections before a request can arrive",
            ),
            (
                "write-timeout",
                "TIDEWAY_WRITE_TIMEOUT",
                self.write_timeout.0,
                100 * MS,
                HOUR,
                "shorter cuts off subscribers on a slow network",
            ),
            (
                "node-ttl",
                "TIDEWAY_NODE_TTL",
                self.node_ttl.0,
                500 * MS,
                10 * 60 * SECOND,
                "heartbeats to Redis come every fifth of it",
            ),
            (
                "retry",
                "TIDEWAY_RETRY",
                self.retry.0,
                100 * MS,
                HOUR,
                "clients told to reconnect at once would all come back together",
            ),
            (
                "token-max-ttl",
                "TIDEWAY_TOKEN_MAX_TTL",
                self.token_max_ttl.0,
                SECOND,
                365 * DAY,
                "the longest a subscriber token may live",
            ),
            (
                "drain-timeout",
                "TIDEWAY_DRAIN_TIMEOUT",
                self.drain_timeout.0,
                Duration::ZERO,
                HOUR,
                "how long SIGTERM waits",
            ),
            (
                "topic-grace",
                "TIDEWAY_TOPIC_GRACE",
                self.topic_grace.0,
                Duration::ZERO,
                DAY,
                "how long an unfollowed topic keeps its history",
            ),
        ];
        for (flag, env, value, min, max, why) in durations {
            if value < min || value > max {
                wrong.push(format!(
                    "--{flag} ({env}) is {}: it must be from {} to {} ({why})",
                    Seconds(value),
                    Seconds(min),
                    Seconds(max)
                ));
            }
        }
        let counts: [(&str, &str, usize, usize, usize); 7] = [
            ("max-body", "TIDEWAY_MAX_BODY", self.max_body.0, 1, 64 << 20),
            (
                "max-batch-body",
                "TIDEWAY_MAX_BATCH_BODY",
                self.max_batch_body.0,
                1,
                256 << 20,
            ),
            (
                "max-header-bytes",
                "TIDEWAY_MAX_HEADER_BYTES",
                self.max_header_bytes.0,
                1024,
                1 << 20,
            ),
            ("max-topics", "TIDEWAY_MAX_TOPICS", self.max_topics, 1, 1024),
            (
                "queue-capacity",
                "TIDEWAY_QUEUE_CAPACITY",
                self.queue_capacity,
                1,
                1_000_000,
            ),
            ("history", "TIDEWAY_HISTORY", self.history, 0, 1_000_000),
            (
                "max-connections",
                "TIDEWAY_MAX_CONNECTIONS",
                self.max_connections,
                0,
                10_000_000,
            ),
        ];
        for (flag, env, value, min, max) in counts {
            if value < min || value > max {
                wrong.push(format!(
                    "--{flag} ({env}) is {value}: it must be from {min} to {max}"
                ));
            }
        }
        if let Some(secret) = &self.token_secret
            && !secret.is_empty()
            && secret.len() < MIN_TOKEN_SECRET
        {
            wrong.push(format!(
                "--token-secret (TIDEWAY_TOKEN_SECRET) is {} bytes: it must be at least {MIN_TOKEN_SECRET} (make one with `openssl rand -hex 32`)",
                secret.len()
            ));
        }
        wrong.extend(self.redis_problems());
        wrong.extend(self.worker_problems());
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => wrong.push(
                "--tls-cert (TIDEWAY_TLS_CERT) is set but --tls-key (TIDEWAY_TLS_KEY) is not: HTTPS needs both".to_owned(),
            ),
            (None, Some(_)) => wrong.push(
                "--tls-key (TIDEWAY_TLS_KEY) is set but --tls-cert (TIDEWAY_TLS_CERT) is not: HTTPS needs both".to_owned(),
            ),
            _ => {}
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("\n"))
        }
    }
}

impl Args {
    /// Redis settings that do not fit together: several URLs without Redis Cluster, the
    /// cluster flag without the Redis adapter, a prefix that would move keys between a
    /// cluster's shards.
    fn redis_problems(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        let redis = matches!(self.adapter, Adapter::Redis);
        if self.redis_cluster && !redis {
            wrong.push(
                "--redis-cluster (TIDEWAY_REDIS_CLUSTER) is set but --adapter (TIDEWAY_ADAPTER) is not redis".to_owned(),
            );
        }
        if redis && !self.redis_cluster && self.redis_url.contains(',') {
            wrong.push(
                "--redis-url (REDIS_URL) lists several servers: that is a Redis Cluster's seed list, which needs --redis-cluster (TIDEWAY_REDIS_CLUSTER); one Redis takes one URL".to_owned(),
            );
        }
        if self.redis_ca_cert.is_some() && !self.redis_url.starts_with("rediss") {
            wrong.push(
                "--redis-ca-cert (TIDEWAY_REDIS_CA_CERT) is set but --redis-url (REDIS_URL) is not rediss:// (or rediss-sentinel://): the CA is for Redis over TLS".to_owned(),
            );
        }
        if redis && self.redis_cluster && self.redis_prefix.contains(['{', '}']) {
            wrong.push(format!(
                "--redis-prefix (TIDEWAY_REDIS_PREFIX) is {:?}: with --redis-cluster it cannot hold '{{' or '}}', which would decide the shard of every key",
                self.redis_prefix
            ));
        }
        wrong
    }
}

/// The largest event body with the Durable-Object Worker: an event is one value of DO
/// storage (2 MB at most on Cloudflare's SQLite-backed objects), stored as JSON.
const WORKER_MAX_BODY: usize = 1 << 20;

impl Args {
    /// Worker settings that do not fit: a Worker without the `do` adapter, or without
    /// its secret, or a secret without a Worker.
    fn worker_problems(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        let worker = self.do_url.as_deref().is_some_and(|u| !u.is_empty());
        let secret = self.do_secret.as_deref().filter(|s| !s.is_empty());
        if worker && !matches!(self.adapter, Adapter::Do) {
            wrong.push(
                "--do-url (TIDEWAY_DO_URL) is set but --adapter (TIDEWAY_ADAPTER) is not do"
                    .to_owned(),
            );
        }
        match secret {
            None if worker => wrong.push(
                "--do-url (TIDEWAY_DO_URL) is set but --do-secret (TIDEWAY_DO_SECRET) is not: the Worker serves only nodes that send its secret".to_owned(),
            ),
            Some(_) if !worker => wrong.push(
                "--do-secret (TIDEWAY_DO_SECRET) is set but --do-url (TIDEWAY_DO_URL) is not: the secret is the Worker's".to_owned(),
            ),
            Some(secret) if secret.len() < 16 => wrong.push(format!(
                "--do-secret (TIDEWAY_DO_SECRET) is {} bytes: it must be at least 16 (make one with `openssl rand -hex 32`)",
                secret.len()
            )),
            _ => {}
        }
        if worker && self.max_body.0 > WORKER_MAX_BODY {
            wrong.push(format!(
                "--max-body (TIDEWAY_MAX_BODY) is {} bytes: with --do-url (TIDEWAY_DO_URL) it must be at most {WORKER_MAX_BODY} (1 MiB): an event is one Durable Object storage value",
                self.max_body.0
            ));
        }
        if self.do_ca_cert.is_some()
            && !self
                .do_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        {
            wrong.push(
                "--do-ca-cert (TIDEWAY_DO_CA_CERT) is set but --do-url (TIDEWAY_DO_URL) is not https://: the CA is for a Worker over TLS".to_owned(),
            );
        }
        wrong
    }
}

/// What `tideway` does instead of running the gateway.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Asks the gateway listening at `--listen` for a path and exits 0 when it answers
    /// 200 (for container health checks).
    Probe {
        /// The path to ask.
        #[arg(default_value = "/healthz")]
        path: String,
    },
}

/// Where shared state lives.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Adapter {
    /// In this process: one node, nothing else to run.
    Memory,
    /// In Redis, shared by every node that uses it.
    Redis,
    /// In Durable Objects: on the Worker at `--do-url`, shared by every node using it, or
    /// emulated in this process.
    Do,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration written as a number and a unit: `500ms`, `15s`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seconds(pub(crate) Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (number, unit) = split_unit(text);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: expected a whole number and a unit, such as 15s"))?;
        let millis = match unit {
            "ms" => Some(number),
            "s" => number.checked_mul(1000),
            "m" => number.checked_mul(60_000),
            "h" => number.checked_mul(3_600_000),
            _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
        };
        millis
            .map(|ms| Self(Duration::from_millis(ms)))
            .ok_or_else(|| format!("{text:?}: too long"))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// A size in bytes written with a unit: `512B`, `64KiB`, `1MiB` (or `KB`, `MB`: powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size(pub(crate) usize);

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (number, unit) = split_unit(text);
        let number: usize = number
            .parse()
            .map_err(|_| format!("{text:?}: expected a whole number and a unit, such as 64KiB"))?;
        let factor = match unit {
            "" | "B" => 1,
            "KiB" => 1024,
            "MiB" => 1024 * 1024,
            "KB" => 1000,
            "MB" => 1_000_000,
            _ => return Err(format!("{text:?}: the unit must be B, KiB, MiB, KB or MB")),
        };
        number
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| format!("{text:?}: too large"))
    }
}

fn split_unit(text: &str) -> (&str, &str) {
    let text = text.trim();
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (&text[..at], text[at..].trim())
}

/// A new random API key: `tw_` and 32 hex digits (128 bits from the OS).
pub(crate) fn generate_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(format!("tw_{}", hex(&bytes)))
}

/// This host's name, from the kernel, or `tideway` when it cannot be read.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "tideway".to_owned())
}

/// `hostname-xxxxxx`: the host name and 24 random bits, so two processes on one host differ.
pub(crate) fn default_node_id(hostname: &str) -> String {
    let mut bytes = [0u8; 3];
    // Without randomness the suffix is zeros; a node id must still exist.
    let _ = getrandom::fill(&mut bytes);
    format!("{hostname}-{}", hex(&bytes))
}

/// The IP address this host uses to reach other hosts, or 127.0.0.1 when it has none.
pub(crate) fn own_ip() -> String {
    // Connecting a UDP socket sends nothing; it only makes the kernel pick a source address.
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| {
            socket.connect("10.255.255.255:9")?;
            socket.local_addr()
        })
        .map(|addr| addr.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use expect_test::expect;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_durations_and_sizes_never_panic(text in "\\PC{0,30}") {
            let _ = text.parse::<Seconds>();
            let _ = text.parse::<Size>();
        }

        #[test]
        fn written_sizes_parse_back(n in 0usize..1_000_000, unit in prop_oneof![Just(("B", 1usize)), Just(("KiB", 1024)), Just(("MiB", 1 << 20))]) {
            prop_assert_eq!(format!("{n}{}", unit.0).parse::<Size>(), Ok(Size(n * unit.1)));
        }
    }

    fn args(flags: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("tideway").chain(flags.iter().copied()))
            .expect("flags parse")
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(args(&[]).validate(), Ok(()));
    }

    #[test]
    fn every_setting_out_of_range_is_refused_by_name() {
        for (flags, named) in [
            (
                &["--heartbeat", "0s"][..],
                "--heartbeat (TIDEWAY_HEARTBEAT) is 0ms",
            ),
            (&["--header-read-timeout", "0s"], "--header-read-timeout"),
            (&["--write-timeout", "50ms"], "--write-timeout"),
            (&["--node-ttl", "100ms"], "--node-ttl"),
            (&["--node-ttl", "2h"], "--node-ttl"),
            (&["--retry", "0s"], "--retry"),
            (&["--token-max-ttl", "0s"], "--token-max-ttl"),
            (&["--drain-timeout", "2h"], "--drain-timeout"),
            (&["--topic-grace", "48h"], "--topic-grace"),
            (&["--max-body", "0B"], "--max-body (TIDEWAY_MAX_BODY) is 0"),
            (&["--max-body", "65MiB"], "--max-body"),
            (
                &["--max-batch-body", "0B"],
                "--max-batch-body (TIDEWAY_MAX_BATCH_BODY) is 0",
            ),
            (&["--max-batch-body", "257MiB"], "--max-batch-body"),
            (&["--max-header-bytes", "100B"], "--max-header-bytes"),
            (&["--max-topics", "0"], "--max-topics"),
            (&["--queue-capacity", "0"], "--queue-capacity"),
            (&["--history", "2000000"], "--history"),
            (
                &["--token-secret", "short"],
                "--token-secret (TIDEWAY_TOKEN_SECRET) is 5 bytes",
            ),
        ] {
            let err = args(flags).validate().expect_err(named);
            assert!(err.contains(named), "{flags:?}: {err}");
            assert_eq!(
                err.lines().count(),
                1,
                "{flags:?}: only what is wrong: {err}"
            );
        }
        // Everything wrong is said at once, and the edges of each range are taken.
        let err = args(&["--heartbeat", "0s", "--max-topics", "0"])
            .validate()
            .unwrap_err();
        assert_eq!(err.lines().count(), 2, "{err}");
        let edges = [
            "--heartbeat",
            "100ms",
            "--node-ttl",
            "500ms",
            "--max-topics",
            "1024",
            "--history",
            "0",
            "--token-secret",
            "0123456789abcdef0123456789abcdef",
        ];
        assert_eq!(args(&edges).validate(), Ok(()));
    }

    #[test]
    fn redis_settings_that_do_not_fit_are_refused() {
        let refused = |extra: &[&str]| args(extra).validate().unwrap_err();
        let cluster_without_redis = refused(&["--redis-cluster"]);
        assert!(
            cluster_without_redis.contains("--adapter (TIDEWAY_ADAPTER) is not redis"),
            "{cluster_without_redis}"
        );
        let seeds_without_cluster = refused(&[
            "--adapter",
            "redis",
            "--redis-url",
            "redis://a:1,redis://b:2",
        ]);
        assert!(
            seeds_without_cluster.contains("needs --redis-cluster"),
            "{seeds_without_cluster}"
        );
        let tagged_prefix = refused(&[
            "--adapter",
            "redis",
            "--redis-cluster",
            "--redis-prefix",
            "{x}:",
        ]);
        assert!(tagged_prefix.contains("cannot hold"), "{tagged_prefix}");
        let plain_with_ca = refused(&["--adapter", "redis", "--redis-ca-cert", "ca.pem"]);
        assert!(
            plain_with_ca.contains("is not rediss://"),
            "{plain_with_ca}"
        );
        let tls = [
            "--adapter",
            "redis",
            "--redis-url",
            "rediss://redis.example:6380",
            "--redis-ca-cert",
            "ca.pem",
        ];
        assert_eq!(args(&tls).validate(), Ok(()));
        let seeds = [
            "--adapter",
            "redis",
            "--redis-cluster",
            "--redis-url",
            "redis://a:1,redis://b:2",
        ];
        assert_eq!(args(&seeds).validate(), Ok(()));
    }

    #[test]
    fn worker_settings_that_do_not_fit_are_refused() {
        let refused = |extra: &[&str]| args(extra).validate().unwrap_err();
        let url = ["--do-url", "http://127.0.0.1:8787"];
        let without_do = refused(&url);
        assert!(without_do.contains("is not do"), "{without_do}");
        let without_secret = refused(&["--adapter", "do", url[0], url[1]]);
        assert!(
            without_secret.contains("--do-secret (TIDEWAY_DO_SECRET) is not"),
            "{without_secret}"
        );
        let short = refused(&["--adapter", "do", url[0], url[1], "--do-secret", "short"]);
        assert!(short.contains("at least 16"), "{short}");
        let orphan = refused(&["--adapter", "do", "--do-secret", "0123456789abcdef"]);
        assert!(
            orphan.contains("--do-url (TIDEWAY_DO_URL) is not"),
            "{orphan}"
        );
        let fits = [
            "--adapter",
            "do",
            url[0],
            url[1],
            "--do-secret",
            "0123456789abcdef",
        ];
        assert_eq!(args(&fits).validate(), Ok(()));
        let at_cap = [&fits[..], &["--max-body", "1MiB"]].concat();
        assert_eq!(args(&at_cap).validate(), Ok(()));
        let past_cap = [&fits[..], &["--max-body", "1048577"]].concat();
        let too_big = args(&past_cap).validate().unwrap_err();
        assert!(
            too_big.contains("--max-body (TIDEWAY_MAX_BODY) is 1048577 bytes"),
            "{too_big}"
        );
        assert_eq!(
            args(&["--adapter", "do", "--max-body", "8MiB"]).validate(),
            Ok(()),
            "the emulation keeps events in memory"
        );
        assert_eq!(
            args(&["--adapter", "do"]).validate(),
            Ok(()),
            "the emulation"
        );
    }

    #[test]
    fn tls_needs_both_files() {
        let cert_only = args(&["--tls-cert", "c.pem"]).validate().unwrap_err();
        assert!(
            cert_only.contains("--tls-key (TIDEWAY_TLS_KEY) is not"),
            "{cert_only}"
        );
        let key_only = args(&["--tls-key", "k.pem"]).validate().unwrap_err();
        assert!(
            key_only.contains("--tls-cert (TIDEWAY_TLS_CERT) is not"),
            "{key_only}"
        );
        assert_eq!(
            args(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).validate(),
            Ok(())
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!("15s".parse(), Ok(Seconds(Duration::from_secs(15))));
        assert_eq!("250ms".parse(), Ok(Seconds(Duration::from_millis(250))));
        assert_eq!("2m".parse(), Ok(Seconds(Duration::from_secs(120))));
        assert_eq!("0s".parse(), Ok(Seconds(Duration::ZERO)));
        assert!(
            "15".parse::<Seconds>()
                .unwrap_err()
                .contains("unit must be")
        );
        assert!("s".parse::<Seconds>().unwrap_err().contains("whole number"));
        assert!(
            "99999999999999999h"
                .parse::<Seconds>()
                .unwrap_err()
                .contains("too long")
        );
        assert_eq!("64KiB".parse(), Ok(Size(65536)));
        assert_eq!("1 MiB".parse(), Ok(Size(1 << 20)));
        assert_eq!("100".parse(), Ok(Size(100)));
        assert!("1GiB".parse::<Size>().unwrap_err().contains("unit must be"));
    }

    #[test]
    fn generated_values() {
        let key = generate_key().unwrap();
        assert!(key.starts_with("tw_") && key.len() == 35, "{key}");
        assert_ne!(key, generate_key().unwrap());
        assert!(default_node_id("host").starts_with("host-"));
    }

    #[test]
    fn help_lists_every_flag_with_env_and_default() {
        // Trailing spaces are trimmed: clap pads blank lines, and editors strip them.
        let help = Args::command()
            .term_width(100)
            .render_long_help()
            .to_string();
        let help: String = help
            .lines()
            .map(|l| l.trim_end().to_owned() + "\n")
            .collect();
        expect![[r#"
            Tideway, an event gateway: publish over HTTP, subscribe over Server-Sent Events.

            Usage: tideway [OPTIONS] [COMMAND]

            Commands:
              probe  Asks the gateway listening at `--listen` for a path and exits 0 when it answers 200 (for
                     container health checks)
              help   Print this message or the help of the given subcommand(s)

            Options:
                  --listen <LISTEN>
                      Address and port to listen on

                      [env: TIDEWAY_LISTEN=]
                      [default: 0.0.0.0:8080]

                  --tls-cert <TLS_CERT>
                      Serve HTTPS with this certificate chain (PEM, leaf first): HTTP/2 and HTTP/1.1 by ALPN.
                      Read again when the file changes. Needs --tls-key

                      [env: TIDEWAY_TLS_CERT=]

                  --tls-key <TLS_KEY>
                      The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)

                      [env: TIDEWAY_TLS_KEY=]

                  --api-keys <API_KEYS>
                      Comma-separated API keys for publishers and the admin API. Without one, a key is generated
                      and printed at start

                      [env: SSE_PUBLISHER_API_KEYS]

                  --keys-file <KEYS_FILE>
                      A JSON file of scoped API keys (see docs/security.md), reloaded when it changes; its keys
                      join those of --api-keys

                      [env: TIDEWAY_KEYS_FILE=]

                  --token-secret <TOKEN_SECRET>
                      The HS256 secret of subscriber tokens, at least 32 bytes; every node of a cluster needs
                      the same one [default: random, for this process only]

                      [env: TIDEWAY_TOKEN_SECRET]

                  --private-prefix <PRIVATE_PREFIX>
                      Topics starting with this prefix need a subscriber token

                      [env: TIDEWAY_PRIVATE_PREFIX=]
                      [default: private:]

                  --token-max-ttl <TOKEN_MAX_TTL>
                      Longest lifetime a subscriber token may be given

                      [env: TIDEWAY_TOKEN_MAX_TTL=]
                      [default: 24h]

                  --adapter <ADAPTER>
                      Where shared state lives: `memory` keeps it in this process (one node); `redis` shares it
                      with every node using the same Redis; `do` keeps it in Durable Objects, on the Worker at
                      `--do-url` (shared by every node using it) or, without it, emulated in this process

                      Possible values:
                      - memory: In this process: one node, nothing else to run
                      - redis:  In Redis, shared by every node that uses it
                      - do:     In Durable Objects: on the Worker at `--do-url`, shared by every node using it,
                        or emulated in this process

                      [env: TIDEWAY_ADAPTER=]
                      [default: memory]

                  --redis-url <REDIS_URL>
                      The Redis of `--adapter redis`

                      [env: REDIS_URL]
                      [default: redis://127.0.0.1:6379]

                  --redis-ca-cert <REDIS_CA_CERT>
                      For a `rediss://` (TLS) Redis: the CA certificates (PEM) its certificate must chain to,
                      instead of the system's

                      [env: TIDEWAY_REDIS_CA_CERT=]

                  --redis-cluster
                      Use Redis Cluster: `--redis-url` lists seed nodes, comma-separated. Each topic is ordered
                      on its own shard (sharded pub/sub, Redis 7); see docs/cluster.md for what changes from one
                      Redis

                      [env: TIDEWAY_REDIS_CLUSTER=]

                  --redis-prefix <REDIS_PREFIX>
                      Prefix of every Redis key and channel, so several clusters can share one Redis

                      [env: TIDEWAY_REDIS_PREFIX=]
                      [default: tideway:]

                  --do-url <DO_URL>
                      With `--adapter do`: the Durable-Object Worker (`worker/`, on Cloudflare or workerd) as
                      `http(s)://host[:port]`. Without it, `do` emulates the objects in this process (one node)

                      [env: TIDEWAY_DO_URL=]

                  --do-secret <DO_SECRET>
                      The secret the Worker at `--do-url` was given as its `TIDEWAY_DO_SECRET`

                      [env: TIDEWAY_DO_SECRET]

                  --do-ca-cert <DO_CA_CERT>
                      For an `https://` Worker: the CA certificates (PEM) its certificate must chain to, instead
                      of the system's

                      [env: TIDEWAY_DO_CA_CERT=]

                  --node-ttl <NODE_TTL>
                      How long a node counts as alive after its last heartbeat to the shared store (Redis or the
                      Worker); a node that dies leaves the shared state this long after its last heartbeat

                      [env: TIDEWAY_NODE_TTL=]
                      [default: 5s]

                  --node-id <NODE_ID>
                      This node's id in the cluster [default: hostname and a random suffix]

                      [env: TIDEWAY_NODE_ID=]

                  --advertise-host <ADVERTISE_HOST>
                      Host or IP other nodes and operators reach this node at [default: the node's own IP]

                      [env: TIDEWAY_ADVERTISE_HOST=]

                  --heartbeat <HEARTBEAT>
                      Interval of the heartbeat comment on idle streams

                      [env: TIDEWAY_HEARTBEAT=]
                      [default: 15s]

                  --history <HISTORY>
                      Events kept per topic for resume and the admin tail

                      [env: TIDEWAY_HISTORY=]
                      [default: 1000]

                  --topic-grace <TOPIC_GRACE>
                      How long a topic whose last connection left still counts as live and keeps its history (0s
                      drops it at once)

                      [env: TIDEWAY_TOPIC_GRACE=]
                      [default: 0s]

                  --max-body <MAX_BODY>
                      Largest publish body (B, KiB, MiB); in a batch, the largest event data

                      [env: TIDEWAY_MAX_BODY=]
                      [default: 64KiB]

                  --max-batch-body <MAX_BATCH_BODY>
                      Largest batch publish body (`POST /v1/publish/batch`, up to 1,000 events)

                      [env: TIDEWAY_MAX_BATCH_BODY=]
                      [default: 1MiB]

                  --cors-origins <CORS_ORIGINS>
                      Origins allowed to read subscribe routes from a browser: `*` or a comma-separated list

                      [env: TIDEWAY_CORS_ORIGINS=]
                      [default: *]

                  --publish-cors-origins <PUBLISH_CORS_ORIGINS>
                      Origins allowed to publish and sign tokens from a browser: `*`, a list, or empty for none

                      [env: TIDEWAY_PUBLISH_CORS_ORIGINS=]
                      [default: ""]

                  --admin-cors-origins <ADMIN_CORS_ORIGINS>
                      Origins allowed to call the admin API from a browser (the admin UI needs none)

                      [env: TIDEWAY_ADMIN_CORS_ORIGINS=]
                      [default: ""]

                  --max-topics <MAX_TOPICS>
                      Most topics one request may name

                      [env: TIDEWAY_MAX_TOPICS=]
                      [default: 64]

                  --queue-capacity <QUEUE_CAPACITY>
                      Events queued per connection before it counts as a slow consumer and is cut off

                      [env: TIDEWAY_QUEUE_CAPACITY=]
                      [default: 1024]

                  --max-connections <MAX_CONNECTIONS>
                      Most subscriber connections (SSE and WebSocket) this node holds; 0 for no limit

                      [env: TIDEWAY_MAX_CONNECTIONS=]
                      [default: 100000]

                  --max-connections-per-ip <MAX_CONNECTIONS_PER_IP>
                      Most subscriber connections from one client IP; 0 for no limit (behind a load balancer
                      every client has its address)

                      [env: TIDEWAY_MAX_CONNECTIONS_PER_IP=]
                      [default: 0]

                  --max-connections-per-subject <MAX_CONNECTIONS_PER_SUBJECT>
                      Most subscriber connections of one token subject; 0 for no limit

                      [env: TIDEWAY_MAX_CONNECTIONS_PER_SUBJECT=]
                      [default: 0]

                  --max-header-bytes <MAX_HEADER_BYTES>
                      Largest request line and headers (B, KiB)

                      [env: TIDEWAY_MAX_HEADER_BYTES=]
                      [default: 16KiB]

                  --write-timeout <WRITE_TIMEOUT>
                      How long a subscriber cut off for falling behind may leave its last bytes unread (and a
                      WebSocket write may wait) before the connection is closed

                      [env: TIDEWAY_WRITE_TIMEOUT=]
                      [default: 10s]

                  --retry <RETRY>
                      Reconnection delay suggested to clients (`retry:`)

                      [env: TIDEWAY_RETRY=]
                      [default: 2s]

                  --drain-timeout <DRAIN_TIMEOUT>
                      How long a drain (SIGTERM) waits for streams and requests to finish

                      [env: TIDEWAY_DRAIN_TIMEOUT=]
                      [default: 10s]

                  --header-read-timeout <HEADER_READ_TIMEOUT>
                      How long a client may take to send a request's headers, and how long a connection may sit
                      idle between requests

                      [env: TIDEWAY_HEADER_READ_TIMEOUT=]
                      [default: 10s]

                  --log-format <LOG_FORMAT>
                      Log format on stderr (`RUST_LOG` filters)

                      Possible values:
                      - text: Human-readable lines
                      - json: One JSON object per line

                      [env: TIDEWAY_LOG_FORMAT=]
                      [default: text]

              -h, --help
                      Print help (see a summary with '-h')

              -V, --version
                      Print version
        "#]].assert_eq(&help);
    }
}
