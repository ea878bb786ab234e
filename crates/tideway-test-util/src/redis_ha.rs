//! Redis the way managed services and operators run it, for one test: over TLS with a CA
//! made at test time, and a primary with a replica behind `redis-sentinel`.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::redis::{command, signal};

/// A temporary directory, removed with its owner.
struct Dir(PathBuf);

impl Dir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tideway-{what}-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `redis-server` that speaks only TLS, its certificate (for 127.0.0.1) signed by a CA
/// made for this test.
pub struct TlsRedis {
    child: Child,
    port: u16,
    dir: Dir,
}

impl TlsRedis {
    /// Makes the CA and the server's certificate with `openssl`, starts the server and
    /// waits until its TLS port accepts connections.
    pub fn start() -> Self {
        let dir = Dir::new("redis-tls");
        let at = &dir.0;
        crate::TestCa::in_dir(at).issue("server", "127.0.0.1");
        let port = crate::free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(at.join("server.pem"))
            .arg("--tls-key-file")
            .arg(at.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(at.join("ca.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        crate::wait_listening(&format!("127.0.0.1:{port}"));
        Self { child, port, dir }
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// The CA certificate the server's chains to.
    pub fn ca(&self) -> PathBuf {
        self.dir.0.join("ca.pem")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A primary, a replica of it, and a `redis-sentinel` watching them as `tideway`.
pub struct RedisSentinel {
    primary: (u16, Option<Child>),
    replica: (u16, Option<Child>),
    sentinel: (u16, Child),
    _dir: Dir,
}

/// The name Sentinel knows the primary by.
pub const SENTINEL_SERVICE: &str = "tideway";

impl RedisSentinel {
    /// Starts the three and waits until the sentinel sees the replica in sync.
    pub fn start() -> Self {
        let dir = Dir::new("redis-sentinel");
        let primary_port = crate::free_port();
        let primary = crate::redis::spawn_with(primary_port, &[]);
        let replica_port = crate::free_port();
        let replica = crate::redis::spawn_with(
            replica_port,
            &["--replicaof", "127.0.0.1", &primary_port.to_string()],
        );
        let sentinel_port = crate::free_port();
        let conf = dir.0.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
            ),
        )
        .expect("write the sentinel's configuration");
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (it runs as redis-sentinel too)");
        crate::wait_listening(&format!("127.0.0.1:{sentinel_port}"));
        let setup = Self {
            primary: (primary_port, Some(primary)),
            replica: (replica_port, Some(replica)),
            sentinel: (sentinel_port, sentinel),
            _dir: dir,
        };
        setup.wait_for("the replica in sync and known to the sentinel", |s| {
            cli(s.replica.0, &["info", "replication"]).contains("master_link_status:up")
                && cli(s.sentinel.0, &["sentinel", "replicas", SENTINEL_SERVICE])
                    .contains(&s.replica.0.to_string())
        });
        setup
    }

    fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis-sentinel://127.0.0.1:<sentinel>?sentinelServiceName=tideway`.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={SENTINEL_SERVICE}",
            self.sentinel.0
        )
    }

    /// The port of the server the sentinel names as primary now.
    pub fn primary_port(&self) -> u16 {
        cli(
            self.sentinel.0,
            &["sentinel", "get-master-addr-by-name", SENTINEL_SERVICE],
        )
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Has the sentinel fail the primary over to the replica (`SENTINEL FAILOVER`) and
    /// waits until the replica serves as primary.
    pub fn failover(&self) {
        let before = self.primary_port();
        let reply = command(self.sentinel.0, &["SENTINEL", "FAILOVER", SENTINEL_SERVICE]);
        assert!(reply.starts_with("+OK"), "SENTINEL FAILOVER: {reply}");
        self.wait_for("the failover", |s| {
            let now = s.primary_port();
            now != before && now != 0 && cli(now, &["info", "replication"]).contains("role:master")
        });
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for child in [&mut self.primary.1, &mut self.replica.1]
            .into_iter()
            .flatten()
        {
            signal(child.id(), "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.sentinel.1.kill();
        let _ = self.sentinel.1.wait();
    }
}

/// `redis-cli -p <port> <args>`: what it printed.
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
