//! The Durable-Object Worker (`worker/`) on workerd, Cloudflare's own runtime, started
//! through Miniflare from the project's lock file for one test, with its storage in a
//! temporary directory that outlives a restart of the process.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, mpsc},
};

/// The secret the test Worker is given (and its gateways send).
pub const WORKER_SECRET: &str = "tideway-test-worker-secret";

/// A running Worker of this test.
pub struct Worker {
    port: u16,
    storage: PathBuf,
    /// Serving https with a certificate of the test's own CA, in the storage directory.
    tls: bool,
    child: Option<Child>,
}

/// `worker/` of the repository.
fn worker_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../worker");
    dir.canonicalize().unwrap_or(dir)
}

/// Builds the Worker's bundle once per test process (esbuild takes a few milliseconds;
/// its packages come from `npm ci`, which `cargo xtask test` runs).
fn build() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *built {
        return;
    }
    let dir = worker_dir();
    assert!(
        dir.join("node_modules/miniflare").exists(),
        "the Worker's packages are missing: run `cargo xtask test` or `npm ci` in {}",
        dir.display()
    );
    let status = Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .expect("run npm (Node 20 and npm are needed for the Worker's tests)");
    assert!(
        status.success(),
        "npm run build in {} failed",
        dir.display()
    );
    *built = true;
}

impl Worker {
    /// Starts the Worker on a free port with empty storage, and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// The same over https, with a certificate for 127.0.0.1 of a CA of the test's own
    /// (see [`Worker::ca`]).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        build();
        let storage = std::env::temp_dir().join(format!(
            "tideway-worker-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        std::fs::create_dir_all(&storage).expect("the Worker's storage directory");
        if tls {
            crate::TestCa::in_dir(&storage).issue("worker", "127.0.0.1");
        }
        let mut worker = Self {
            port: super::free_port(),
            storage,
            tls,
            child: None,
        };
        worker.spawn();
        worker
    }

    fn spawn(&mut self) {
        // From its own directory: workerd refuses module paths that climb out with `..`.
        let mut child = Command::new("node")
            .arg("serve.mjs")
            .current_dir(worker_dir())
            .args(["--port", &self.port.to_string()])
            .arg("--persist")
            .arg(self.storage.join("objects"))
            .args(if self.tls {
                vec![
                    "--tls-cert".into(),
                    self.storage.join("worker.pem"),
                    "--tls-key".into(),
                    self.storage.join("worker.key"),
                ]
            } else {
                Vec::new()
            })
            .env("TIDEWAY_DO_SECRET", WORKER_SECRET)
            // Its own process group: killing it takes workerd, Miniflare's child, too.
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node worker/serve.mjs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready, started) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut told = false;
            while let Some(Ok(line)) = lines.next() {
                if !told && line.starts_with("listening ") {
                    let _ = ready.send(());
                    told = true;
                }
            }
        });
        // workerd takes a few seconds to start on a busy machine.
        if started.recv_timeout(super::TIMEOUT * 3).is_err() {
            let _ = child.kill();
            panic!("the Worker did not start on port {}", self.port);
        }
        self.child = Some(child);
    }

    /// `http://127.0.0.1:<port>`, or `https://` for [`Worker::start_tls`].
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate of a Worker started with [`Worker::start_tls`].
    pub fn ca(&self) -> PathBuf {
        self.storage.join("ca.pem")
    }

    /// The flags that make a `tideway` process node `id` on this Worker.
    pub fn node_args(&self, id: &str) -> Vec<String> {
        let url = self.url();
        [
            "--adapter",
            "do",
            "--do-url",
            &url,
            "--do-secret",
            WORKER_SECRET,
            "--node-id",
            id,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Kills the Worker's processes with SIGKILL (nothing flushed, nothing said).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::redis::signal_group(child.id(), "-KILL");
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the storage it had.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}
