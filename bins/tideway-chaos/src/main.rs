//! Fault injection against real `tideway` processes and a real `redis-server`.
//!
//! Each scenario starts Redis and gateway nodes on free ports, subscribers that record
//! every event and every `tideway.*` message they receive (through `tideway-client`, as a
//! user's program would), and publishers that record every `202` with its per-topic
//! sequence numbers. Midway it injects one fault. At the end a checker walks each
//! subscriber's record topic by topic and counts events **lost without a signal** (a
//! sequence number skipped with no `tideway.gap` naming the topic in between, or the
//! topic's newest event never received), **duplicates** and **reorders**. A scenario
//! passes only with all three at zero.
//!
//! `tideway-chaos --tideway <path> [SCENARIO...]` prints one JSON report on stdout;
//! `cargo xtask chaos` builds both binaries, runs it and writes `test-results/`.

mod check;
mod cluster;
mod scenarios;
mod sharded;

use std::{path::PathBuf, process::ExitCode};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut tideway = None;
    let mut only = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tideway" => tideway = args.next().map(PathBuf::from),
            _ => only.push(arg),
        }
    }
    let Some(tideway) = tideway else {
        eprintln!("usage: tideway-chaos --tideway <path to the tideway binary> [SCENARIO...]");
        return ExitCode::FAILURE;
    };
    let mut results = Vec::new();
    for scenario in scenarios::ALL {
        if !only.is_empty() && !only.iter().any(|name| scenario.name.starts_with(name)) {
            continue;
        }
        eprintln!("tideway-chaos: {} ...", scenario.name);
        let report = scenarios::run(scenario, &tideway).await;
        eprintln!(
            "tideway-chaos: {}: {}",
            scenario.name,
            if report["passed"] == true {
                "passed"
            } else {
                "FAILED"
            }
        );
        results.push(report);
    }
    let passed = results.iter().all(|r| r["passed"] == true);
    let report = serde_json::json!({ "kind": "chaos", "passed": passed, "scenarios": results });
    println!("{report}");
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
