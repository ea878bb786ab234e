//! A real Redis Cluster for one test: six `redis-server --cluster-enabled yes` processes on
//! free ports (three primaries, a replica each), joined by `redis-cli --cluster create`,
//! killed with the test.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::redis::{signal, spawn_with};

/// Processes of the cluster.
const SIZE: usize = 6;

/// A six-process Redis Cluster of this test, with no persistence.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<(u16, Option<Child>)>,
}

impl RedisCluster {
    /// Starts the six processes, joins them and waits until every one of them reports
    /// the cluster healthy (all 16384 slots served).
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tideway-cluster-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster's files");
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
        };
        for port in ports() {
            let child = cluster.spawn(port);
            cluster.nodes.push((port, Some(child)));
        }
        let addresses: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is installed (with redis-server, from Debian's redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.wait_healthy();
        // A replica that never finished its first sync can never take over: a test that
        // kills a primary needs every replica in sync.
        cluster.wait_for("every replica to sync with its primary", |c| {
            c.on_every_process(&["info", "replication"])
                .iter()
                .all(|info| !info.contains("role:slave") || info.contains("master_link_status:up"))
        });
        cluster
    }

    /// Waits until `done` holds, or fails after [`super::TIMEOUT`] naming `what`.
    fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = std::time::Instant::now() + super::TIMEOUT;
        while !done(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "the Redis Cluster: timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After the primary on `killed` died: waits until its replica took over (three
    /// primaries, none of them `killed`) and every live process reports the cluster
    /// healthy.
    pub fn wait_failover(&self, killed: u16) {
        self.wait_for("a replica to take over the killed primary", |c| {
            let primaries = c.primaries();
            primaries.len() == 3 && !primaries.contains(&killed)
        });
        self.wait_healthy();
    }

    fn spawn(&self, port: u16) -> Child {
        let conf = self.dir.join(format!("nodes-{port}.conf"));
        let dir = self.dir.to_string_lossy().into_owned();
        spawn_with(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf.to_string_lossy(),
                "--cluster-node-timeout",
                "2000",
                "--dir",
                &dir,
            ],
        )
    }

    /// Every process's port, primaries and replicas alike.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(port, _)| *port).collect()
    }

    /// The seed URLs a client starts from: every process, comma-separated.
    pub fn urls(&self) -> String {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The flags that make a `tideway` process node `id` of a gateway cluster on this
    /// Redis Cluster.
    pub fn node_args(&self, id: &str) -> Vec<String> {
        let urls = self.urls();
        [
            "--adapter",
            "redis",
            "--redis-cluster",
            "--redis-url",
            &urls,
            "--node-id",
            id,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Runs `redis-cli -p <port>` with `args` and returns what it printed.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The ports of the processes that are primaries now, by the view of a live one.
    pub fn primaries(&self) -> Vec<u16> {
        let live = self
            .nodes
            .iter()
            .find(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .expect("a live process");
        let mut primaries: Vec<u16> = self
            .cli(live, &["cluster", "nodes"])
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| {
                let address = line.split(' ').nth(1)?;
                address.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect();
        primaries.sort_unstable();
        primaries
    }

    /// The cluster's id of the process on `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["cluster", "myid"]).trim().to_owned()
    }

    /// Moves `slots` hash slots from the primary on `from` to the primary on `to` with
    /// `redis-cli --cluster reshard` (keys migrate while clients keep working; they are
    /// redirected with ASK and MOVED). Returns what redis-cli printed when it failed.
    pub fn reshard(&self, from: u16, to: u16, slots: u32) -> Result<(), String> {
        let output = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &self.node_id(from)])
            .args(["--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run redis-cli: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stdout).into_owned())
        }
    }

    /// Runs one command on every live process; returns their first output lines.
    pub fn on_every_process(&self, args: &[&str]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| self.cli(*port, args).trim().to_owned())
            .collect()
    }

    /// The port of the primary that serves `key`'s hash slot now.
    pub fn owner_of(&self, key: &str) -> Option<u16> {
        let live = self.nodes.iter().find(|(_, c)| c.is_some())?.0;
        let slot: u16 = self
            .cli(live, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .ok()?;
        self.cli(live, &["cluster", "nodes"]).lines().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            if !fields.get(2)?.contains("master") {
                return None;
            }
            let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
            let serves = fields.iter().skip(8).any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if (l..=h).contains(&slot))
            });
            serves.then_some(port)
        })
    }

    /// Kills the process on `port` with SIGKILL (its data is lost, as on a crash).
    pub fn kill(&mut self, port: u16) {
        if let Some((_, child)) = self.nodes.iter_mut().find(|(p, _)| *p == port)
            && let Some(mut child) = child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process on `port` (`SIGSTOP`).
    pub fn pause(&self, port: u16) {
        if let Some((_, Some(child))) = self.nodes.iter().find(|(p, _)| *p == port) {
            signal(child.id(), "-STOP");
        }
    }

    /// Thaws a process frozen by [`RedisCluster::pause`].
    pub fn resume(&self, port: u16) {
        if let Some((_, Some(child))) = self.nodes.iter().find(|(p, _)| *p == port) {
            signal(child.id(), "-CONT");
        }
    }

    /// Waits until every live process reports `cluster_state:ok`.
    pub fn wait_healthy(&self) {
        let live: Vec<u16> = self
            .nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .collect();
        let deadline = std::time::Instant::now() + super::TIMEOUT;
        while !live.iter().all(|&port| {
            self.cli(port, &["cluster", "info"])
                .contains("cluster_state:ok")
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the Redis Cluster on {live:?} did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(child) = child {
                // A paused process must be thawed to die of anything but SIGKILL; kill
                // is SIGKILL, so it dies either way.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Six free ports whose cluster bus ports are free too (outside [`super::free_port`]'s
/// range, so only another process could hold one).
fn ports() -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < SIZE {
        let port = super::free_port();
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !ports.contains(&port)
            && port
                .checked_add(super::CLUSTER_BUS_OFFSET)
                .is_some_and(free)
        {
            ports.push(port);
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    ports
}
