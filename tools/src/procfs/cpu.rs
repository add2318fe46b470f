//! Where the CPU time goes during a run: CPU seconds per process group (each service of the
//! stack, the load balancer, Redis, Postgres, NATS and the load generator itself), read from
//! `/proc` before and after, so a missed target shows which process the cores were busy in.

use std::{collections::BTreeMap, fs, path::Path, time::Instant};

use serde::Serialize;

/// Kernel clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`): 100 on every Linux
/// architecture this runs on.
const TICKS_PER_SEC: f64 = 100.0;
/// Backing processes counted by command name; all processes of one name form one group
/// (Postgres runs a process per connection).
const BACKING: [&str; 4] = ["postgres", "redis-server", "nats-server", "haproxy"];

/// CPU ticks of every counted process at one instant: by pid, with its group.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    ticks: BTreeMap<String, (String, u64)>,
}

/// One group's share of a window.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub process: String,
    /// CPU seconds spent in the window (user + system).
    pub cpu_secs: f64,
    /// Of the machine's capacity in the window (cores × wall time), in percent.
    pub machine_percent: f64,
}

/// User + system ticks of one process, from `/proc/<pid>/stat` (fields 14 and 15; the
/// command name in field 2 may hold spaces, so fields are counted after its `)`).
fn ticks_of(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

impl CpuSnapshot {
    /// Reads every process: those named by the pid files in `pids_dir` (`<name>.pid`) under
    /// their names, this process as `self_name`, the backing services by command name.
    pub fn take(pids_dir: Option<&Path>, self_name: &str) -> Self {
        let mut named: BTreeMap<String, String> = pids_dir
            .map(super::pid_files_in)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, pid)| (pid.to_string(), name))
            .collect();
        named.insert(std::process::id().to_string(), self_name.to_owned());
        let mut ticks = BTreeMap::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().filter_map(Result::ok) {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let group = match named.get(&pid) {
                Some(name) => name.clone(),
                None => {
                    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    match BACKING.iter().find(|b| comm.trim() == **b) {
                        Some(backing) => (*backing).to_owned(),
                        None => continue,
                    }
                }
            };
            if let Some(t) = ticks_of(&pid) {
                ticks.insert(pid, (group, t));
            }
        }
        Self { at: Instant::now(), ticks }
    }

    /// CPU per group from `self` to `later`, busiest first. Counted per process, then summed
    /// by group: a process that ended in between (a Postgres connection closed, the load
    /// balancer of the previous start finishing its last connections) counts nothing, and a
    /// new one all it spent. Summed by group first, an ended process's whole past would be
    /// taken off the group's window and hide the survivors' work.
    pub fn split_until(&self, later: &CpuSnapshot) -> Vec<CpuUse> {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(0.001);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mut by_group: BTreeMap<&str, u64> = BTreeMap::new();
        for (pid, (group, after)) in &later.ticks {
            let before = self.ticks.get(pid).filter(|(was, _)| was == group).map_or(0, |(_, t)| *t);
            *by_group.entry(group).or_insert(0) += after.saturating_sub(before);
        }
        let mut out: Vec<CpuUse> = by_group
            .into_iter()
            .map(|(process, ticks)| {
                let cpu_secs = ticks as f64 / TICKS_PER_SEC;
                CpuUse {
                    process: process.to_owned(),
                    cpu_secs,
                    machine_percent: 100.0 * cpu_secs / (wall * cores),
                }
            })
            .filter(|u| u.cpu_secs > 0.0)
            .collect();
        out.sort_by(|a, b| b.cpu_secs.total_cmp(&a.cpu_secs));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_spent_in_this_process_shows_in_its_own_group() {
        let pid = std::process::id().to_string();
        let before = CpuSnapshot::take(None, "me");
        let start = ticks_of(&pid).unwrap_or(0);
        // Spin until the kernel has charged 0.2 CPU seconds, however busy the machine is.
        let mut x = 0u64;
        while ticks_of(&pid).unwrap_or(u64::MAX) < start + 20 {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let split = before.split_until(&CpuSnapshot::take(None, "me"));
        let me = split.iter().find(|u| u.process == "me").map_or(0.0, |u| u.cpu_secs);
        assert!(me >= 0.2, "0.2 CPU seconds spent, {me} counted: {split:?}");
        assert!(split.iter().all(|u| u.machine_percent >= 0.0 && u.cpu_secs > 0.0));
    }

    #[test]
    fn a_process_that_ended_in_the_window_does_not_hide_its_groups_work() {
        let snapshot = |ticks: &[(&str, &str, u64)]| CpuSnapshot {
            at: Instant::now(),
            ticks: ticks
                .iter()
                .map(|(pid, group, t)| ((*pid).to_owned(), ((*group).to_owned(), *t)))
                .collect(),
        };
        // The previous load balancer (pid 1, 10 s of its own past) exits as the window opens;
        // the new one (pid 2) works 0.5 s in it; a Postgres backend starts in it.
        let before = snapshot(&[("1", "haproxy", 1_000), ("2", "haproxy", 10), ("3", "postgres", 500)]);
        let after = snapshot(&[("2", "haproxy", 60), ("3", "postgres", 700), ("4", "postgres", 30)]);
        let split: BTreeMap<String, f64> =
            before.split_until(&after).into_iter().map(|u| (u.process, u.cpu_secs)).collect();
        assert_eq!(split, BTreeMap::from([("haproxy".to_owned(), 0.5), ("postgres".to_owned(), 2.3)]));
    }
}
