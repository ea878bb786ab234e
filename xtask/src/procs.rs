//! Processes the bench and e2e tasks start: free ports, waiting for a listener, a Redis,
//! and a guard that kills them however a run ends.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Kills what it holds when dropped.
pub(crate) struct Processes(pub(crate) Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
