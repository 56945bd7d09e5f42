//! CPU time of the tool and of the servers it loads, from `/proc`, so a
//! report can say which side of a run was saturated. On two cores the tool
//! reads every broadcast to every client on one core; a step where that core
//! was full measured the tool, and is marked as a floor instead of a server
//! result.

use std::time::Instant;

use serde::Serialize;

/// Above this share of its cores the tool, not the server, may have set the
/// pace of a run.
pub const SATURATED: f64 = 0.9;

/// Linux reports `/proc/<pid>/stat` times in USER_HZ ticks, which the kernel
/// fixes at 100 per second for user space on every architecture it exports
/// them on (the in-kernel HZ may differ; the interface does not).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds `pid` (this process when `None`) has used.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // fields are counted from after its closing one. utime and stime are
    // fields 14 and 15, i.e. the 12th and 13th after the name.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// How many cores this process may run on (its affinity mask, so a tool
/// started under `taskset -c 1` counts one).
pub fn own_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// CPU used over a span, by the tool and by the servers.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CpuShare {
    /// The tool's CPU time over the span's wall time, divided by the cores
    /// it may use: 1.0 is every one of its cores busy throughout.
    pub tool: f64,
    /// Whether the tool was above [`SATURATED`]: the run's figures are then
    /// a floor on what the server can do, not its limit.
    pub tool_saturated: bool,
    /// The servers' CPU time over the span's wall time, in cores (1.0 is one
    /// core busy throughout); `None` without their pids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers_cores: Option<f64>,
}

/// A started CPU measurement.
#[derive(Debug, Clone)]
pub struct CpuClock {
    started: Instant,
    tool: Option<f64>,
    servers: Vec<u32>,
    servers_at_start: Option<f64>,
}

impl CpuClock {
    /// Starts measuring this process and the servers `pids`.
    pub fn start(pids: &[u32]) -> Self {
        CpuClock {
            started: Instant::now(),
            tool: cpu_seconds(None),
            servers: pids.to_vec(),
            servers_at_start: servers_seconds(pids),
        }
    }

    /// The shares since [`CpuClock::start`].
    pub fn read(&self) -> CpuShare {
        let wall = self.started.elapsed().as_secs_f64().max(1e-3);
        let tool = self
            .tool
            .zip(cpu_seconds(None))
            .map_or(0.0, |(a, b)| (b - a) / wall / own_cores() as f64);
        let servers_cores = self
            .servers_at_start
            .zip(servers_seconds(&self.servers))
            .map(|(a, b)| (b - a) / wall);
        CpuShare {
            tool,
            tool_saturated: tool > SATURATED,
            servers_cores,
        }
    }
}

/// The tool's CPU in cores: this process's and, for a tool run as several
/// (a crowd's shards), its helper processes'.
#[derive(Debug, Clone)]
pub struct ToolClock {
    clock: CpuClock,
}

impl ToolClock {
    /// Starts measuring this process and its `helpers`.
    pub fn start(helpers: &[u32]) -> Self {
        ToolClock {
            clock: CpuClock::start(helpers),
        }
    }

    /// The cores busy since [`ToolClock::start`], and whether that was above
    /// 90% of the cores this process (and so each helper, which inherits
    /// its affinity) may use.
    pub fn read(&self) -> (f64, bool) {
        saturation(self.cores())
    }

    fn cores(&self) -> f64 {
        let share = self.clock.read();
        share.tool * own_cores() as f64 + share.servers_cores.unwrap_or(0.0)
    }
}

/// Cores busy, and whether that is above [`SATURATED`] of this process's.
fn saturation(cores: f64) -> (f64, bool) {
    (cores, cores > SATURATED * own_cores() as f64)
}

/// The tool's CPU over several spans added up: the busy parts of a phase,
/// leaving out the waits between them (the pause before each of a step's
/// clicks), which would dilute a saturated tool into a busy one.
#[derive(Debug, Default)]
pub struct ToolSpans {
    cpu_s: f64,
    wall_s: f64,
}

impl ToolSpans {
    /// Adds the span `clock` has measured so far.
    pub fn add(&mut self, clock: &ToolClock) {
        let wall = clock.clock.started.elapsed().as_secs_f64();
        self.cpu_s += clock.cores() * wall.max(1e-3);
        self.wall_s += wall;
    }

    /// The cores busy over the spans, and whether that was saturated.
    pub fn read(&self) -> (f64, bool) {
        saturation(self.cpu_s / self.wall_s.max(1e-3))
    }
}

/// The CPU seconds of all of `pids`, if every one could be read.
fn servers_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| cpu_seconds(Some(pid))).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_in_the_tools_share() {
        let clock = CpuClock::start(&[std::process::id()]);
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut spins = 0u64;
        while Instant::now() < until {
            spins = std::hint::black_box(spins + 1);
        }
        let share = clock.read();
        // One thread spun for the whole span: at least a good part of one
        // core (ticks are 10 ms, the machine may be busy), never more than
        // every core.
        let cores = own_cores() as f64;
        assert!(share.tool > 0.3 / cores && share.tool <= 1.05, "{share:?}");
        let servers = share
            .servers_cores
            .expect("this process's own stat is readable");
        assert!(servers > 0.3 && servers <= cores + 0.05, "{share:?}");
    }

    #[test]
    fn a_missing_process_has_no_figure() {
        assert_eq!(cpu_seconds(Some(u32::MAX)), None);
        assert_eq!(CpuClock::start(&[u32::MAX]).read().servers_cores, None);
    }
}
