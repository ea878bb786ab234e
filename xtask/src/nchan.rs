//! Nchan, the peer the bench measures Tideway against: nginx with Debian's
//! `libnginx-mod-nchan`, started on a free loopback port with a configuration written here.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::procs::{free_port, wait_listening};

const MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";
pub(crate) const INSTALL: &str = "apt-get install -y nginx libnginx-mod-nchan";

/// A running nginx: stopped (master and workers) when dropped.
pub(crate) struct Nchan {
    master: Child,
    pub(crate) addr: String,
    /// The master and its workers, for memory and CPU time.
    pub(crate) pids: Vec<u32>,
}

/// Whether nginx with Nchan is here; installs it from Debian's packages when it is not
/// and this runs as root. `Err` says how to install it.
pub(crate) fn available() -> Result<(), String> {
    let present = || {
        Path::new(MODULE).exists()
            && Command::new("nginx")
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    };
    if present() {
        return Ok(());
    }
    eprintln!("xtask: nginx with Nchan is missing; trying `{INSTALL}`");
    let installed = Command::new("sh")
        .args([
            "-c",
            &format!("DEBIAN_FRONTEND=noninteractive {INSTALL} >/dev/null"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if installed && present() {
        Ok(())
    } else {
        Err(format!(
            "nginx with Nchan is not installed and could not be installed here; run `{INSTALL}` as root"
        ))
    }
}

/// Starts nginx with `workers` worker processes, Nchan's publisher at `/pub/<channel>`,
/// its subscriber at `/sub/<channel>` and its counters at `/nchan_status`. Two workers
/// is one per core here, as `worker_processes auto` would run it, and what the bench
/// compares with; `reuseport` spreads connections evenly over them. One keeps every
/// channel in one process, which spares Nchan passing a publish between workers
/// (docs/performance.md).
pub(crate) fn start(root: &Path, workers: usize) -> Result<Nchan, String> {
    let port = free_port()?;
    let prefix: PathBuf = root.join(format!("target/tmp/nchan-{port}"));
    std::fs::create_dir_all(&prefix).map_err(|e| format!("create {}: {e}", prefix.display()))?;
    let p = prefix.display();
    let config = format!(
        r#"load_module {MODULE};
worker_processes {workers};
worker_rlimit_nofile 20000;
daemon off;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 19990; multi_accept on; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path {p}/body;
  proxy_temp_path {p}/proxy;
  fastcgi_temp_path {p}/fastcgi;
  uwsgi_temp_path {p}/uwsgi;
  scgi_temp_path {p}/scgi;
  nchan_max_reserved_memory 512M;
  server {{
    listen 127.0.0.1:{port} backlog=4096 reuseport;
    location ~ ^/pub/(.+)$ {{ nchan_publisher; nchan_channel_id $1; nchan_message_buffer_length 16; nchan_message_timeout 30s; }}
    location ~ ^/sub/(.+)$ {{ nchan_subscriber; nchan_channel_id $1; nchan_subscriber_first_message newest; }}
    location = /nchan_status {{ nchan_stub_status; }}
  }}
}}
"#
    );
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, config).map_err(|e| format!("write {}: {e}", conf.display()))?;
    let master = Command::new("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start nginx: {e}"))?;
    let addr = format!("127.0.0.1:{port}");
    let mut nchan = Nchan {
        pids: vec![master.id()],
        master,
        addr,
    };
    wait_listening(&nchan.addr)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = children(nchan.master.id());
        if started.len() >= workers {
            nchan.pids.extend(started);
            return Ok(nchan);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nginx started {} workers of {workers}",
                started.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(") ")?.1.to_owned();
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

impl Drop for Nchan {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown stops the workers too; a killed master would
        // leave them serving the port.
        let _ = Command::new("kill")
            .args(["-TERM", &self.master.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.master.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in &self.pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.master.wait();
    }
}
