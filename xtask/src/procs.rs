//! Processes the bench and e2e tasks start: free ports, waiting for a listener, a Redis,
//! and a guard that kills them however a run ends.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Kills what it holds when dropped, with the process group each one leads (the
/// Worker's Miniflare runs workerd as its child).
pub(crate) struct Processes(pub(crate) Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The secret the Worker started by [`start_worker`] is given.
pub(crate) const WORKER_SECRET: &str = "tideway-xtask-worker-secret";

/// Starts the Durable-Object Worker (`worker/`, built) on workerd on a free port, its
/// storage in memory; returns its URL once it answers.
pub(crate) fn start_worker(root: &Path, processes: &mut Processes) -> Result<String, String> {
    use std::{
        io::{BufRead, BufReader},
        os::unix::process::CommandExt,
    };
    let port = free_port()?;
    let mut child = Command::new("node")
        .args(["serve.mjs", "--port", &port.to_string()])
        .current_dir(root.join("worker"))
        .env("TIDEWAY_DO_SECRET", WORKER_SECRET)
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start the Worker (node worker/serve.mjs): {e}"))?;
    let stdout = child.stdout.take();
    processes.0.push(child);
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening ") {
                let _ = ready.send(());
            }
        }
    });
    started
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| format!("the Worker did not start on port {port}"))?;
    Ok(format!("http://127.0.0.1:{port}"))
}

pub(crate) fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}

/// Waits until `addr` accepts connections, for up to 10 s.
pub(crate) fn wait_listening(addr: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Starts a `redis-server` without persistence on a free port; returns its URL.
/// Starts a six-process Redis Cluster (three primaries, a replica each) on free ports
/// and returns its seed list for `--redis-url`.
pub(crate) fn start_redis_cluster(processes: &mut Processes) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("tideway-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("make {}: {e}", dir.display()))?;
    let mut ports = Vec::new();
    while ports.len() < 6 {
        let port = free_port()?;
        let bus_free = std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if port < 55_000 && bus_free && !ports.contains(&port) {
            ports.push(port);
        }
    }
    for port in &ports {
        let conf = dir.join(format!("nodes-{port}.conf"));
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
            ])
            .arg("--cluster-config-file")
            .arg(&conf)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start redis-server: {e}"))?;
        processes.0.push(child);
        wait_listening(&format!("127.0.0.1:{port}"))?;
    }
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run redis-cli: {e}"))?;
    if !created.status.success() {
        return Err(format!(
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        ));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let healthy = |port: &u16| {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "info"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
    };
    while !ports.iter().all(healthy) {
        if std::time::Instant::now() > deadline {
            return Err("the bench's Redis Cluster did not become healthy".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// Builds the bench's reference server (`xtask/ref-server.c`, with the system's C
/// compiler) and starts it on a free port: its address and process id.
pub(crate) fn start_reference(
    root: &Path,
    processes: &mut Processes,
) -> Result<(String, u32), String> {
    let binary = root.join("target/tmp/ref-server");
    std::fs::create_dir_all(root.join("target/tmp")).map_err(|e| format!("target/tmp: {e}"))?;
    let built = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&binary)
        .arg(root.join("xtask/ref-server.c"))
        .status()
        .map_err(|e| format!("run cc (install gcc): {e}"))?;
    if !built.success() {
        return Err("cc could not build xtask/ref-server.c".into());
    }
    start_listening(&binary, processes)
}

/// Starts the bench's tokio reference server (`bins/ref-tokio`, built beside the release
/// gateway in `bin`) on a free port: its address and process id.
pub(crate) fn start_reference_tokio(
    bin: &Path,
    processes: &mut Processes,
) -> Result<(String, u32), String> {
    start_listening(&bin.join("ref-tokio"), processes)
}

/// Starts `binary PORT` on a free port and waits until it listens.
fn start_listening(binary: &Path, processes: &mut Processes) -> Result<(String, u32), String> {
    let port = free_port()?;
    let child = Command::new(binary)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start {}: {e}", binary.display()))?;
    let pid = child.id();
    processes.0.push(child);
    let addr = format!("127.0.0.1:{port}");
    wait_listening(&addr)?;
    Ok((addr, pid))
}

pub(crate) fn start_redis(processes: &mut Processes) -> Result<String, String> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start redis-server: {e}"))?;
    processes.0.push(child);
    wait_listening(&format!("127.0.0.1:{port}"))?;
    Ok(format!("redis://127.0.0.1:{port}"))
}
