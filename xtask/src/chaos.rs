//! `cargo xtask chaos`: the fault-injection scenarios against real `tideway` processes and
//! a real `redis-server` (see `bins/tideway-chaos`). Writes
//! `test-results/<date>-<commit>-chaos.json` and `.md`, and fails unless every scenario
//! ended with nothing lost silently, duplicated or reordered.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use serde_json::Value;

pub(crate) fn run(root: &Path, only: &[String]) -> Result<(), String> {
    crate::run(
        root,
        "cargo",
        &["build", "--quiet", "-p", "tideway", "-p", "tideway-chaos"],
    )?;
    let bin = root.join("target").join("debug");
    let output = Command::new(bin.join("tideway-chaos"))
        .current_dir(root)
        .arg("--tideway")
        .arg(bin.join("tideway"))
        .args(only)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("run tideway-chaos: {e}"))?;
    let report: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("tideway-chaos printed no report ({e})"))?;
    write_results(root, &report)?;
    if report["passed"] == true {
        Ok(())
    } else {
        Err("chaos: a scenario lost, duplicated or reordered events (see test-results/)".into())
    }
}

fn write_results(root: &Path, report: &Value) -> Result<(), String> {
    let (date, commit) = crate::bench::run_id(root);
    let dir = root.join("test-results");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Only the latest run is kept: git has the earlier ones.
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("-chaos.json") || name.ends_with("-chaos.md") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let stem = format!("{date}-{commit}-chaos");
    let mut full = report.clone();
    full["date"] = Value::from(date.clone());
    full["commit"] = Value::from(commit.clone());
    let text = serde_json::to_string_pretty(&full).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(format!("{stem}.json")), text + "\n").map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join(format!("{stem}.md")),
        markdown(report, &date, &commit),
    )
    .map_err(|e| e.to_string())?;
    eprintln!("xtask: wrote test-results/{stem}.json and .md");
    Ok(())
}

fn markdown(report: &Value, date: &str, commit: &str) -> String {
    let mut md = format!(
        "# Chaos run, {date} (commit {commit})\n\n\
         Real `tideway` processes and a real `redis-server`; subscribers through `tideway-client`. \
         **Lost** counts events skipped with no `tideway.gap` naming their topic (or a topic's \
         newest event never received); every scenario must end with lost, duplicated and \
         reordered at 0. *Gaps* and *streams ended* are the gateway telling subscribers, which is \
         allowed (and expected where the fault destroys data).\n\n\
         | scenario | result | accepted | failed (told) | received | gaps | streams ended | lost | dup | reorder | seconds |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let empty = Vec::new();
    for s in report["scenarios"].as_array().unwrap_or(&empty) {
        if let Some(why) = s["skipped"].as_str() {
            md.push_str(&format!(
                "| {} | skipped: {why} |||||||||\n",
                s["name"].as_str().unwrap_or("")
            ));
            continue;
        }
        let n = |key: &str| s[key].as_u64().unwrap_or(0);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            s["name"].as_str().unwrap_or(""),
            if s["passed"] == true {
                "pass"
            } else {
                "**FAIL**"
            },
            n("publishes_accepted"),
            n("publishes_failed"),
            n("events_received"),
            n("gaps_received"),
            n("streams_ended_to_resume"),
            n("lost_silently"),
            n("duplicated"),
            n("reordered"),
            s["seconds"].as_f64().unwrap_or(0.0),
        ));
    }
    md.push_str("\n## Scenarios\n\n");
    for s in report["scenarios"].as_array().unwrap_or(&empty) {
        md.push_str(&format!(
            "- **{}**: {}",
            s["name"].as_str().unwrap_or(""),
            s["what"].as_str().unwrap_or("")
        ));
        for note in s["notes"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .chain(s["unmet"].as_array().unwrap_or(&empty))
        {
            md.push_str(&format!("; {}", note.as_str().unwrap_or("")));
        }
        md.push('\n');
    }
    md
}
