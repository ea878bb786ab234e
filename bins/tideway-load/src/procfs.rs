//! What the server's processes use, read from `/proc`: memory and CPU time, summed over
//! every process of the server (Tideway is one; nginx is a master and its workers).

use anyhow::Context;
use serde_json::json;

/// Memory of a set of processes, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Memory {
    /// Resident set size, summed (pages shared between processes count in each).
    pub(crate) rss_kib: u64,
    /// Proportional set size, summed: shared pages split between their sharers, so a
    /// multi-process server is not counted twice. Per-connection figures use this.
    pub(crate) pss_kib: u64,
}

impl Memory {
    pub(crate) fn json(self) -> serde_json::Value {
        json!({ "rss_kib": self.rss_kib, "pss_kib": self.pss_kib })
    }
}

pub(crate) fn memory(pids: &[u32]) -> anyhow::Result<Memory> {
    let mut total = Memory::default();
    for pid in pids {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .with_context(|| format!("/proc/{pid}/smaps_rollup"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("{name} in /proc/{pid}/smaps_rollup"))
        };
        total.rss_kib += field("Rss:")?;
        total.pss_kib += field("Pss:")?;
    }
    Ok(total)
}

/// CPU time the processes used so far.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cpu {
    /// In their own code, seconds.
    pub(crate) user: f64,
    /// In the kernel on their behalf (system calls: the TCP work of a network server),
    /// seconds.
    pub(crate) system: f64,
}

impl Cpu {
    pub(crate) fn total(self) -> f64 {
        self.user + self.system
    }

    /// The time used between `before` and this reading.
    pub(crate) fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }

    /// The kernel's share of the time, 0 when none was used.
    pub(crate) fn system_share(self) -> f64 {
        if self.total() > 0.0 {
            self.system / self.total()
        } else {
            0.0
        }
    }
}

pub(crate) fn cpu(pids: &[u32]) -> anyhow::Result<Cpu> {
    let mut ticks = [0u64; 2];
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): state is field 3, utime
        // and stime are fields 14 and 15.
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split(' ').collect();
        for (slot, at) in ticks.iter_mut().zip([11, 12]) {
            *slot += fields
                .get(at)
                .and_then(|v| v.parse::<u64>().ok())
                .context("utime/stime in /proc/PID/stat")?;
        }
    }
    // USER_HZ is 100 on Linux's every architecture this runs on.
    Ok(Cpu {
        user: ticks[0] as f64 / 100.0,
        system: ticks[1] as f64 / 100.0,
    })
}

/// Whether a process still runs: it exists and is not a zombie waiting to be reaped.
pub(crate) fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let memory = memory(&[me]).unwrap();
        assert!(memory.rss_kib > 0 && memory.pss_kib > 0);
        // Burn a little CPU so the counter is past zero.
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let used = cpu(&[me]).unwrap();
        assert!(used.total() > 0.0);
        assert!((0.0..=1.0).contains(&used.system_share()));
        assert!(running(me));
        assert!(!running(u32::MAX));
    }
}
