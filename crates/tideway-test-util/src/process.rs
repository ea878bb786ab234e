//! A real `tideway` process on a free port, for the tests and tools that need one.

use std::{
    ffi::OsStr,
    path::Path,
    process::{Child, Command, Stdio},
};

use crate::{API_KEY, Client};

/// A `tideway` process listening on `127.0.0.1`, with [`API_KEY`] as its publishers' key;
/// killed (`kill -9`) when dropped.
pub struct TidewayProcess {
    child: Child,
    /// Speaks raw HTTP to it.
    pub client: Client,
    /// `127.0.0.1:<port>`.
    pub addr: String,
}

impl TidewayProcess {
    /// Starts `binary` on a free port with `args` after the listen address and key, and
    /// `env` added to its environment; waits until it listens. It logs errors only: the
    /// outages tests cause on purpose log warnings.
    pub fn start<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        binary: &Path,
        args: &[&str],
        env: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let port = crate::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(binary)
            .args([
                "--listen",
                &addr,
                "--advertise-host",
                "127.0.0.1",
                "--api-keys",
                API_KEY,
            ])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("TIDEWAY_NODE_LOG").unwrap_or_else(|_| "error".to_owned()),
            )
            .envs(env)
            .stdout(Stdio::null())
            .spawn()
            .expect("start tideway");
        crate::wait_listening(&addr);
        // Something else listening on the port would be found by the wait above while
        // this process, unable to bind, exits: say so rather than let the test talk to it.
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tideway on {addr} exited at start ({status}); see its log above");
        }
        Self {
            child,
            client: Client {
                addr: addr.parse().expect("an address"),
            },
            addr,
        }
    }

    /// Freezes the process (`SIGSTOP`), as a long pause of its host would.
    pub fn pause(&self) {
        crate::redis::signal(self.child.id(), "-STOP");
    }

    /// Thaws a paused process (`SIGCONT`).
    pub fn resume(&self) {
        crate::redis::signal(self.child.id(), "-CONT");
    }

    /// `kill -9`: no drain, no goodbye to the store.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TidewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
