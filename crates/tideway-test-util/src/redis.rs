//! A real `redis-server` on a free port, started for one test and killed with it.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `redis-server` process of this test, with no persistence.
pub struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers `PING`.
    pub fn start() -> Self {
        let port = super::free_port();
        Self {
            port,
            child: spawn(port),
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The flags that make a `tideway` process node `id` of a cluster on this server.
    pub fn node_args(&self, id: &str) -> Vec<String> {
        let url = self.url();
        ["--adapter", "redis", "--redis-url", &url, "--node-id", id]
            .map(str::to_owned)
            .to_vec()
    }

    /// Kills the server (state lost, as on a crash) and starts a new one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port);
    }

    /// Kills the server; connections to it fail until [`RedisServer::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the server (`SIGSTOP`): connections stay open and nothing answers.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Thaws a server frozen by [`RedisServer::pause`] (`SIGCONT`).
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }

    /// Runs one command (its words, none holding a space) and returns the first line
    /// of the reply, e.g. `:2` for `CLIENT KILL TYPE pubsub` killing two connections.
    pub fn command(&self, words: &[&str]) -> String {
        command(self.port, words)
    }
}

/// Runs one command on the server at `port`: see [`RedisServer::command`].
pub(crate) fn command(port: u16, words: &[&str]) -> String {
    {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis-server");
        let _ = stream.set_read_timeout(Some(super::TIMEOUT));
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
        stream
            .write_all(request.as_bytes())
            .expect("send the command");
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
            reply.push(byte[0]);
        }
        String::from_utf8_lossy(&reply).trim_end().to_owned()
    }
}

/// Sends `which` to every process of the group `pgid` leads.
pub(crate) fn signal_group(pgid: u32, which: &str) {
    let _ = Command::new("kill")
        .args([which, "--", &format!("-{pgid}")])
        .status();
}

pub(crate) fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {which} {pid} failed");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(port: u16) -> Child {
    spawn_with(port, &[])
}

/// Starts `redis-server` on `port` with `extra` flags, without persistence, and waits
/// until it answers `PING`.
pub(crate) fn spawn_with(port: u16, extra: &[&str]) -> Child {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (cargo xtask test installs it: apt-get install redis-server)");
    let deadline = Instant::now() + super::TIMEOUT;
    while !ping(port) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server on port {port} did not answer PING");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
