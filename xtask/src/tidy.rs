//! Tidy checks: the layering of the crates, and a `//!` line atop every Rust file.
//!
//! The layers are the design card's: transport → core → protocol, adapters behind core's
//! store trait. A dependency that breaks them fails here, before review.

use std::{path::Path, process::Command};

/// (crate, crates it must never depend on, directly or not, and why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "tideway-protocol",
        &["tokio", "hyper", "tideway-core", "tideway-http", "fred"],
        "protocol does no IO: bytes and &str in, values or errors out",
    ),
    (
        "tideway-core",
        &[
            "hyper",
            "hyper-util",
            "http-body-util",
            "tideway-http",
            "fred",
            "tideway-store-memory",
        ],
        "core owns the store trait and knows nothing of hyper or of any one store",
    ),
    (
        "tideway-store-memory",
        &["hyper", "tideway-http", "fred"],
        "a store knows core and protocol, not the transport",
    ),
    (
        // hyper is allowed here as the client of its backend, the Worker (as fred is
        // Redis's client for the Redis store): it serves nothing.
        "tideway-store-do",
        &["tideway-http", "fred", "tideway-store-memory"],
        "a store knows core and protocol and its backend's client, not the transport or another store",
    ),
    (
        "tideway-store-redis",
        &["hyper", "tideway-http", "tideway-store-memory"],
        "a store knows core and protocol, not the transport or another store",
    ),
];

/// Crates that may name `hyper` as a direct dependency: the transport, and clients of an
/// HTTP peer (the gateway's client; the Durable-Object store, whose backend is a Worker).
const HYPER_ALLOWED: &[&str] = &[
    "tideway-http",
    "tideway-client",
    "tideway-embed-example",
    "tideway-store-do",
];

/// Crates that may name `fred` as a direct dependency.
const FRED_ALLOWED: &[&str] = &["tideway-store-redis"];

pub(crate) fn check(root: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    for (krate, forbidden, why) in RULES {
        let tree = cargo_tree(root, krate, "normal")?;
        for name in *forbidden {
            if tree.iter().any(|dep| dep == name) {
                problems.push(format!("{krate} depends on {name}: {why}"));
            }
        }
    }
    for krate in workspace_crates(root)? {
        let direct = cargo_tree_depth1(root, &krate)?;
        let owners = [
            ("hyper", HYPER_ALLOWED, "tideway-http"),
            ("fred", FRED_ALLOWED, "tideway-store-redis"),
        ];
        for (name, allowed, owner) in owners {
            if !allowed.contains(&krate.as_str()) && direct.iter().any(|dep| dep == name) {
                problems.push(format!(
                    "{krate} depends on {name} directly: only {owner} knows {name}"
                ));
            }
        }
    }
    for dir in ["crates", "bins", "xtask"] {
        file_docs(&root.join(dir), &mut problems);
    }
    if problems.is_empty() {
        eprintln!("xtask: tidy: layers and file docs are in order");
        Ok(())
    } else {
        Err(format!(
            "tidy found {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

fn cargo_tree(root: &Path, krate: &str, edges: &str) -> Result<Vec<String>, String> {
    tree_names(
        root,
        &[
            "tree", "-p", krate, "-e", edges, "--prefix", "none", "--quiet",
        ],
    )
}

fn cargo_tree_depth1(root: &Path, krate: &str) -> Result<Vec<String>, String> {
    tree_names(
        root,
        &[
            "tree", "-p", krate, "-e", "normal", "--depth", "1", "--prefix", "none", "--quiet",
        ],
    )
}

fn tree_names(root: &Path, args: &[&str]) -> Result<Vec<String>, String> {
    let output = Command::new("cargo")
        .current_dir(root)
        .args(args)
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn workspace_crates(root: &Path) -> Result<Vec<String>, String> {
    let output = Command::new("cargo")
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata output: {e}"))?;
    Ok(metadata["packages"]
        .as_array()
        .map(|packages| {
            packages
                .iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Every `.rs` file starts with a `//!` line saying what it is for.
fn file_docs(dir: &Path, problems: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "node_modules")
            {
                continue;
            }
            file_docs(&path, problems);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.starts_with("//!") {
                problems.push(format!(
                    "{}: the first line must be a `//!` doc comment",
                    path.display()
                ));
            }
        }
    }
}
