//! `capacity`: a ladder of click rates, each run several times, to find the
//! highest rate a server sustains with every click counted and the median
//! p99 click-to-visible latency under a bound. One noisy run cannot end the
//! ladder or set its result: each rate is judged by the median of its runs,
//! and the ladder stops only after two failed rates in a row.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::flood::{FloodReport, flood};
use crate::client::Client;
use crate::cpu::SATURATED;
use crate::{BenchError, Target};

/// Quiet time between runs, at least.
const PAUSE: Duration = Duration::from_millis(500);

/// A server that answers a new connection within this is taken as drained.
const PROMPT: Duration = Duration::from_millis(20);

/// Waits until the server handshakes a new connection promptly again (at
/// most 30 s), so one overloaded run's backlog — a server still writing
/// queued broadcasts — does not count against the next run. Probing with a
/// handshake rather than a click leaves the total alone. A handshake that
/// fails counts as not yet prompt: an overloaded server may refuse for a
/// while, and the next run, not the wait, is what fails if it never
/// recovers.
async fn settle(target: &Target) {
    let give_up = Instant::now() + Duration::from_secs(30);
    tokio::time::sleep(PAUSE).await;
    while Instant::now() < give_up {
        let started = Instant::now();
        if let Ok(client) = Client::dial(target.home(), &target.guest(0)).await {
            let took = started.elapsed();
            client.close().await;
            if took < PROMPT {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How to climb.
#[derive(Debug, Clone)]
pub struct CapacitySettings {
    /// Clicking connections (reconnected for every run, so a run starts
    /// from a server that has drained the previous one).
    pub clients: usize,
    /// The rates tried, rising, in clicks/s.
    pub rates: Vec<f64>,
    /// Runs at each rate; the rate is judged by their median.
    pub runs: usize,
    /// Length of each run.
    pub duration: Duration,
    /// Bound on the median of the runs' p99 click-to-visible latency.
    pub bound: Duration,
    /// The ladder stops after this many failed rates in a row.
    pub stop_after: usize,
}

impl CapacitySettings {
    /// A geometric ladder from `start` by `factor` up to `max`.
    pub fn geometric(start: f64, factor: f64, max: f64) -> Vec<f64> {
        std::iter::successors(Some(start), |rate| Some(rate * factor))
            .take_while(|&rate| rate <= max)
            .collect()
    }
}

#[derive(Debug, Serialize)]
pub struct CapacityReport {
    pub mode: &'static str,
    pub clients: usize,
    pub bound_p99_ms: f64,
    pub runs_per_rate: usize,
    /// The highest rate that passed; 0 if none did.
    pub capacity_per_s: f64,
    /// Whether the capacity is only a floor on the server's: the rate that
    /// failed above it failed with the tool's own core saturated (or the
    /// tool unable to send the offered rate), or, when every rate passed,
    /// the top one had the tool saturated; either way the tool set the
    /// limit.
    pub floor: bool,
    /// Why the first failed rate above the capacity failed: `latency`,
    /// `lost`, `throughput`, `load generator`, `error`; `max rate` when none
    /// above it failed.
    pub limited_by: &'static str,
    /// A run at the first rate, before the ladder: reported, not judged.
    pub warmup: FloodReport,
    /// Every rate in the order run.
    pub rates: Vec<Rung>,
}

/// One rate of the ladder and its runs.
#[derive(Debug, Serialize)]
pub struct Rung {
    pub rate_per_s: f64,
    pub passed: bool,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_by: Option<&'static str>,
    /// The median of the runs' p99 click → visible.
    pub median_p99_ms: f64,
    /// Each run's p99 click → visible, in the order run.
    pub p99_ms: Vec<f64>,
    /// The median of the runs' tool CPU shares (of the tool's cores).
    pub median_tool_cpu: f64,
    /// The median of the runs' server CPU, in cores, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_server_cores: Option<f64>,
    /// The median run had the tool's core above 90%: a failure here may be
    /// the tool's, and a pass is a floor.
    pub tool_saturated: bool,
    pub runs: Vec<FloodReport>,
    /// Runs that ended in an error (a refused connection, a server that
    /// stopped answering) rather than a report: each counts as a failed
    /// run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RunError>,
}

/// A run that gave no report.
#[derive(Debug, Clone, Serialize)]
pub struct RunError {
    pub error: String,
    /// The tool ran out of descriptors or local ports: the run failed as a
    /// `load generator` one does, saying nothing about the server.
    pub tool_side: bool,
}

impl RunError {
    pub fn of(err: &BenchError) -> Self {
        RunError {
            error: err.to_string(),
            tool_side: err.is_tool_side(),
        }
    }
}

/// Why one run fails apart from its latency, or `None`: the tool sent less
/// than 90% of the offered rate, a client ended off the exact total or a
/// click went unanswered, or acks fell below 90% of the clicks sent.
fn run_failure(run: &FloodReport) -> Option<&'static str> {
    if run.sent_rate_per_s < 0.9 * run.target_rate_per_s {
        Some("load generator")
    } else if !run.converged {
        Some("lost")
    } else if run.achieved_rate_per_s < 0.9 * run.sent_rate_per_s {
        Some("throughput")
    } else {
        None
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Judges one rate from its runs: it passes when the median p99 is within
/// the bound and more than half of the runs had no other failure (a rate
/// failing on losses half the time has not been sustained). `errors` are
/// the runs that gave no report; they count as failed runs, as `load
/// generator` ones when the tool ran out of something.
pub fn judge(rate: f64, runs: Vec<FloodReport>, errors: Vec<RunError>, bound_ms: f64) -> Rung {
    let mut p99: Vec<f64> = runs.iter().map(|r| r.visible.p99_ms).collect();
    let p99_in_order = p99.clone();
    let median_p99_ms = median(&mut p99);
    let median_tool_cpu = median(&mut runs.iter().map(|r| r.cpu.tool).collect::<Vec<_>>());
    let servers: Option<Vec<f64>> = runs.iter().map(|r| r.cpu.servers_cores).collect();
    let median_server_cores = servers.map(|mut s| median(&mut s));
    let mut failures: Vec<&'static str> = runs.iter().filter_map(run_failure).collect();
    failures.extend(errors.iter().map(|e| {
        if e.tool_side {
            "load generator"
        } else {
            "error"
        }
    }));
    let all = (runs.len() + errors.len()).max(1);
    let count = |why: &str| failures.iter().filter(|&&f| f == why).count();
    let failed_by = if count("load generator") * 2 >= all {
        // The tool alone failed half the runs: nothing else about them
        // measured the server, so the rate is the tool's limit.
        Some("load generator")
    } else if failures.len() * 2 >= all {
        // Otherwise the commonest of the server's failures (in this order
        // on a tie); a run the tool failed says nothing either way.
        let reasons = ["error", "lost", "throughput"];
        let most = reasons.iter().map(|why| count(why)).max().unwrap_or(0);
        reasons
            .into_iter()
            .find(|why| most > 0 && count(why) == most)
            .or(Some("load generator"))
    } else if median_p99_ms.is_nan() || median_p99_ms > bound_ms {
        Some("latency")
    } else {
        None
    };
    Rung {
        rate_per_s: rate,
        passed: failed_by.is_none(),
        failed_by,
        median_p99_ms,
        p99_ms: p99_in_order,
        median_tool_cpu,
        median_server_cores,
        tool_saturated: median_tool_cpu > SATURATED,
        runs,
        errors,
    }
}

/// The capacity a ladder's rungs show: the highest passing rate, whether it
/// is only a floor, and what limited it.
pub fn verdict(rungs: &[Rung]) -> (f64, bool, &'static str) {
    let best = rungs
        .iter()
        .filter(|r| r.passed)
        .max_by(|a, b| a.rate_per_s.total_cmp(&b.rate_per_s));
    let best_rate = best.map_or(0.0, |r| r.rate_per_s);
    match rungs.iter().find(|r| !r.passed && r.rate_per_s > best_rate) {
        Some(failed) => {
            let why = failed.failed_by.unwrap_or("latency");
            (
                best_rate,
                failed.tool_saturated || why == "load generator",
                why,
            )
        }
        // Every rate passed: the ladder, not the server, ended the climb,
        // and if the tool was saturated at the top the tool could not have
        // offered much more either.
        None => (
            best_rate,
            best.is_some_and(|r| r.tool_saturated),
            "max rate",
        ),
    }
}

/// Climbs the ladder as `settings` say.
pub async fn capacity(
    target: &Target,
    settings: &CapacitySettings,
) -> Result<CapacityReport, BenchError> {
    let bound_ms = settings.bound.as_secs_f64() * 1000.0;
    let first = settings.rates.first().copied().unwrap_or(1.0);
    // The first thousand connections a fresh server takes cost it page
    // faults and allocator growth (and Node its JIT), none of which later
    // runs pay: a warm-up run goes first and is not judged.
    // A warm-up that errs ends the ladder: a server that cannot take the
    // lowest rate once has no capacity to climb to.
    let warmup = flood(target, settings.clients, first, settings.duration).await?;
    settle(target).await;
    let mut rungs: Vec<Rung> = Vec::new();
    let mut failed_in_a_row = 0;
    for &rate in &settings.rates {
        let mut runs = Vec::with_capacity(settings.runs);
        let mut errors = Vec::new();
        for _ in 0..settings.runs.max(1) {
            // A run that errs (a server refusing connections under the
            // previous run's backlog, say) fails that run, not the ladder:
            // the rate is judged with it, and the climb goes on.
            match flood(target, settings.clients, rate, settings.duration).await {
                Ok(run) => runs.push(run),
                Err(err) => errors.push(RunError::of(&err)),
            }
            settle(target).await;
        }
        let rung = judge(rate, runs, errors, bound_ms);
        failed_in_a_row = if rung.passed { 0 } else { failed_in_a_row + 1 };
        rungs.push(rung);
        if failed_in_a_row >= settings.stop_after.max(1) {
            break;
        }
    }
    let (capacity_per_s, floor, limited_by) = verdict(&rungs);
    Ok(CapacityReport {
        mode: "capacity",
        clients: settings.clients,
        bound_p99_ms: bound_ms,
        runs_per_rate: settings.runs,
        capacity_per_s,
        floor,
        limited_by,
        warmup,
        rates: rungs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuShare;
    use crate::report::Latency;

    fn run(rate: f64, p99_ms: f64, converged: bool, tool: f64) -> FloodReport {
        let latency = Latency {
            samples: 1,
            p50_ms: p99_ms,
            p90_ms: p99_ms,
            p99_ms,
            max_ms: p99_ms,
        };
        FloodReport {
            mode: "flood",
            clients: 10,
            target_rate_per_s: rate,
            achieved_rate_per_s: rate,
            sent_rate_per_s: rate,
            clicks: 1,
            unacked: 0,
            ack: latency.clone(),
            visible: latency,
            converged,
            final_total: 1,
            messages_received: 1,
            cpu: CpuShare {
                tool,
                tool_saturated: tool > SATURATED,
                servers_cores: None,
            },
            attack: None,
        }
    }

    #[test]
    fn one_noisy_run_does_not_fail_a_rate() {
        let rung = judge(
            1000.0,
            vec![
                run(1000.0, 30.0, true, 0.5),
                run(1000.0, 400.0, true, 0.5),
                run(1000.0, 35.0, true, 0.5),
            ],
            Vec::new(),
            100.0,
        );
        assert!(rung.passed, "{rung:?}");
        assert_eq!(rung.median_p99_ms, 35.0);
        assert_eq!(rung.p99_ms, [30.0, 400.0, 35.0], "kept in the order run");
    }

    #[test]
    fn losses_in_most_runs_fail_a_rate_whatever_the_latency() {
        let rung = judge(
            1000.0,
            vec![
                run(1000.0, 30.0, false, 0.5),
                run(1000.0, 30.0, true, 0.5),
                run(1000.0, 30.0, false, 0.5),
            ],
            Vec::new(),
            100.0,
        );
        assert_eq!(rung.failed_by, Some("lost"));
    }

    #[test]
    fn runs_that_erred_fail_a_rate_when_they_are_half_of_it() {
        let err = || {
            ["connection refused", "no greeting"]
                .map(|error| RunError {
                    error: error.into(),
                    tool_side: false,
                })
                .to_vec()
        };
        let rung = judge(1000.0, vec![run(1000.0, 30.0, true, 0.5)], err(), 100.0);
        assert_eq!(rung.failed_by, Some("error"));
        assert_eq!(rung.errors.len(), 2);
        let rung = judge(
            1000.0,
            vec![run(1000.0, 30.0, true, 0.5), run(1000.0, 35.0, true, 0.5)],
            err()[..1].to_vec(),
            100.0,
        );
        assert!(rung.passed, "one error in three runs: {rung:?}");
        let rung = judge(1000.0, Vec::new(), err(), 100.0);
        assert!(!rung.passed && rung.median_p99_ms.is_nan());
        // A tool out of descriptors failed, not the server.
        let out_of_fds = RunError::of(&BenchError::FdLimit {
            needed: 1064,
            limit: 1024,
        });
        assert!(out_of_fds.tool_side);
        let rung = judge(1000.0, Vec::new(), vec![out_of_fds.clone()], 100.0);
        assert_eq!(rung.failed_by, Some("load generator"));
        // One run the tool failed and two that lost clicks: the server
        // lost them, and that is the verdict, not the tool's limit.
        let rung = judge(
            1000.0,
            vec![run(1000.0, 30.0, false, 0.5), run(1000.0, 30.0, false, 0.5)],
            vec![out_of_fds],
            100.0,
        );
        assert_eq!(rung.failed_by, Some("lost"));
    }

    #[test]
    fn the_capacity_is_the_highest_pass_and_a_saturated_tool_makes_it_a_floor() {
        let rung =
            |rate, p99, tool| judge(rate, vec![run(rate, p99, true, tool)], Vec::new(), 100.0);
        // A failure, a pass above it, then two failures: the pass counts.
        let rungs = vec![
            rung(1000.0, 20.0, 0.4),
            rung(2000.0, 150.0, 0.5),
            rung(3000.0, 60.0, 0.6),
            rung(5000.0, 200.0, 0.95),
            rung(7000.0, 300.0, 0.97),
        ];
        assert_eq!(verdict(&rungs), (3000.0, true, "latency"));
        let rungs = vec![rung(1000.0, 20.0, 0.4), rung(2000.0, 150.0, 0.5)];
        assert_eq!(verdict(&rungs), (1000.0, false, "latency"));
        assert_eq!(verdict(&rungs[..1]), (1000.0, false, "max rate"));
        // Every rate passed, the top one with the tool saturated: a floor.
        let rungs = vec![rung(1000.0, 20.0, 0.4), rung(2000.0, 30.0, 0.95)];
        assert_eq!(verdict(&rungs), (2000.0, true, "max rate"));
        // None passed.
        assert_eq!(
            verdict(&[rung(1000.0, 200.0, 0.4)]),
            (0.0, false, "latency")
        );
    }

    #[test]
    fn a_geometric_ladder_stops_at_its_maximum() {
        assert_eq!(
            CapacitySettings::geometric(100.0, 2.0, 900.0),
            [100.0, 200.0, 400.0, 800.0]
        );
    }
}
