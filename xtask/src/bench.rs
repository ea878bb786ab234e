//! `cargo xtask bench`: runs the divan micro-benchmarks and the whole-gateway scenarios,
//! and records their results.
//!
//! Micro results go to `benchmark-results/<date>-<commit>-micro.json` (every figure, with
//! the machine and commit) and a `.md` summary that compares medians with the previous
//! run. Scenario results (a release `tideway` driven by `tideway-load` over real sockets)
//! go to `<date>-<commit>-scenarios.json` and `.md`. Compare medians and ratios from one
//! machine; absolute times vary between machines.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

use crate::{
    nchan,
    procs::{
        Processes, free_port, start_redis, start_redis_cluster, start_reference,
        start_reference_tokio, start_worker, wait_listening,
    },
    report,
};

/// The crates whose `benches/` hold divan benchmarks.
const BENCH_CRATES: &[&str] = &["tideway-protocol", "tideway-core", "tideway-store-do"];

fn micro(root: &Path) -> Result<String, String> {
    let mut results = Vec::new();
    for krate in BENCH_CRATES {
        eprintln!("xtask: cargo bench -p {krate}");
        let output = Command::new("cargo")
            .current_dir(root)
            .args(["bench", "-p", krate, "--quiet"])
            .output()
            .map_err(|e| format!("cargo bench: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprint!("{stdout}");
        if !output.status.success() {
            return Err(format!(
                "cargo bench -p {krate} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        results.extend(parse_divan(&stdout));
    }
    if results.is_empty() {
        return Err("no benchmark results were parsed from divan's output".to_owned());
    }
    let stem = run_stem(root);
    let (date, commit) = stem.rsplit_once('-').unwrap_or((stem.as_str(), ""));
    let dirty = git(root, &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    let dir = root.join("benchmark-results");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let previous = latest_previous(&dir, "-micro.json");
    let report = json!({
        "kind": "micro",
        "date": date,
        "commit": commit,
        "dirty": dirty,
        "machine": machine(),
        "results": results,
    });
    let stem = format!("{date}-{commit}-micro");
    let json_path = dir.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text + "\n")
        .map_err(|e| format!("write {}: {e}", json_path.display()))?;
    let md_path = dir.join(format!("{stem}.md"));
    std::fs::write(&md_path, summary(&report, previous.as_ref()))
        .map_err(|e| format!("write {}: {e}", md_path.display()))?;
    eprintln!(
        "xtask: wrote {} and {}",
        json_path.display(),
        md_path.display()
    );
    Ok(format!("{date}-{commit}"))
}

/// What serves a scenario.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    /// Release `tideway` processes, one per entry of `gateways`.
    Tideway,
    /// nginx with Nchan (see `nchan`) and this many worker processes, for the
    /// side-by-side figures.
    Nchan { workers: usize },
    /// The bench's reference server (`xtask/ref-server.c`: one thread, epoll, nothing but
    /// the routes Nchan's scenarios use), for how far a figure is from this machine's
    /// limit.
    Reference,
    /// The same work on tokio in Tideway's shape (`bins/ref-tokio`): the distance from the
    /// C reference to it is what that shape costs, from it to Tideway what Tideway's own
    /// work costs.
    ReferenceTokio,
}

/// A whole-gateway scenario: the servers it starts and what `tideway-load` does.
///
/// In arguments, `{redis}` becomes the scenario's Redis URL (or a Redis Cluster's seed
/// list), `{do}` its Durable-Object Worker's, and `{addrN}` / `{pidN}` the address and
/// process id of gateway N.
struct Scenario {
    name: &'static str,
    server: Server,
    /// The shared store its gateways use.
    shared: Shared,
    gateways: &'static [&'static [&'static str]],
    load: &'static [&'static str],
}

/// What a scenario's gateways share, started for it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shared {
    /// Nothing: each gateway stands alone (the memory store).
    None,
    /// One `redis-server`.
    Redis,
    /// A six-process Redis Cluster.
    RedisCluster,
    /// The Durable-Object Worker on workerd.
    Worker,
}

const REDIS: &[&str] = &["--adapter", "redis", "--redis-url", "{redis}"];
const WORKER: &[&str] = &[
    "--adapter",
    "do",
    "--do-url",
    "{do}",
    "--do-secret",
    crate::procs::WORKER_SECRET,
];
const REDIS_CLUSTER: &[&str] = &[
    "--adapter",
    "redis",
    "--redis-cluster",
    "--redis-url",
    "{redis}",
];

/// Unicast to 2,000 subscribers on three nodes, nine publishers spread over them, at
/// `rates`, with `extra` flags for the load generator.
macro_rules! unicast_3_nodes {
    ($rates:literal $(, $extra:literal)*) => {
        &[
            "unicast",
            "--connections",
            "2000",
            "--body",
            "256",
            "--publishers",
            "9",
            $($extra,)*
            "--sub-addr",
            "{addr0},{addr1},{addr2}",
            "--pub-addr",
            "{addr0},{addr1},{addr2}",
            "--pid",
            "{pid0},{pid1},{pid2}",
            "--rates",
            $rates,
            "--knee-ms",
            "50",
        ]
    };
}
/// Unicast to 2,000 subscribers spread over three nodes, with a publisher on every node:
/// the publish rate a deployment reaches through its shared Redis. Judged by throughput
/// (p99 ≤ 50 ms): on one machine the Redis processes, the three nodes and the load
/// generator share its cores, so latency measures the crowding more than the path.
const UNICAST_3_NODES: &[&str] =
    unicast_3_nodes!("1000,2000,3000,4000,6000,8000,12000,16000,24000");

/// [`UNICAST_3_NODES`] with batches of 100: a batch is one script per 100 events on one
/// Redis, against one per event for single publishes.
const UNICAST_3_NODES_BATCH100: &[&str] = unicast_3_nodes!(
    "4000,8000,16000,24000,32000,48000,64000,96000,128000",
    "--batch",
    "100"
);

/// Idle connections: as many as the open-file cap of 20,000 per process leaves room for
/// in both the server and the load generator.
const IDLE: &[&str] = &["connections", "--connections", "19800"];
const FANOUT_2000: &[&str] = &["fanout", "--connections", "2000", "--body", "256"];
const FANOUT_10000: &[&str] = &["fanout", "--connections", "10000", "--body", "256"];
const UNICAST_2000: &[&str] = &[
    "unicast",
    "--connections",
    "2000",
    "--body",
    "256",
    "--publishers",
    "8",
];
const UNICAST_10000: &[&str] = &[
    "unicast",
    "--connections",
    "10000",
    "--body",
    "256",
    "--publishers",
    "8",
];
/// Rates for batch publishes, which go past what single publishes reach.
const BATCH_RATES: &str = "1000,2000,4000,8000,16000,32000,48000,64000,96000,128000,192000,256000";

/// The fan-out steps' rates (tideway-load's default), for batch publishes too.
const FANOUT_RATES: &str = "5,10,25,50,100,200,400,800,1600,3200";

/// `unicast` or `fanout` (`shape`) to 2,000 subscribers with batches of `n` events, at
/// `rates`. Judged by throughput: an event waits for those before it in its batch, so the
/// knee allows a p99 of 50 ms (fan-out's) rather than unicast's 2 ms.
macro_rules! batched {
    ($shape:literal, $n:literal, $rates:expr) => {
        &[
            $shape,
            "--connections",
            "2000",
            "--body",
            "256",
            "--publishers",
            "8",
            "--batch",
            $n,
            "--rates",
            $rates,
            "--knee-ms",
            "50",
        ]
    };
}

const DROP: &[&str] = &[
    "drop",
    "--events",
    "40000",
    "--body",
    "1024",
    "--concurrency",
    "8",
];
const LATENCY: &[&str] = &["latency", "--events", "2000", "--body", "256"];

const fn tideway(name: &'static str, load: &'static [&'static str]) -> Scenario {
    Scenario {
        name,
        server: Server::Tideway,
        shared: Shared::None,
        gateways: &[&[]],
        load,
    }
}

/// Nchan as nginx runs it by default here: a worker per core.
const fn nchan(name: &'static str, load: &'static [&'static str]) -> Scenario {
    nchan_workers(name, 2, load)
}

/// Nchan with `workers` worker processes. With one, every channel is in it: its best
/// unicast on this machine, where two workers pass most publishes between them
/// (docs/performance.md).
const fn nchan_workers(
    name: &'static str,
    workers: usize,
    load: &'static [&'static str],
) -> Scenario {
    Scenario {
        name,
        server: Server::Nchan { workers },
        shared: Shared::None,
        gateways: &[],
        load,
    }
}

const fn reference(name: &'static str, load: &'static [&'static str]) -> Scenario {
    Scenario {
        name,
        server: Server::Reference,
        shared: Shared::None,
        gateways: &[],
        load,
    }
}

const fn reference_tokio(name: &'static str, load: &'static [&'static str]) -> Scenario {
    Scenario {
        name,
        server: Server::ReferenceTokio,
        shared: Shared::None,
        gateways: &[],
        load,
    }
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "stalled",
        shared: Shared::None,
        server: Server::Tideway,
        gateways: &[&["--write-timeout", "5s"]],
        load: &[
            "stalled",
            "--connections",
            "1000",
            "--events",
            "3000",
            "--body",
            "1024",
        ],
    },
    tideway("connections", IDLE),
    nchan("connections-nchan", IDLE),
    tideway("fanout-2000", FANOUT_2000),
    reference("fanout-2000-reference", FANOUT_2000),
    tideway(
        "fanout-2000-ws",
        &[
            "fanout",
            "--connections",
            "2000",
            "--body",
            "256",
            "--transport",
            "ws",
        ],
    ),
    nchan("fanout-2000-nchan", FANOUT_2000),
    tideway("fanout-10000", FANOUT_10000),
    tideway(
        "fanout-10000-ws",
        &[
            "fanout",
            "--connections",
            "10000",
            "--body",
            "256",
            "--transport",
            "ws",
        ],
    ),
    nchan("fanout-10000-nchan", FANOUT_10000),
    reference("fanout-10000-reference", FANOUT_10000),
    tideway("unicast-2000", UNICAST_2000),
    nchan("unicast-2000-nchan", UNICAST_2000),
    nchan_workers("unicast-2000-nchan-1worker", 1, UNICAST_2000),
    reference("unicast-2000-reference", UNICAST_2000),
    reference_tokio("unicast-2000-reference-tokio", UNICAST_2000),
    tideway("unicast-10000", UNICAST_10000),
    nchan("unicast-10000-nchan", UNICAST_10000),
    nchan_workers("unicast-10000-nchan-1worker", 1, UNICAST_10000),
    reference("unicast-10000-reference", UNICAST_10000),
    tideway("unicast-2000-batch1", batched!("unicast", "1", BATCH_RATES)),
    tideway(
        "unicast-2000-batch10",
        batched!("unicast", "10", BATCH_RATES),
    ),
    tideway(
        "unicast-2000-batch100",
        batched!("unicast", "100", BATCH_RATES),
    ),
    reference(
        "unicast-2000-batch100-reference",
        batched!("unicast", "100", BATCH_RATES),
    ),
    tideway("fanout-2000-batch1", batched!("fanout", "1", FANOUT_RATES)),
    tideway(
        "fanout-2000-batch10",
        batched!("fanout", "10", FANOUT_RATES),
    ),
    tideway(
        "fanout-2000-batch100",
        batched!("fanout", "100", FANOUT_RATES),
    ),
    tideway("drop-memory", DROP),
    nchan("drop-nchan", DROP),
    reference("drop-reference", DROP),
    Scenario {
        name: "drop-redis",
        shared: Shared::Redis,
        server: Server::Tideway,
        gateways: &[REDIS],
        load: DROP,
    },
    tideway("drain", &["drain", "--connections", "1000"]),
    tideway("latency-memory", LATENCY),
    Scenario {
        name: "latency-redis-same-node",
        shared: Shared::Redis,
        server: Server::Tideway,
        gateways: &[REDIS],
        load: LATENCY,
    },
    Scenario {
        name: "latency-redis-cross-node",
        shared: Shared::Redis,
        server: Server::Tideway,
        gateways: &[REDIS, REDIS, REDIS],
        load: &[
            "latency",
            "--events",
            "2000",
            "--body",
            "256",
            "--sub-addr",
            "{addr1}",
        ],
    },
    Scenario {
        name: "latency-worker-cross-node",
        shared: Shared::Worker,
        server: Server::Tideway,
        gateways: &[WORKER, WORKER, WORKER],
        load: &[
            "latency",
            "--events",
            "2000",
            "--body",
            "256",
            "--sub-addr",
            "{addr1}",
        ],
    },
    Scenario {
        name: "unicast-3-nodes-one-redis",
        shared: Shared::Redis,
        server: Server::Tideway,
        gateways: &[REDIS, REDIS, REDIS],
        load: UNICAST_3_NODES,
    },
    Scenario {
        name: "unicast-3-nodes-one-redis-batch100",
        shared: Shared::Redis,
        server: Server::Tideway,
        gateways: &[REDIS, REDIS, REDIS],
        load: UNICAST_3_NODES_BATCH100,
    },
    Scenario {
        name: "unicast-3-nodes-redis-cluster",
        shared: Shared::RedisCluster,
        server: Server::Tideway,
        gateways: &[REDIS_CLUSTER, REDIS_CLUSTER, REDIS_CLUSTER],
        load: UNICAST_3_NODES,
    },
    Scenario {
        name: "cluster-fanout-2000",
        shared: Shared::Redis,
        server: Server::Tideway,
        gateways: &[REDIS, REDIS, REDIS],
        load: &[
            "fanout",
            "--connections",
            "2000",
            "--body",
            "256",
            "--sub-addr",
            "{addr1},{addr2}",
        ],
    },
    Scenario {
        name: "cluster-fanout-2000-worker",
        shared: Shared::Worker,
        server: Server::Tideway,
        gateways: &[WORKER, WORKER, WORKER],
        load: &[
            "fanout",
            "--connections",
            "2000",
            "--body",
            "256",
            "--sub-addr",
            "{addr1},{addr2}",
        ],
    },
];

/// `cargo xtask bench [--no-micro] [--repeat N] [SCENARIO-PREFIX...]`: with prefixes,
/// only the scenarios whose names start with one of them run (`name$`: that one alone); each runs N times (1 by
/// default) and the summary judges medians.
pub(crate) fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let micro_too = !args.iter().any(|a| a == "--no-micro");
    let repeat_at = args.iter().position(|a| a == "--repeat");
    let repeat = match repeat_at {
        Some(at) => args
            .get(at + 1)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or("--repeat needs a count of 1 or more")?,
        None => 1,
    };
    let only: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && repeat_at.is_none_or(|at| *i != at + 1))
        .map(|(_, a)| a.as_str())
        .collect();
    let stem = if micro_too {
        micro(root)?
    } else {
        run_stem(root)
    };
    scenarios(root, &stem, &only, repeat)
}

/// `<date>-<commit>` of a run.
fn run_stem(root: &Path) -> String {
    let (date, commit) = run_id(root);
    format!("{date}-{commit}")
}

/// The UTC date and time and the short commit a run's results are named by.
pub(crate) fn run_id(root: &Path) -> (String, String) {
    let commit =
        git(root, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "uncommitted".into());
    let date = command_output("date", &["-u", "+%Y-%m-%dT%H%M%SZ"])
        .unwrap_or_else(|| "unknown-date".into());
    (date, commit)
}

fn scenarios(root: &Path, stem: &str, only: &[&str], repeat: usize) -> Result<(), String> {
    eprintln!("xtask: building release tideway, tideway-load and ref-tokio");
    let build = Command::new("cargo")
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "tideway",
            "-p",
            "tideway-load",
            "-p",
            "ref-tokio",
        ])
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !build.success() {
        return Err("cargo build --release failed".to_owned());
    }
    let bin = root.join("target/release");
    // A name ending in `$` picks that scenario alone, not every one it begins.
    let wanted = |s: &Scenario| {
        only.is_empty()
            || only.iter().any(|p| match p.strip_suffix('$') {
                Some(exact) => s.name == exact,
                None => s.name.starts_with(p),
            })
    };
    let nchan_ready = if SCENARIOS
        .iter()
        .any(|s| wanted(s) && matches!(s.server, Server::Nchan { .. }))
    {
        nchan::available()
    } else {
        Ok(())
    };
    let selected: Vec<&Scenario> = SCENARIOS.iter().filter(|s| wanted(s)).collect();
    let mut results = Vec::new();
    // In rounds, each scenario once per round: a stretch of a noisy machine (a neighbour
    // on the host, CPU stolen from this VM) then falls on one run of every scenario, not
    // on every run of one, and ratios between scenarios stay fair.
    for run in 0..repeat {
        for &scenario in &selected {
            eprintln!(
                "xtask: scenario {} (run {}/{repeat})",
                scenario.name,
                run + 1
            );
            let before = cpu_ticks();
            let outcome = match (scenario.server, &nchan_ready) {
                (Server::Nchan { .. }, Err(why)) => Err(why.clone()),
                _ => run_scenario(root, &bin, scenario),
            };
            let stolen = before
                .zip(cpu_ticks())
                .and_then(|((steal, all), (steal2, all2))| {
                    (all2 > all).then(|| steal2.saturating_sub(steal) as f64 / (all2 - all) as f64)
                });
            let mut entry = json!({
                "scenario": scenario.name,
                "run": run + 1,
                "server": match scenario.server { Server::Tideway => "tideway", Server::Nchan { .. } => "nchan", Server::Reference => "reference", Server::ReferenceTokio => "reference-tokio" },
                "redis": matches!(scenario.shared, Shared::Redis | Shared::RedisCluster),
                "redis_cluster": scenario.shared == Shared::RedisCluster,
                "worker": scenario.shared == Shared::Worker,
                "gateway_flags": scenario.gateways,
                "load_args": scenario.load,
                "host_steal_share": stolen,
            });
            if let Server::Nchan { workers } = scenario.server {
                entry["nchan_workers"] = json!(workers);
            }
            match outcome {
                Ok(value) => {
                    eprintln!("xtask: {value}");
                    entry["result"] = value;
                }
                Err(err) => {
                    // One scenario that fails does not lose the others' figures.
                    eprintln!("xtask: scenario {} failed: {err}", scenario.name);
                    entry["error"] = Value::String(err);
                }
            }
            results.push(entry);
        }
    }
    // Reported scenario by scenario, in the bench's order, each one's runs together.
    let order = |entry: &Value| {
        selected
            .iter()
            .position(|s| entry["scenario"].as_str() == Some(s.name))
    };
    results.sort_by_key(|entry| (order(entry), entry["run"].as_u64()));
    let dir = root.join("benchmark-results");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let previous = latest_previous(&dir, "-scenarios.json");
    let mut report = json!({
        "kind": "scenarios",
        "run": stem,
        "repeat": repeat,
        "machine": machine(),
        "results": results,
    });
    report["headline"] = report::headline(&report);
    let json_path = dir.join(format!("{stem}-scenarios.json"));
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text + "\n")
        .map_err(|e| format!("write {}: {e}", json_path.display()))?;
    let plots = report::plots(&report);
    for (name, svg) in &plots {
        let path = dir.join(format!("{stem}-{name}.svg"));
        std::fs::write(&path, svg).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    let plot_names: Vec<String> = plots
        .iter()
        .map(|(name, _)| format!("{stem}-{name}.svg"))
        .collect();
    let md_path = dir.join(format!("{stem}-scenarios.md"));
    std::fs::write(
        &md_path,
        report::summary(&report, previous.as_ref(), &plot_names),
    )
    .map_err(|e| format!("write {}: {e}", md_path.display()))?;
    eprintln!(
        "xtask: wrote {} and {}",
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

/// Starts what `scenario` needs, runs `tideway-load` against it and returns its JSON.
fn run_scenario(root: &Path, bin: &Path, scenario: &Scenario) -> Result<Value, String> {
    let mut processes = Processes(Vec::new());
    let mut vars: Vec<(String, String)> = Vec::new();
    match scenario.shared {
        Shared::None => {}
        Shared::Redis => vars.push(("{redis}".into(), start_redis(&mut processes)?)),
        Shared::RedisCluster => {
            vars.push(("{redis}".into(), start_redis_cluster(&mut processes)?));
        }
        Shared::Worker => {
            crate::worker(root)?;
            vars.push(("{do}".into(), start_worker(root, &mut processes)?));
        }
    }
    let mut target = Vec::new();
    let mut _nchan = None;
    match scenario.server {
        Server::Tideway => {
            for (n, flags) in scenario.gateways.iter().enumerate() {
                let addr = format!("127.0.0.1:{}", free_port()?);
                let flags: Vec<String> = flags.iter().map(|f| substitute(f, &vars)).collect();
                let child = Command::new(bin.join("tideway"))
                    .args([
                        "--listen",
                        &addr,
                        "--api-keys",
                        "bench-key",
                        "--node-id",
                        &format!("bench-{n}"),
                    ])
                    .args(&flags)
                    .env("RUST_LOG", "warn")
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| format!("start tideway: {e}"))?;
                vars.push((format!("{{pid{n}}}"), child.id().to_string()));
                processes.0.push(child);
                wait_listening(&addr)?;
                vars.push((format!("{{addr{n}}}"), addr));
            }
            target.extend(["--key", "bench-key"].map(String::from));
            target.extend([
                "--addr".into(),
                substitute("{addr0}", &vars),
                "--pid".into(),
                substitute("{pid0}", &vars),
            ]);
        }
        Server::Reference | Server::ReferenceTokio => {
            let (addr, pid) = if scenario.server == Server::Reference {
                start_reference(root, &mut processes)?
            } else {
                start_reference_tokio(bin, &mut processes)?
            };
            target.extend([
                "--target".into(),
                "nchan".into(),
                "--addr".into(),
                addr,
                "--pid".into(),
                pid.to_string(),
            ]);
        }
        Server::Nchan { workers } => {
            let server = nchan::start(root, workers)?;
            let pids: Vec<String> = server.pids.iter().map(u32::to_string).collect();
            target.extend([
                "--target".into(),
                "nchan".into(),
                "--addr".into(),
                server.addr.clone(),
                "--pid".into(),
                pids.join(","),
            ]);
            _nchan = Some(server);
        }
    }
    let load: Vec<String> = scenario.load.iter().map(|a| substitute(a, &vars)).collect();
    let output = Command::new(bin.join("tideway-load"))
        .args(&load)
        .args(&target)
        .env("RUST_BACKTRACE", "0")
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("run tideway-load: {e}"))?;
    drop(processes);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(last.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("scenario {} printed no JSON ({e})", scenario.name))
}

fn substitute(text: &str, vars: &[(String, String)]) -> String {
    vars.iter().fold(text.to_owned(), |text, (name, value)| {
        text.replace(name, value)
    })
}

/// Parses divan's result table into one object per benchmark and argument.
fn parse_divan(output: &str) -> Vec<Value> {
    let mut results = Vec::new();
    // Names by tree depth: the bench file, then the function, then the argument.
    let mut path: Vec<String> = Vec::new();
    for line in output.lines() {
        // The tree drawing (`│  ├─ `) comes first; after it, columns are split by `│`.
        let body_at = line
            .char_indices()
            .find(|&(_, c)| !(c.is_whitespace() || "├╰─│".contains(c)))
            .map_or(line.len(), |(at, _)| at);
        let depth = line[..body_at].chars().count() / 3;
        let columns: Vec<&str> = line[body_at..].split('│').collect();
        let mut words = columns[0].split_whitespace();
        let Some(name) = words.next() else { continue };
        let fastest: Vec<&str> = words.collect();
        if depth == 0 && fastest.first() == Some(&"fastest") {
            path = vec![name.to_owned()];
            continue;
        }
        // Throughput rows start with a figure, not a name.
        if name.starts_with(|c: char| c.is_ascii_digit()) && fastest.len() == 1 {
            continue;
        }
        path.truncate(depth);
        path.push(name.to_owned());
        if fastest.len() == 2 && columns.len() >= 6 {
            let time = |s: &str| parse_time(s.trim());
            results.push(json!({
                "bench": path.join("/"),
                "fastest_ns": parse_time(&fastest.join(" ")),
                "slowest_ns": time(columns[1]),
                "median_ns": time(columns[2]),
                "mean_ns": time(columns[3]),
                "samples": columns[4].trim().parse::<u64>().ok(),
                "iters": columns[5].trim().parse::<u64>().ok(),
            }));
        }
    }
    results
}

fn parse_time(text: &str) -> Option<f64> {
    let (number, unit) = text.split_once(' ')?;
    let number: f64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "ps" => 0.001,
        "ns" => 1.0,
        "µs" | "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(number * factor)
}

fn summary(report: &Value, previous: Option<&(PathBuf, Value)>) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Micro-benchmarks, {} (commit {})\n",
        report["date"].as_str().unwrap_or(""),
        report["commit"].as_str().unwrap_or("")
    );
    let machine = &report["machine"];
    let _ = writeln!(
        md,
        "Machine: {} cores, {}, kernel {}. Medians of divan samples; compare ratios, not absolute times.\n",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?")
    );
    let previous_results = previous.map(|(path, value)| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (
            name,
            value["results"].as_array().cloned().unwrap_or_default(),
        )
    });
    match &previous_results {
        Some((name, _)) => {
            let _ = writeln!(
                md,
                "| benchmark | median | previous ({name}) | ratio |\n|---|---:|---:|---:|"
            );
        }
        None => {
            let _ = writeln!(md, "| benchmark | median |\n|---|---:|");
        }
    }
    for result in report["results"].as_array().into_iter().flatten() {
        let bench = result["bench"].as_str().unwrap_or("");
        let median = result["median_ns"].as_f64();
        let _ = write!(md, "| `{bench}` | {} |", human(median));
        if let Some((_, before)) = &previous_results {
            let old = before
                .iter()
                .find(|r| r["bench"].as_str() == Some(bench))
                .and_then(|r| r["median_ns"].as_f64());
            let ratio = match (median, old) {
                (Some(now), Some(old)) if old > 0.0 => format!("{:.2}×", now / old),
                _ => "new".to_owned(),
            };
            let _ = write!(md, " {} | {ratio} |", human(old));
        }
        md.push('\n');
    }
    md
}

fn human(ns: Option<f64>) -> String {
    match ns {
        None => "–".to_owned(),
        Some(ns) if ns >= 1e6 => format!("{:.3} ms", ns / 1e6),
        Some(ns) if ns >= 1e3 => format!("{:.3} µs", ns / 1e3),
        Some(ns) => format!("{ns:.1} ns"),
    }
}

/// The newest results in `dir` whose name ends with `suffix` (`-micro.json`,
/// `-scenarios.json`), read before this run writes its own.
fn latest_previous(dir: &Path, suffix: &str) -> Option<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    let path = files.pop()?;
    let value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    Some((path, value))
}

/// The machine's CPU time so far, from `/proc/stat`: (stolen by the host, all), in ticks.
/// A VM's host can take its CPU for a while; a run in such a stretch measures less of
/// the servers and more of the host.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user's).
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map_while(|t| t.parse().ok())
        .collect();
    Some((*ticks.get(7)?, ticks.iter().sum()))
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu": cpu,
        "kernel": command_output("uname", &["-r"]),
        "rustc": command_output("rustc", &["--version"]),
    })
}

pub(crate) fn git(root: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

pub(crate) fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_divan_tables() {
        let output = "\
fanout        fastest       │ slowest       │ median        │ mean          │ samples │ iters
├─ drop_path                │               │               │               │         │
│  ├─ 1       229.7 ns      │ 3.494 µs      │ 230.7 ns      │ 265.9 ns      │ 100     │ 100
│  ╰─ 8       298.8 ns      │ 302.7 ns      │ 300.2 ns      │ 300.8 ns      │ 100     │ 800
╰─ fan_out                  │               │               │               │         │
   ├─ 1       720.7 ns      │ 7.019 µs      │ 785.7 ns      │ 1.24 µs       │ 30      │ 30
   │          1.387 Mitem/s │ 142.4 Kitem/s │ 1.272 Mitem/s │ 806.3 Kitem/s │         │
   ╰─ 10000   723.3 µs      │ 2.503 ms      │ 873.8 µs      │ 1.002 ms      │ 30      │ 30
              13.82 Mitem/s │ 3.993 Mitem/s │ 11.44 Mitem/s │ 9.975 Mitem/s │         │
";
        let results = parse_divan(output);
        let names: Vec<&str> = results
            .iter()
            .map(|r| r["bench"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "fanout/drop_path/1",
                "fanout/drop_path/8",
                "fanout/fan_out/1",
                "fanout/fan_out/10000"
            ]
        );
        assert_eq!(results[3]["median_ns"].as_f64(), Some(873_800.0));
        assert_eq!(results[0]["slowest_ns"].as_f64(), Some(3494.0));
        assert_eq!(results[3]["iters"].as_u64(), Some(30));
    }
}
