//! What `cargo xtask bench` writes about the scenarios: the headline figures (kept in the
//! JSON so the next run can compare), the targets of the performance issue met or missed
//! and by how much, Tideway/Nchan ratios, per-scenario tables and the SVG plots.

use std::{fmt::Write as _, path::PathBuf};

use serde_json::{Value, json};

use crate::svg::{Chart, Series, line_chart};

/// Every finished run of scenario `name` (one per `--repeat`).
fn runs<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["scenario"].as_str() == Some(name))
        .map(|e| &e["result"])
        .filter(|r| !r.is_null())
        .collect()
}

/// The first finished run of scenario `name`: its steps for the plots and the fallback
/// comparisons. Figures use [`knee`] and [`at`], the medians over every run.
fn result<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    runs(report, name).into_iter().next()
}

/// The median of `values` (the upper one of an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The most delivered events/s of a stepped scenario at a step with p99 within
/// `limit_us` and nothing lost (0 when none), the median over its runs: a knee at a
/// stricter line than the scenario's own.
fn knee_within(report: &Value, name: &str, limit_us: f64) -> Option<f64> {
    median(
        runs(report, name)
            .into_iter()
            .map(|r| best_within(r, limit_us))
            .collect(),
    )
}

/// Whether every run of stepped scenario `name` was still keeping up at its highest
/// offered rate (delivered within 2% of offered, healthy at line `limit_us`): its best
/// figure is then where the steps end, not where the server does, a lower bound.
fn kept_up_to_the_top(report: &Value, name: &str, limit_us: f64) -> bool {
    let runs = runs(report, name);
    !runs.is_empty()
        && runs.iter().all(|r| {
            r["steps"]
                .as_array()
                .and_then(|steps| steps.last())
                .is_some_and(|top| {
                    let offered = top["offered_events_per_second"].as_f64().unwrap_or(0.0);
                    let delivered = top["delivered_events_per_second"].as_f64().unwrap_or(0.0);
                    healthy(top, limit_us) && offered > 0.0 && delivered >= 0.98 * offered
                })
        })
}

/// Whether a step is healthy at line `limit_us`: p99 within it and nothing lost.
fn healthy(step: &Value, limit_us: f64) -> bool {
    step["publish_to_receive_us"]["p99"]
        .as_f64()
        .is_some_and(|p99| p99 <= limit_us)
        && step["lost"].as_u64() == Some(0)
}

/// The most delivered events/s of one run at a step with p99 within `limit_us` and
/// nothing lost (0 when none).
fn best_within(result: &Value, limit_us: f64) -> f64 {
    result["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| healthy(s, limit_us))
        .filter_map(|s| s["delivered_events_per_second"].as_f64())
        .fold(0.0, f64::max)
}

/// Server CPU per delivered event of `ours` against `reference` at the offered rates
/// both ran healthily — nothing lost, p99 within the scenario's knee line — each side's
/// figure at a rate the median over its healthy runs: the median of the per-rate ratios,
/// with the medians of each side and how many rates were compared. A step past the line
/// measures a queue or a machine whose CPU was taken (both were seen here), not the cost
/// of an event.
fn cpu_against(report: &Value, ours: &str, reference: &str) -> Option<(f64, f64, f64, usize)> {
    let per_rate = |name: &str| -> Vec<(f64, f64)> {
        let mut by_rate: Vec<(f64, Vec<f64>)> = Vec::new();
        for run in runs(report, name) {
            let line_us = run["knee_ms"].as_f64().unwrap_or(f64::MAX) * 1000.0;
            let steps = run["steps"].as_array().into_iter().flatten();
            for step in steps.filter(|s| healthy(s, line_us)) {
                let (Some(rate), Some(cpu)) = (
                    step["offered_events_per_second"].as_f64(),
                    step["server_cpu_us_per_delivery"].as_f64(),
                ) else {
                    continue;
                };
                match by_rate.iter_mut().find(|(r, _)| *r == rate) {
                    Some((_, cpus)) => cpus.push(cpu),
                    None => by_rate.push((rate, vec![cpu])),
                }
            }
        }
        by_rate
            .into_iter()
            .filter_map(|(rate, cpus)| Some((rate, median(cpus)?)))
            .collect()
    };
    let theirs = per_rate(reference);
    let pairs: Vec<(f64, f64)> = per_rate(ours)
        .into_iter()
        .filter_map(|(rate, cpu)| {
            let (_, other) = theirs.iter().find(|(r, _)| *r == rate)?;
            (*other > 0.0).then_some((cpu, *other))
        })
        .collect();
    let ratio = median(pairs.iter().map(|(ours, theirs)| ours / theirs).collect())?;
    let ours = median(pairs.iter().map(|(ours, _)| *ours).collect())?;
    let theirs = median(pairs.iter().map(|(_, theirs)| *theirs).collect())?;
    Some((ratio, ours, theirs, pairs.len()))
}

/// Where a missed CPU target's distance lies, from the tokio reference (the C reference's
/// work in Tideway's shape) measured in the same run: how far the shape alone is from the
/// minimal server, and how far Tideway is from the shape.
fn tokio_share(report: &Value) -> Option<String> {
    let (shape, _, _, _) = cpu_against(
        report,
        "unicast-2000-reference-tokio",
        "unicast-2000-reference",
    )?;
    let (ours, _, _, _) = cpu_against(report, "unicast-2000", "unicast-2000-reference-tokio")?;
    Some(format!(
        "; the tokio reference (the same work in Tideway's shape: a task per connection, a wake-up per delivery) is at {shape:.2}× the minimal server, Tideway at {ours:.2}× the tokio reference"
    ))
}

/// Delivered events/s at a stepped scenario's knee (0 when no step stayed under it),
/// the median over its runs.
fn knee(report: &Value, name: &str) -> Option<f64> {
    median(
        runs(report, name)
            .into_iter()
            .map(|r| {
                r["knee"]["delivered_events_per_second"]
                    .as_f64()
                    .unwrap_or(0.0)
            })
            .collect(),
    )
}

/// The figure at `path` of scenario `name`, the median over its runs.
fn at(report: &Value, name: &str, path: &[&str]) -> Option<f64> {
    median(
        runs(report, name)
            .into_iter()
            .filter_map(|r| path.iter().fold(r, |v, key| &v[*key]).as_f64())
            .collect(),
    )
}

/// The figures a run is judged by, each with its unit and which way is better.
pub(crate) fn headline(report: &Value) -> Value {
    let mut figures = Vec::new();
    let mut add = |name: String, value: Option<f64>, unit: &str, higher_is_better: bool| {
        if let Some(value) = value {
            figures.push(json!({ "name": name, "value": value, "unit": unit, "higher_is_better": higher_is_better }));
        }
    };
    let mut seen = std::collections::HashSet::new();
    for entry in report["results"].as_array().into_iter().flatten() {
        let name = entry["scenario"].as_str().unwrap_or("");
        // One line per scenario, whatever the repeats: medians over its runs.
        let Some(r) = result(report, name) else {
            continue;
        };
        if !seen.insert(name) {
            continue;
        }
        let at = |path: &[&str]| at(report, name, path);
        match r["scenario"].as_str() {
            Some("fanout" | "unicast") => {
                add(
                    format!("{name}: delivered events/s at the knee"),
                    knee(report, name),
                    "events/s",
                    true,
                );
            }
            Some("connections") => {
                add(
                    format!("{name}: memory per idle connection"),
                    at(&["bytes_per_connection_pss"]),
                    "bytes",
                    false,
                );
                add(
                    format!("{name}: seconds to connect 10,000"),
                    at(&["seconds_to_connect_first_10000"]),
                    "s",
                    false,
                );
            }
            Some("drop") => {
                add(
                    format!("{name}: publishes to nobody/s"),
                    at(&["to_nobody", "requests_per_second"]),
                    "requests/s",
                    true,
                );
                add(
                    format!("{name}: delivered publishes/s"),
                    at(&["delivered", "requests_per_second"]),
                    "requests/s",
                    true,
                );
            }
            Some("latency") => {
                add(
                    format!("{name}: p50 publish→receive"),
                    at(&["publish_to_receive_us", "p50"]),
                    "µs",
                    false,
                );
                add(
                    format!("{name}: p99 publish→receive"),
                    at(&["publish_to_receive_us", "p99"]),
                    "µs",
                    false,
                );
            }
            Some("stalled") => add(
                format!("{name}: RSS per stalled connection"),
                at(&["bytes_per_stalled_connection"]),
                "bytes",
                false,
            ),
            Some("drain") => add(
                format!("{name}: seconds until the last stream closed"),
                at(&["seconds_until_last_stream_closed"]),
                "s",
                false,
            ),
            _ => {}
        }
    }
    Value::Array(figures)
}

/// One target of the performance issue, judged.
struct Judged {
    target: &'static str,
    measured: String,
    met: Option<bool>,
    distance: String,
}

fn ratio_target(
    target: &'static str,
    ours: Option<f64>,
    theirs: Option<f64>,
    at_least: f64,
    what: &str,
) -> Judged {
    match (ours, theirs) {
        (Some(ours), Some(theirs)) if theirs > 0.0 => {
            let ratio = ours / theirs;
            Judged {
                target,
                measured: format!("{} vs {} {what}: {ratio:.2}×", si(ours), si(theirs)),
                met: Some(ratio >= at_least),
                distance: if ratio >= at_least {
                    format!("goal {at_least}×")
                } else {
                    format!(
                        "goal {at_least}×: short by {:.2}×",
                        at_least / ratio.max(1e-9)
                    )
                },
            }
        }
        _ => Judged {
            target,
            measured: "not measured (a scenario failed or was skipped)".into(),
            met: None,
            distance: String::new(),
        },
    }
}

/// Fan-out against Nchan at the knee; when neither server has one (no step kept p99 under
/// the threshold), the figures that say why and how the two compare under it.
fn stepped_target(
    report: &Value,
    target: &'static str,
    (ours, our_name): (&str, &str),
    (theirs, their_name): (&str, &str),
    at_least: f64,
    needs_knee: bool,
) -> Judged {
    let (our_knee, their_knee) = (knee(report, ours), knee(report, theirs));
    if our_knee.unwrap_or(0.0) > 0.0 || their_knee.unwrap_or(0.0) > 0.0 {
        return ratio_target(target, our_knee, their_knee, at_least, "events/s");
    }
    let (Some(our), Some(their)) = (result(report, ours), result(report, theirs)) else {
        return ratio_target(target, None, None, at_least, "events/s");
    };
    let first_p99 = |r: &Value| {
        r["steps"][0]["publish_to_receive_us"]["p99"]
            .as_f64()
            .unwrap_or(0.0)
            / 1000.0
    };
    let threshold = our["knee_ms"].as_f64().unwrap_or(50.0);
    // The best delivered rate with p99 within the scenario's stop line (5× the knee's).
    let best = |r: &Value| best_within(r, threshold * 5000.0);
    let (ours_best, theirs_best) = (best(our), best(their));
    let ratio = if theirs_best > 0.0 {
        ours_best / theirs_best
    } else {
        0.0
    };
    Judged {
        target,
        measured: format!(
            "neither keeps p99 ≤ {threshold} ms at any rate (p99 at the lowest rate: {our_name} {:.0} ms, {their_name} {:.0} ms); best with p99 ≤ {:.0} ms: {} vs {} events/s, {ratio:.2}×",
            first_p99(our),
            first_p99(their),
            threshold * 5.0,
            si(ours_best),
            si(theirs_best),
        ),
        met: Some(!needs_knee && ratio >= at_least),
        distance: if needs_knee {
            format!(
                "p99 at the lowest rate is {:.1}× the {threshold} ms goal: one event is one write per subscriber",
                first_p99(our) / threshold
            )
        } else {
            format!("goal {at_least}×, compared under the stop line (no knee)")
        },
    }
}

/// Fan-out at a delivered rate: the p99 of the first step whose publishes reach `rate`
/// events/s in all (publishes/s × subscribers), against `limit_ms`.
fn fan_out_at(
    report: &Value,
    target: &'static str,
    name: &str,
    rate: f64,
    limit_ms: f64,
) -> Judged {
    let Some(r) = result(report, name) else {
        return Judged {
            target,
            measured: "not measured (a scenario failed or was skipped)".into(),
            met: None,
            distance: String::new(),
        };
    };
    let subscribers = r["subscribers"].as_f64().unwrap_or(0.0);
    let steps: Vec<&Value> = r["steps"].as_array().into_iter().flatten().collect();
    let reached = steps.iter().find(|s| {
        s["offered_events_per_second"]
            .as_f64()
            .is_some_and(|p| p * subscribers >= rate)
    });
    let Some(step) = reached else {
        let last = steps
            .last()
            .and_then(|s| s["offered_events_per_second"].as_f64())
            .unwrap_or(0.0);
        return Judged {
            target,
            measured: format!(
                "the scenario stopped at {} events/s offered, short of {}",
                si(last * subscribers),
                si(rate)
            ),
            met: Some(false),
            distance: String::new(),
        };
    };
    let p99 = step["publish_to_receive_us"]["p99"]
        .as_f64()
        .unwrap_or(f64::MAX)
        / 1000.0;
    let lost = step["lost"].as_u64().unwrap_or(0);
    Judged {
        target,
        measured: format!(
            "at {} publishes/s ({} events/s delivered): p99 {p99:.0} ms, lost {lost}",
            step["offered_events_per_second"],
            si(step["delivered_events_per_second"].as_f64().unwrap_or(0.0))
        ),
        met: Some(p99 <= limit_ms && lost == 0),
        distance: if p99 <= limit_ms {
            String::new()
        } else {
            let mut distance = format!("{:.1}× the {limit_ms} ms goal", p99 / limit_ms);
            if let Some(floor) = reference_fan_out(report, &format!("{name}-reference"), rate) {
                distance.push_str("; ");
                distance.push_str(&floor);
            }
            distance
        },
    }
}

/// What the bench's minimal reference server did in scenario `name` (the same fan-out):
/// its p99 at the first step that offers `rate` delivered events/s, or at its lowest step
/// and where it stopped when it never got there. How far the machine itself is from a
/// fan-out target.
fn reference_fan_out(report: &Value, name: &str, rate: f64) -> Option<String> {
    let r = result(report, name)?;
    let subscribers = r["subscribers"].as_f64()?;
    let steps: Vec<&Value> = r["steps"].as_array()?.iter().collect();
    let p99_ms = |step: &Value| {
        step["publish_to_receive_us"]["p99"]
            .as_f64()
            .unwrap_or(f64::MAX)
            / 1000.0
    };
    let offered =
        |step: &Value| step["offered_events_per_second"].as_f64().unwrap_or(0.0) * subscribers;
    if let Some(step) = steps.iter().find(|s| offered(s) >= rate) {
        return Some(format!(
            "the minimal reference server there: p99 {:.0} ms",
            p99_ms(step)
        ));
    }
    let (first, last) = (steps.first()?, steps.last()?);
    Some(format!(
        "the minimal reference server stopped at {} events/s offered, with p99 {:.0} ms at its lowest step ({} events/s)",
        si(offered(last)),
        p99_ms(first),
        si(offered(first))
    ))
}

fn judge(report: &Value) -> Vec<Judged> {
    let mut judged = Vec::new();
    for size in ["10000", "2000"] {
        judged.push(stepped_target(
            report,
            if size == "10000" {
                "fan-out, 10,000 SSE subscribers: ≥ 4× Nchan at p99 ≤ 50 ms"
            } else {
                "fan-out, 2,000 SSE subscribers: ≥ 4× Nchan at p99 ≤ 50 ms"
            },
            (&format!("fanout-{size}"), "Tideway"),
            (&format!("fanout-{size}-nchan"), "Nchan"),
            4.0,
            true,
        ));
    }
    // The unicast targets' p99 line, 1 ms, for every server they compare.
    const UNICAST_P99_US: f64 = 1000.0;
    for size in ["2000", "10000"] {
        let target = if size == "2000" {
            "unicast, 2,000 topics: ≥ 2× Nchan at p99 ≤ 1 ms"
        } else {
            "unicast, 10,000 topics: ≥ 2× Nchan at p99 ≤ 1 ms"
        };
        let ours = knee_within(report, &format!("unicast-{size}"), UNICAST_P99_US);
        let theirs = knee_within(report, &format!("unicast-{size}-nchan"), UNICAST_P99_US);
        judged.push(match (ours, theirs) {
            // No ratio to take: said as it is rather than as a win or "not measured".
            (Some(ours), Some(0.0)) => Judged {
                target,
                measured: format!(
                    "Nchan keeps p99 ≤ 1 ms at no rate; Tideway's best under it: {} events/s",
                    si(ours)
                ),
                met: None,
                distance: "not comparable in this run".into(),
            },
            _ => ratio_target(target, ours, theirs, 2.0, "events/s"),
        });
        // Nchan's two workers pass most unicast publishes between them; with one it does
        // better, and the ratio to that is said beside the judged one.
        let one_worker = knee_within(
            report,
            &format!("unicast-{size}-nchan-1worker"),
            UNICAST_P99_US,
        );
        if let (Some(last), Some(ours), Some(one_worker)) = (judged.last_mut(), ours, one_worker)
            && one_worker > 0.0
        {
            last.measured.push_str(&format!(
                "; against Nchan with one worker process, {} events/s: {:.2}×",
                si(one_worker),
                ours / one_worker
            ));
        }
        // Where the gateway's time goes at the knee, from /proc: the measured cause.
        let cpu = |name: &str| {
            let name = name.to_owned();
            Some((
                at(report, &name, &["knee", "server_cpu_us_per_delivery"])?,
                at(report, &name, &["knee", "server_cpu_system_share"])?,
            ))
        };
        if let (Some(last), Some((ours, kernel)), Some((theirs, their_kernel))) = (
            judged.last_mut(),
            cpu(&format!("unicast-{size}")),
            cpu(&format!("unicast-{size}-nchan")),
        ) && last.met == Some(false)
        {
            last.distance.push_str(&format!(
                "; cause: at the knee the gateway spends {ours:.1} µs of CPU per event, {:.0}% of it in the kernel (Nchan {theirs:.1} µs, {:.0}%): three TCP segments per event either way",
                kernel * 100.0,
                their_kernel * 100.0
            ));
        }
        // How far the target is from what this machine allows at all.
        let reference_name = format!("unicast-{size}-reference");
        let reference = knee_within(report, &reference_name, UNICAST_P99_US);
        if let (Some(last), Some(reference), Some(theirs)) = (judged.last_mut(), reference, theirs)
            && last.met == Some(false)
            && theirs > 0.0
        {
            last.distance.push_str(&if kept_up_to_the_top(report, &reference_name, UNICAST_P99_US) {
                format!(
                    "; the minimal reference server reaches at least {:.2}× Nchan here (it kept up with the highest rate offered)",
                    reference / theirs
                )
            } else {
                format!(
                    "; the minimal reference server reaches {:.2}× Nchan here",
                    reference / theirs
                )
            });
        }
    }
    judged.push(match cpu_against(report, "unicast-2000", "unicast-2000-reference") {
        Some((ratio, ours, theirs, rates)) => Judged {
            target: "unicast, 2,000 topics: CPU per event within 1.3× of the minimal server's",
            measured: format!(
                "{ours:.1} vs {theirs:.1} µs per event (medians over the {rates} offered rates both ran with p99 within the knee line): {ratio:.2}×"
            ),
            met: Some(ratio <= 1.3),
            distance: if ratio <= 1.3 {
                "goal ≤ 1.3×".into()
            } else {
                format!("goal ≤ 1.3×: {:.2}× over", ratio / 1.3)
                    + &tokio_share(report).unwrap_or_default()
            },
        },
        None => Judged {
            target: "unicast, 2,000 topics: CPU per event within 1.3× of the minimal server's",
            measured: "not measured (a scenario failed or was skipped)".into(),
            met: None,
            distance: String::new(),
        },
    });
    judged.push(ratio_target(
        "batch publish: batches of 100 ≥ 5× Nchan's single-publish unicast",
        knee(report, "unicast-2000-batch100"),
        knee(report, "unicast-2000-nchan"),
        5.0,
        "events/s",
    ));
    // How far the target is from what this machine allows at all.
    if let (Some(last), Some(reference), Some(theirs)) = (
        judged.last_mut(),
        knee(report, "unicast-2000-batch100-reference"),
        knee(report, "unicast-2000-nchan"),
    ) && last.met == Some(false)
        && theirs > 0.0
    {
        last.distance.push_str(&format!(
            "; the minimal reference server, given the same batches, reaches {:.2}× Nchan",
            reference / theirs
        ));
    }
    judged.push(fan_out_at(
        report,
        "fan-out, 10,000 SSE subscribers: p99 ≤ 50 ms at 200k delivered events/s",
        "fanout-10000",
        200_000.0,
        50.0,
    ));
    judged.push(ratio_target(
        "drop path: ≥ 1.5× Nchan's requests/s",
        at(report, "drop-memory", &["to_nobody", "requests_per_second"]),
        at(report, "drop-nchan", &["to_nobody", "requests_per_second"]),
        1.5,
        "requests/s",
    ));
    judged.push(ratio_target(
        "drop path: ≥ 2× Tideway's own delivered publishes/s",
        at(report, "drop-memory", &["to_nobody", "requests_per_second"]),
        at(report, "drop-memory", &["delivered", "requests_per_second"]),
        2.0,
        "requests/s",
    ));
    let per_request = |kind: &str| {
        Some((
            at(report, "drop-memory", &[kind, "server_cpu_us_per_request"])?,
            at(report, "drop-memory", &[kind, "server_cpu_system_share"])?,
        ))
    };
    if let (Some(last), Some((nobody, nobody_kernel)), Some((delivered, delivered_kernel))) = (
        judged.last_mut(),
        per_request("to_nobody"),
        per_request("delivered"),
    ) && last.met == Some(false)
    {
        last.distance.push_str(&format!(
            "; cause: the gateway spends {nobody:.1} µs of CPU per publish to nobody ({:.0}% in the kernel) and {delivered:.1} µs per delivered one ({:.0}%)",
            nobody_kernel * 100.0,
            delivered_kernel * 100.0
        ));
    }
    if let (Some(last), Some(ratio)) = (
        judged.last_mut(),
        at(report, "drop-reference", &["drop_to_delivered_ratio"]),
    ) && last.met == Some(false)
    {
        last.distance.push_str(&format!(
            "; the minimal reference server's own ratio: {ratio:.2}×"
        ));
    }
    judged.push(match result(report, "drop-memory") {
        Some(r) => {
            let e = &r["expect_continue"];
            let continues = e["continues_received"].as_u64().unwrap_or(u64::MAX);
            let body = e["body_bytes_sent"].as_u64().unwrap_or(u64::MAX);
            let answered = e["statuses"]["200"].as_u64().unwrap_or(0);
            Judged {
                target: "drop path: zero body bytes read",
                measured: format!(
                    "{answered} of {} answered 200 with `Expect: 100-continue`; `100 Continue` sent {continues} times; body bytes on the socket {body}",
                    e["requests"]
                ),
                met: Some(
                    continues == 0 && body == 0 && Some(answered) == e["requests"].as_u64(),
                ),
                distance: String::new(),
            }
        }
        None => Judged {
            target: "drop path: zero body bytes read",
            measured: "not measured".into(),
            met: None,
            distance: String::new(),
        },
    });
    let per_connection = at(report, "connections", &["bytes_per_connection_pss"]);
    let connections = at(report, "connections", &["connections"]).unwrap_or(0.0);
    judged.push(Judged {
        target: "idle connections: < 4 KiB per SSE subscriber",
        measured: per_connection.map_or("not measured".into(), |b| {
            format!(
                "{:.1} KiB at {connections:.0} connections (Nchan {})",
                b / 1024.0,
                at(report, "connections-nchan", &["bytes_per_connection_pss"])
                    .map_or("–".into(), |n| format!("{:.1} KiB", n / 1024.0))
            )
        }),
        met: per_connection.map(|b| b < 4096.0),
        distance: per_connection
            .filter(|b| *b >= 4096.0)
            .map_or(String::new(), |b| format!("{:.1}× the goal", b / 4096.0)),
    });
    let connect = at(report, "connections", &["seconds_to_connect_first_10000"]);
    judged.push(Judged {
        target: "idle connections: 10,000 connected in < 1 s",
        measured: connect.map_or("not measured".into(), |s| {
            format!(
                "{s:.2} s (Nchan {})",
                at(
                    report,
                    "connections-nchan",
                    &["seconds_to_connect_first_10000"]
                )
                .map_or("–".into(), |n| format!("{n:.2} s"))
            )
        }),
        met: connect.map(|s| s < 1.0),
        distance: connect
            .filter(|s| *s >= 1.0)
            .map_or(String::new(), |s| format!("{s:.1}× the goal")),
    });
    for size in ["2000", "10000"] {
        judged.push(stepped_target(
            report,
            if size == "2000" {
                "WebSocket fan-out within 20% of SSE, 2,000 subscribers"
            } else {
                "WebSocket fan-out within 20% of SSE, 10,000 subscribers"
            },
            (&format!("fanout-{size}-ws"), "WebSocket"),
            (&format!("fanout-{size}"), "SSE"),
            0.8,
            false,
        ));
    }
    let single = at(report, "latency-memory", &["publish_to_receive_us", "p50"]);
    let redis = at(
        report,
        "latency-redis-same-node",
        &["publish_to_receive_us", "p50"],
    );
    let cross = at(
        report,
        "latency-redis-cross-node",
        &["publish_to_receive_us", "p50"],
    );
    judged.push(match (single, redis, cross) {
        (Some(single), Some(redis), Some(cross)) => Judged {
            target: "cluster hop: < 2 ms added to p50",
            measured: format!(
                "p50 one node in memory {single:.0} µs, through Redis {redis:.0} µs, across nodes {cross:.0} µs: +{:.0} µs over one node",
                cross - single
            ),
            met: Some(cross - single < 2000.0),
            distance: String::new(),
        },
        _ => Judged {
            target: "cluster hop: < 2 ms added to p50",
            measured: "not measured".into(),
            met: None,
            distance: String::new(),
        },
    });
    // Inside each stepped scenario's range (steps up to its knee) nothing may be lost,
    // duplicated or cut; past the knee the gateway is overloaded on purpose, and what it
    // sheds there is reported beside.
    let (mut lost, mut duplicated, mut cut, mut failed) = (0u64, 0u64, 0u64, Vec::new());
    let (mut lost_over, mut cut_over) = (0u64, 0u64);
    for entry in report["results"].as_array().into_iter().flatten() {
        if entry["server"].as_str() != Some("tideway") {
            continue;
        }
        if entry.get("error").is_some() {
            failed.push(entry["scenario"].as_str().unwrap_or("?").to_owned());
        }
        let r = &entry["result"];
        let threshold_us = r["knee_ms"].as_f64().unwrap_or(0.0) * 1000.0;
        for step in r["steps"].as_array().into_iter().flatten() {
            let p99 = step["publish_to_receive_us"]["p99"]
                .as_f64()
                .unwrap_or(f64::MAX);
            let (step_lost, step_cut) = (
                step["lost"].as_u64().unwrap_or(0),
                step["slow_consumers_cut"].as_u64().unwrap_or(0),
            );
            if p99 <= threshold_us {
                lost += step_lost;
                cut += step_cut;
            } else {
                lost_over += step_lost;
                cut_over += step_cut;
            }
            duplicated += step["duplicated"].as_u64().unwrap_or(0);
        }
        lost += r["reader_lost"].as_u64().unwrap_or(0);
    }
    judged.push(Judged {
        target: "zero crashes, streams cut, lost or duplicated events",
        measured: format!(
            "up to each knee: lost {lost}, duplicated {duplicated}, cut {cut}; failed scenarios: {}. Past the knees (overload): lost {lost_over}, cut {cut_over} (the stalled scenario cuts on purpose and is not counted)",
            if failed.is_empty() { "none".to_owned() } else { failed.join(", ") }
        ),
        met: Some(lost == 0 && duplicated == 0 && cut == 0 && failed.is_empty()),
        distance: String::new(),
    });
    judged
}

/// The SVG plots: p99 against offered rate per delivery scenario, memory against
/// connections.
pub(crate) fn plots(report: &Value) -> Vec<(String, String)> {
    let mut plots = Vec::new();
    let stepped = [
        ("fanout-2000", "fan-out to 2,000 SSE subscribers", 50.0),
        ("fanout-10000", "fan-out to 10,000 SSE subscribers", 50.0),
        ("unicast-2000", "unicast, 2,000 topics", 2.0),
        ("unicast-10000", "unicast, 10,000 topics", 2.0),
    ];
    for (base, title, threshold) in stepped {
        let series = series(
            report,
            &[
                (base.to_owned(), "Tideway SSE"),
                (format!("{base}-ws"), "Tideway WebSocket"),
                (format!("{base}-nchan"), "Nchan SSE"),
            ],
            "steps",
            |s| {
                Some((
                    s["offered_events_per_second"].as_f64()?,
                    s["publish_to_receive_us"]["p99"].as_f64()? / 1000.0,
                ))
            },
        );
        if series.is_empty() {
            continue;
        }
        let label = format!("{threshold} ms knee");
        plots.push((
            format!("{base}-p99"),
            line_chart(
                &Chart {
                    title: &format!("{title}: p99 publish→receive"),
                    x_label: "offered events/s (log scale)",
                    y_label: "p99 publish→receive, ms",
                    log_x: true,
                    threshold: Some((threshold, &label)),
                    y_cap: Some(threshold * 10.0),
                },
                &series,
            ),
        ));
    }
    let series = series(
        report,
        &[
            ("connections".to_owned(), "Tideway"),
            ("connections-nchan".to_owned(), "Nchan"),
        ],
        "samples",
        |s| {
            Some((
                s["connections"].as_f64()?,
                s["memory"]["pss_kib"].as_f64()? / 1024.0,
            ))
        },
    );
    if !series.is_empty() {
        plots.push((
            "connections-memory".to_owned(),
            line_chart(
                &Chart {
                    title: "memory against idle SSE connections",
                    x_label: "open connections",
                    y_label: "server memory (PSS), MiB",
                    log_x: false,
                    threshold: None,
                    y_cap: None,
                },
                &series,
            ),
        ));
    }
    plots
}

/// One line per scenario of `runs` that finished: `point` of each entry of its first
/// run's `list` (steps, samples), labelled.
fn series(
    report: &Value,
    runs: &[(String, &str)],
    list: &str,
    point: impl Fn(&Value) -> Option<(f64, f64)>,
) -> Vec<Series> {
    runs.iter()
        .filter_map(|(name, label)| {
            let points = result(report, name)?[list]
                .as_array()?
                .iter()
                .filter_map(&point)
                .collect();
            Some(Series {
                name: (*label).to_owned(),
                points,
            })
        })
        .collect()
}

/// The runs during which the host took more than [`STOLEN`] of the machine's CPU time,
/// named so a reader weighs their figures: the servers had less of the machine than
/// the figures assume.
fn stolen_runs(report: &Value) -> Option<String> {
    let runs: Vec<String> = report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let share = entry["host_steal_share"].as_f64().filter(|&s| s > STOLEN)?;
            Some(format!(
                "{} run {} ({:.0}%)",
                entry["scenario"].as_str().unwrap_or("?"),
                entry["run"].as_u64().unwrap_or(1),
                share * 100.0
            ))
        })
        .collect();
    (!runs.is_empty()).then(|| {
        format!(
            "**CPU stolen by the host** (this VM's host took more than {:.0}% of the machine's time) during: {}. Those runs' figures are less sure; medians over the other runs carry the verdicts.",
            STOLEN * 100.0,
            runs.join(", ")
        )
    })
}

/// The share of the machine's CPU time the host may take during a run before the
/// summary names the run.
const STOLEN: f64 = 0.02;

pub(crate) fn summary(
    report: &Value,
    previous: Option<&(PathBuf, Value)>,
    plots: &[String],
) -> String {
    let mut md = format!(
        "# Gateway scenarios, {}\n\n",
        report["run"].as_str().unwrap_or("")
    );
    let machine = &report["machine"];
    let _ = writeln!(
        md,
        "A release `tideway` (and nginx with Nchan beside it) on loopback, driven by `tideway-load`; server and load generator share the machine: {} cores, {}, kernel {}. {}; compare ratios, not absolute figures. Memory is PSS summed over the server's processes, read from `/proc`.\n",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
        match report["repeat"].as_u64().unwrap_or(1) {
            1 => "One run of each scenario".to_owned(),
            n => format!(
                "{n} runs of each scenario; figures and targets are medians over them, plots show the first run"
            ),
        }
    );
    if let Some(line) = stolen_runs(report) {
        let _ = writeln!(md, "{line}\n");
    }
    let _ = writeln!(
        md,
        "## Targets\n\n| target | measured | met | distance |\n|---|---|:-:|---|"
    );
    for j in judge(report) {
        let met = match j.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {met} | {} |",
            j.target, j.measured, j.distance
        );
    }
    let _ = writeln!(
        md,
        "\nWhy a missed target is missed, from profiles: `docs/performance.md`.\n"
    );
    let _ = writeln!(md, "## Against the previous run\n");
    let old: Vec<Value> = previous
        .and_then(|(_, v)| v["headline"].as_array().cloned())
        .unwrap_or_default();
    match previous {
        Some((path, _)) => {
            let _ = writeln!(
                md,
                "Previous: `{}`. Ratio now/previous; ↑ better, ↓ worse (more than 10%).\n\n| figure | now | previous | ratio |\n|---|---:|---:|---:|",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(md, "| figure | now |\n|---|---:|");
        }
    }
    for figure in report["headline"].as_array().into_iter().flatten() {
        let name = figure["name"].as_str().unwrap_or("");
        let now = figure["value"].as_f64().unwrap_or(0.0);
        let unit = figure["unit"].as_str().unwrap_or("");
        if previous.is_none() {
            let _ = writeln!(md, "| {name} | {} {unit} |", si(now));
            continue;
        }
        let before = old
            .iter()
            .find(|f| f["name"].as_str() == Some(name))
            .and_then(|f| f["value"].as_f64());
        let (before_text, ratio) = match before {
            Some(b) if b > 0.0 => {
                let r = now / b;
                let higher = figure["higher_is_better"].as_bool().unwrap_or(true);
                let mark = if (higher && r > 1.1) || (!higher && r < 0.9) {
                    " ↑"
                } else if (higher && r < 0.9) || (!higher && r > 1.1) {
                    " ↓"
                } else {
                    ""
                };
                (format!("{} {unit}", si(b)), format!("{r:.2}×{mark}"))
            }
            _ => ("–".to_owned(), "new".to_owned()),
        };
        let _ = writeln!(
            md,
            "| {name} | {} {unit} | {before_text} | {ratio} |",
            si(now)
        );
    }
    md.push('\n');
    if !plots.is_empty() {
        let _ = writeln!(md, "## Plots\n");
        for plot in plots {
            let _ = writeln!(md, "![{plot}]({plot})\n");
        }
    }
    details(report, &mut md);
    md
}

/// One section per scenario with its own figures.
fn details(report: &Value, md: &mut String) {
    let _ = writeln!(md, "## Scenarios\n");
    for entry in report["results"].as_array().into_iter().flatten() {
        let name = entry["scenario"].as_str().unwrap_or("");
        match entry["run"].as_u64() {
            Some(run) if report["repeat"].as_u64().unwrap_or(1) > 1 => {
                let _ = writeln!(md, "### {name}, run {run}\n");
            }
            _ => {
                let _ = writeln!(md, "### {name}\n");
            }
        }
        if let Some(error) = entry["error"].as_str() {
            let _ = writeln!(md, "Did not run to the end:\n\n```\n{error}\n```\n");
            continue;
        }
        let r = &entry["result"];
        let us = |v: &Value| v.as_f64().unwrap_or(0.0);
        let kib = |v: &Value| v.as_f64().unwrap_or(0.0) / 1024.0;
        match r["scenario"].as_str() {
            Some("stalled") => {
                let _ = writeln!(
                    md,
                    "{} subscribers never read while one reads {} events of {} bytes. The reader got {} (lost {}); {} subscribers cut off as slow; RSS per idle connection {:.1} KiB, per stalled connection (queue full, before the write timeout closes it) {:.1} KiB.\n",
                    r["stalled_connections"],
                    r["events"],
                    r["body_bytes"],
                    r["reader_events"],
                    r["reader_lost"],
                    r["slow_consumers_cut"],
                    kib(&r["bytes_per_idle_connection"]),
                    kib(&r["bytes_per_stalled_connection"])
                );
            }
            Some("drain") => {
                let _ = writeln!(
                    md,
                    "{} open streams, then SIGTERM: {} told `tideway.drain`; the last stream closed after {:.3} s, the process exited after {:.3} s.\n",
                    r["connections"],
                    r["streams_told_to_reconnect"],
                    us(&r["seconds_until_last_stream_closed"]),
                    us(&r["seconds_until_exit"])
                );
            }
            Some("latency") => {
                let l = &r["publish_to_receive_us"];
                let _ = writeln!(
                    md,
                    "{} events of {} bytes, one at a time; publish→receive in µs.\n\n| p50 | p90 | p99 | max |\n|---:|---:|---:|---:|\n| {:.0} | {:.0} | {:.0} | {:.0} |\n",
                    r["events"],
                    r["body_bytes"],
                    us(&l["p50"]),
                    us(&l["p90"]),
                    us(&l["p99"]),
                    us(&l["max"])
                );
            }
            Some("connections") => {
                let _ = writeln!(
                    md,
                    "{} idle SSE subscribers: {:.0} connects/s, the first 10,000 in {:.2} s; {:.1} KiB (PSS) per connection.\n\n| connections | PSS MiB |\n|---:|---:|",
                    r["connections"],
                    us(&r["connects_per_second"]),
                    us(&r["seconds_to_connect_first_10000"]),
                    kib(&r["bytes_per_connection_pss"])
                );
                for s in r["samples"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        md,
                        "| {} | {:.1} |",
                        s["connections"],
                        us(&s["memory"]["pss_kib"]) / 1024.0
                    );
                }
                md.push('\n');
            }
            Some("drop") => {
                let row = |label: &str, v: &Value| {
                    format!(
                        "| {label} | {} | {:.0} | {} | {} |\n",
                        v["requests"],
                        us(&v["requests_per_second"]),
                        v["continues_received"],
                        v["body_bytes_sent"]
                    )
                };
                let _ = write!(
                    md,
                    "Publishes of {} bytes from {} kept-alive connections.\n\n| publishes | requests | requests/s | `100 Continue` received | body bytes sent |\n|---|---:|---:|---:|---:|\n{}{}",
                    r["body_bytes"],
                    r["concurrency"],
                    row("to a topic nobody follows", &r["to_nobody"]),
                    row("to a topic one reader follows", &r["delivered"])
                );
                if !r["expect_continue"].is_null() {
                    md.push_str(&row(
                        "to nobody, `Expect: 100-continue`, body held back",
                        &r["expect_continue"],
                    ));
                }
                md.push('\n');
            }
            Some("fanout" | "unicast") => {
                let _ = writeln!(
                    md,
                    "{} {} subscribers ({}), {}-byte events from {} publishers at rising offered rates (2 s each); the knee is the step that delivered most with p99 ≤ {} ms and nothing lost. Connected in {:.2} s.\n",
                    r["subscribers"],
                    r["target"].as_str().unwrap_or(""),
                    r["transport"].as_str().unwrap_or(""),
                    r["body_bytes"],
                    r["publishers"],
                    r["knee_ms"],
                    us(&r["connect_seconds"])
                );
                let _ = writeln!(
                    md,
                    "| offered/s | delivered/s | p50 | p90 | p99 | max | lost | dup | server CPU µs/delivery | of it kernel | load generator CPU µs/delivery |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                );
                for step in r["steps"].as_array().into_iter().flatten() {
                    let l = &step["publish_to_receive_us"];
                    let ms = |v: &Value| format!("{:.2} ms", us(v) / 1000.0);
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0}% | {} |",
                        step["offered_events_per_second"],
                        si(us(&step["delivered_events_per_second"])),
                        ms(&l["p50"]),
                        ms(&l["p90"]),
                        ms(&l["p99"]),
                        ms(&l["max"]),
                        step["lost"],
                        step["duplicated"],
                        us(&step["server_cpu_us_per_delivery"]),
                        us(&step["server_cpu_system_share"]) * 100.0,
                        // Results from before the load generator measured itself have none.
                        step["load_generator_cpu_us_per_delivery"]
                            .as_f64()
                            .map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
                    );
                }
                md.push('\n');
            }
            _ => {}
        }
    }
}

/// 1,234 → "1.23k", 2,500,000 → "2.50M".
fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The judged target whose name starts with `prefix`.
    fn judged_as<'a>(judged: &'a [Judged], prefix: &str) -> &'a Judged {
        judged
            .iter()
            .find(|j| j.target.starts_with(prefix))
            .unwrap_or_else(|| panic!("no target {prefix:?}"))
    }

    fn stepped(knee_delivered: Option<f64>) -> Value {
        json!({
            "scenario": "fanout",
            "knee": knee_delivered.map(|d| json!({ "delivered_events_per_second": d })),
            "steps": [{ "offered_events_per_second": 5, "publish_to_receive_us": { "p99": 900 }, "lost": 0, "duplicated": 0 }],
        })
    }

    #[test]
    fn targets_are_judged_from_the_figures() {
        let report = json!({ "results": [
            { "scenario": "fanout-10000", "server": "tideway", "result": stepped(Some(500_000.0)) },
            { "scenario": "fanout-10000-nchan", "server": "nchan", "result": stepped(Some(100_000.0)) },
            { "scenario": "fanout-2000", "server": "tideway", "result": stepped(None) },
            { "scenario": "fanout-2000-nchan", "server": "nchan", "result": stepped(Some(100_000.0)) },
            { "scenario": "connections", "server": "tideway", "result": {
                "scenario": "connections", "connections": 100, "bytes_per_connection_pss": 8192.0,
                "seconds_to_connect_first_10000": 0.5 } },
            { "scenario": "unicast-2000", "server": "tideway", "error": "boom" },
        ]});
        let judged = judge(&report);
        let find = |prefix: &str| judged_as(&judged, prefix);
        let big = find("fan-out, 10,000");
        assert_eq!(big.met, Some(true), "{}", big.measured);
        assert!(big.measured.contains("5.00×"));
        // A knee on one side only: the other's is zero, a miss.
        assert_eq!(find("fan-out, 2,000").met, Some(false));
        assert_eq!(find("unicast, 2,000").met, None);
        let idle = find("idle connections: < 4 KiB");
        assert_eq!(idle.met, Some(false));
        assert_eq!(idle.distance, "2.0× the goal");
        assert_eq!(find("idle connections: 10,000").met, Some(true));
        // A failed Tideway scenario fails the no-crash target.
        let zero = find("zero crashes");
        assert_eq!(zero.met, Some(false));
        assert!(zero.measured.contains("unicast-2000"));
    }

    #[test]
    fn fan_out_without_a_knee_compares_under_the_stop_line() {
        let steps = |p99s: &[(f64, f64)]| {
            json!({ "scenario": "fanout", "knee": null, "knee_ms": 50.0, "steps": p99s.iter().map(|(rate, p99)| json!({
                "offered_events_per_second": rate, "delivered_events_per_second": rate * 10_000.0,
                "publish_to_receive_us": { "p99": p99 }, "lost": 0, "duplicated": 0 })).collect::<Vec<_>>() })
        };
        let report = json!({ "results": [
            { "scenario": "fanout-10000", "server": "tideway", "result": steps(&[(5.0, 70_000.0), (100.0, 110_000.0), (400.0, 300_000.0)]) },
            { "scenario": "fanout-10000-nchan", "server": "nchan", "result": steps(&[(5.0, 140_000.0), (10.0, 240_000.0)]) },
        ]});
        let judged = judge(&report);
        let j = judged_as(&judged, "fan-out, 10,000");
        assert_eq!(j.met, Some(false));
        assert!(
            j.measured.contains("Tideway 70 ms, Nchan 140 ms"),
            "{}",
            j.measured
        );
        assert!(
            j.measured.contains("1.00M vs 100.0k events/s, 10.00×"),
            "{}",
            j.measured
        );
        assert!(
            j.distance.starts_with("p99 at the lowest rate is 1.4×"),
            "{}",
            j.distance
        );
    }

    #[test]
    fn a_missed_unicast_target_says_where_the_time_goes() {
        let unicast_at = |offered: f64, delivered: f64, cpu: f64, kernel: f64| {
            json!({ "scenario": "unicast", "knee_ms": 2.0, "steps": [{
                "offered_events_per_second": offered, "delivered_events_per_second": delivered,
                "publish_to_receive_us": { "p99": 900 }, "lost": 0 }], "knee": {
                "delivered_events_per_second": delivered,
                "server_cpu_us_per_delivery": cpu, "server_cpu_system_share": kernel } })
        };
        let unicast = |delivered: f64, cpu: f64, kernel: f64| {
            unicast_at(delivered * 1.5, delivered, cpu, kernel)
        };
        let report = |reference: Value| {
            json!({ "results": [
                { "scenario": "unicast-2000", "server": "tideway", "result": unicast(44_000.0, 26.0, 0.72) },
                { "scenario": "unicast-2000-nchan", "server": "nchan", "result": unicast(37_000.0, 28.0, 0.8) },
                { "scenario": "unicast-2000-reference", "server": "reference", "result": reference },
            ]})
        };
        // The reference fell behind the highest rate offered: its figure is its own.
        let judged = judge(&report(unicast(55_500.0, 20.0, 0.95)));
        let j = judged_as(&judged, "unicast, 2,000");
        assert_eq!(j.met, Some(false));
        assert!(
            j.distance.contains("cause: at the knee the gateway spends 26.0 µs of CPU per event, 72% of it in the kernel (Nchan 28.0 µs, 80%)"),
            "{}",
            j.distance
        );
        assert!(
            j.distance
                .ends_with("; the minimal reference server reaches 1.50× Nchan here"),
            "{}",
            j.distance
        );
        // It kept up with the highest rate offered: the steps ended before it did.
        let judged = judge(&report(unicast_at(55_500.0, 55_000.0, 20.0, 0.95)));
        let j = judged_as(&judged, "unicast, 2,000");
        assert!(
            j.distance.ends_with(
                "; the minimal reference server reaches at least 1.49× Nchan here (it kept up with the highest rate offered)"
            ),
            "{}",
            j.distance
        );
        assert!(!j.measured.contains("one worker"), "{}", j.measured);
        // Nchan with one worker ran too: the ratio to it is said beside the judged one.
        let mut with_one_worker = report(unicast(55_500.0, 20.0, 0.95));
        with_one_worker["results"]
            .as_array_mut()
            .expect("results")
            .push(json!({ "scenario": "unicast-2000-nchan-1worker", "server": "nchan", "result": unicast(40_000.0, 20.0, 0.6) }));
        let judged = judge(&with_one_worker);
        let j = judged_as(&judged, "unicast, 2,000");
        assert!(
            j.measured
                .ends_with("; against Nchan with one worker process, 40.0k events/s: 1.10×"),
            "{}",
            j.measured
        );
        assert_eq!(j.met, Some(false), "judged against the default Nchan");
    }

    #[test]
    fn missed_batch_and_drop_targets_name_what_the_reference_server_reached() {
        let knee = |delivered: f64| json!({ "knee": { "delivered_events_per_second": delivered } });
        let drop = |nobody: f64, delivered: f64| {
            json!({ "to_nobody": { "requests_per_second": nobody },
                "delivered": { "requests_per_second": delivered },
                "drop_to_delivered_ratio": nobody / delivered })
        };
        let report = json!({ "results": [
            { "scenario": "unicast-2000-nchan", "server": "nchan", "result": knee(30_000.0) },
            { "scenario": "unicast-2000-batch100", "server": "tideway", "result": knee(90_000.0) },
            { "scenario": "unicast-2000-batch100-reference", "server": "reference", "result": knee(120_000.0) },
            { "scenario": "drop-memory", "server": "tideway", "result": drop(100_000.0, 60_000.0) },
            { "scenario": "drop-reference", "server": "reference", "result": drop(150_000.0, 100_000.0) },
        ]});
        let judged = judge(&report);
        let batch = judged_as(&judged, "batch publish");
        assert_eq!(batch.met, Some(false));
        assert!(
            batch.distance.ends_with(
                "; the minimal reference server, given the same batches, reaches 4.00× Nchan"
            ),
            "{}",
            batch.distance
        );
        let own = judged_as(&judged, "drop path: ≥ 2×");
        assert_eq!(own.met, Some(false));
        assert!(
            own.distance
                .ends_with("; the minimal reference server's own ratio: 1.50×"),
            "{}",
            own.distance
        );
        // A met target needs no excuse.
        let report = json!({ "results": [
            { "scenario": "drop-memory", "server": "tideway", "result": drop(130_000.0, 60_000.0) },
            { "scenario": "drop-reference", "server": "reference", "result": drop(150_000.0, 100_000.0) },
        ]});
        let judged = judge(&report);
        let own = judged_as(&judged, "drop path: ≥ 2×");
        assert_eq!(own.met, Some(true));
        assert!(!own.distance.contains("reference"), "{}", own.distance);
    }

    #[test]
    fn cpu_per_event_is_judged_on_healthy_steps_over_every_run() {
        // A step past the knee line (2 ms) is a machine whose CPU was taken: left out.
        let disturbed =
            |cpu: f64| unicast_steps(&[(8_000.0, 9_000.0, cpu), (16_000.0, 9_000.0, cpu)]);
        let report = json!({ "results": [
            { "scenario": "unicast-2000", "run": 1, "result": unicast_steps(&[(8_000.0, 900.0, 30.0), (16_000.0, 900.0, 33.0)]) },
            { "scenario": "unicast-2000", "run": 2, "result": disturbed(300.0) },
            { "scenario": "unicast-2000-reference", "run": 1, "result": disturbed(90.0) },
            { "scenario": "unicast-2000-reference", "run": 2, "result": unicast_steps(&[(8_000.0, 400.0, 20.0), (16_000.0, 400.0, 22.0)]) },
            { "scenario": "unicast-2000-reference", "run": 3, "result": unicast_steps(&[(8_000.0, 400.0, 20.0), (16_000.0, 400.0, 22.0)]) },
        ]});
        let judged = judge(&report);
        let cpu = judged_as(&judged, "unicast, 2,000 topics: CPU");
        assert_eq!(cpu.met, Some(false));
        assert!(
            cpu.measured.contains("33.0 vs 22.0 µs per event (medians over the 2 offered rates both ran with p99 within the knee line): 1.50×"),
            "{}",
            cpu.measured
        );
        // Nothing healthy on one side: no verdict rather than a ratio of queues.
        let report = json!({ "results": [
            { "scenario": "unicast-2000", "run": 1, "result": disturbed(300.0) },
            { "scenario": "unicast-2000-reference", "run": 1, "result": unicast_steps(&[(8_000.0, 400.0, 20.0)]) },
        ]});
        let judged = judge(&report);
        let cpu = judged_as(&judged, "unicast, 2,000 topics: CPU");
        assert_eq!(cpu.met, None, "{}", cpu.measured);
    }

    #[test]
    fn runs_the_host_took_cpu_from_are_named() {
        let report = json!({ "repeat": 2, "results": [
            { "scenario": "unicast-2000", "run": 1, "host_steal_share": 0.004 },
            { "scenario": "unicast-2000", "run": 2, "host_steal_share": 0.071 },
            { "scenario": "unicast-2000-reference", "run": 1, "host_steal_share": null },
        ]});
        let md = summary(&report, None, &[]);
        assert!(
            md.contains("during: unicast-2000 run 2 (7%). Those runs' figures are less sure"),
            "{md}"
        );
        let quiet = json!({ "results": [{ "scenario": "unicast-2000", "run": 1, "host_steal_share": 0.01 }] });
        assert!(!summary(&quiet, None, &[]).contains("stolen"));
    }

    /// Unicast steps: (offered = delivered events/s, p99 µs, CPU µs per event).
    fn unicast_steps(steps: &[(f64, f64, f64)]) -> Value {
        json!({ "scenario": "unicast", "knee_ms": 2.0, "steps": steps.iter().map(|(rate, p99, cpu)| json!({
            "offered_events_per_second": rate, "delivered_events_per_second": rate,
            "publish_to_receive_us": { "p99": p99 }, "lost": 0,
            "server_cpu_us_per_delivery": cpu })).collect::<Vec<_>>() })
    }

    #[test]
    fn the_publish_path_targets_are_judged() {
        let steps: Vec<Value> = [(5, 30_000), (10, 40_000), (25, 61_000)]
            .iter()
            .map(|(rate, p99)| {
                json!({
                    "offered_events_per_second": rate, "delivered_events_per_second": rate * 10_000,
                    "publish_to_receive_us": { "p99": p99 }, "lost": 0 })
            })
            .collect();
        let fanout =
            json!({ "scenario": "fanout", "subscribers": 10_000, "knee_ms": 50.0, "steps": steps });
        let report = json!({ "results": [
            // Tideway keeps p99 under 1 ms up to 16k/s, Nchan up to 8k/s: 2×, met.
            { "scenario": "unicast-2000", "server": "tideway", "result": unicast_steps(&[(8_000.0, 400.0, 30.0), (16_000.0, 900.0, 33.0), (32_000.0, 1_900.0, 36.0)]) },
            { "scenario": "unicast-2000-nchan", "server": "nchan", "result": unicast_steps(&[(8_000.0, 800.0, 40.0), (16_000.0, 1_500.0, 40.0)]) },
            // The reference at the same rates: ratios 1.5, 1.5, and 36/20 = 1.8 → median 1.5.
            { "scenario": "unicast-2000-reference", "server": "reference", "result": unicast_steps(&[(8_000.0, 300.0, 20.0), (16_000.0, 300.0, 22.0), (32_000.0, 300.0, 20.0), (64_000.0, 300.0, 20.0)]) },
            // The tokio reference: 24/20, 24/22, 24/20 → 1.2×; Tideway against it 30/24,
            // 33/24, 36/24 → 1.375×.
            { "scenario": "unicast-2000-reference-tokio", "server": "reference-tokio", "result": unicast_steps(&[(8_000.0, 300.0, 24.0), (16_000.0, 300.0, 24.0), (32_000.0, 300.0, 24.0)]) },
            { "scenario": "unicast-2000-batch100", "server": "tideway", "result": { "knee": { "delivered_events_per_second": 36_000.0 } } },
            { "scenario": "fanout-10000", "server": "tideway", "result": fanout },
        ]});
        let judged = judge(&report);
        let find = |prefix: &str| judged_as(&judged, prefix);
        let unicast = find("unicast, 2,000 topics: ≥ 2×");
        assert_eq!(unicast.met, Some(true), "{}", unicast.measured);
        assert!(
            unicast.measured.contains("16.0k vs 8000 events/s: 2.00×"),
            "{}",
            unicast.measured
        );
        let cpu = find("unicast, 2,000 topics: CPU");
        assert_eq!(cpu.met, Some(false));
        assert!(
            cpu.measured.contains(
                "33.0 vs 20.0 µs per event (medians over the 3 offered rates both ran with p99 within the knee line): 1.50×"
            ),
            "{}",
            cpu.measured
        );
        assert_eq!(
            cpu.distance,
            "goal ≤ 1.3×: 1.15× over; the tokio reference (the same work in Tideway's shape: a task per connection, a wake-up per delivery) is at 1.20× the minimal server, Tideway at 1.38× the tokio reference"
        );
        // Nchan's single publishes at their own (2 ms) knee are unknown here: no knee field.
        assert_eq!(find("batch publish").met, None);
        let fan = find("fan-out, 10,000 SSE subscribers: p99 ≤ 50 ms");
        assert_eq!(fan.met, Some(false));
        assert!(
            fan.measured
                .contains("at 25 publishes/s (250.0k events/s delivered): p99 61 ms"),
            "{}",
            fan.measured
        );
        assert_eq!(fan.distance, "1.2× the 50 ms goal");
        // With the reference server beside it, the distance says what the machine allows.
        let reference = |steps: &[(u32, u32)]| {
            json!({ "scenario": "fanout", "subscribers": 10_000, "knee_ms": 50.0, "steps": steps.iter().map(|(rate, p99)| json!({
                "offered_events_per_second": rate, "delivered_events_per_second": rate * 10_000,
                "publish_to_receive_us": { "p99": p99 }, "lost": 0 })).collect::<Vec<_>>() })
        };
        let with = |reference: Value| {
            let report = json!({ "results": [
                { "scenario": "fanout-10000", "server": "tideway", "result": fanout },
                { "scenario": "fanout-10000-reference", "server": "reference", "result": reference },
            ]});
            judged_as(
                &judge(&report),
                "fan-out, 10,000 SSE subscribers: p99 ≤ 50 ms",
            )
            .distance
            .clone()
        };
        assert_eq!(
            with(reference(&[(5, 150_000), (10, 600_000)])),
            "1.2× the 50 ms goal; the minimal reference server stopped at 100.0k events/s offered, with p99 150 ms at its lowest step (50.0k events/s)"
        );
        assert_eq!(
            with(reference(&[(5, 40_000), (25, 90_000)])),
            "1.2× the 50 ms goal; the minimal reference server there: p99 90 ms"
        );
        // Nchan never under the line: no ratio, said so.
        let report = json!({ "results": [
            { "scenario": "unicast-2000", "server": "tideway", "result": unicast_steps(&[(4_000.0, 900.0, 30.0)]) },
            { "scenario": "unicast-2000-nchan", "server": "nchan", "result": unicast_steps(&[(4_000.0, 1_400.0, 40.0)]) },
        ]});
        let judged = judge(&report);
        let unicast = judged_as(&judged, "unicast, 2,000 topics: ≥ 2×");
        assert_eq!(unicast.met, None);
        assert!(
            unicast.measured.contains(
                "Nchan keeps p99 ≤ 1 ms at no rate; Tideway's best under it: 4000 events/s"
            ),
            "{}",
            unicast.measured
        );
    }

    #[test]
    fn repeated_runs_are_judged_by_their_medians() {
        let idle = |bytes: f64| json!({ "scenario": "connections", "connections": 100, "bytes_per_connection_pss": bytes, "seconds_to_connect_first_10000": 0.5 });
        let report = json!({ "repeat": 3, "results": [
            { "scenario": "connections", "run": 1, "server": "tideway", "result": idle(3000.0) },
            { "scenario": "connections", "run": 2, "server": "tideway", "result": idle(9000.0) },
            { "scenario": "connections", "run": 3, "server": "tideway", "result": idle(3500.0) },
        ]});
        assert_eq!(
            at(&report, "connections", &["bytes_per_connection_pss"]),
            Some(3500.0)
        );
        let headline = headline(&report);
        let figures = headline.as_array().unwrap();
        assert_eq!(figures.len(), 2, "one line per figure, not per run");
        assert_eq!(figures[0]["value"], 3500.0);
    }

    #[test]
    fn the_summary_compares_with_the_previous_run() {
        let mut report = json!({ "run": "now", "machine": {}, "results": [
            { "scenario": "fanout-2000", "server": "tideway", "result": stepped(Some(300_000.0)) },
        ]});
        report["headline"] = headline(&report);
        let mut before = report.clone();
        before["headline"][0]["value"] = json!(200_000.0);
        let md = summary(
            &report,
            Some(&(PathBuf::from("old-scenarios.json"), before)),
            &["x.svg".into()],
        );
        assert!(md.contains("| fanout-2000: delivered events/s at the knee | 300.0k events/s | 200.0k events/s | 1.50× ↑ |"), "{md}");
        assert!(md.contains("![x.svg](x.svg)"));
        let plots = plots(&report);
        assert_eq!(plots.len(), 1);
        assert_eq!(plots[0].0, "fanout-2000-p99");
    }
}
