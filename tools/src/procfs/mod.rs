//! Everything the tools read from `/proc`: memory of a process ([`memory_kib`], the peaks of a
//! stack in [`peak_memory`]), the machine's memory ([`memory_total`]), and CPU time per
//! process group ([`cpu`]).

pub mod cpu;

use std::{fs, path::Path};

/// Resident and peak resident memory of one process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS.
    pub rss_kib: u64,
    /// VmHWM: the most the process ever had resident.
    pub peak_kib: u64,
}

/// The number in KiB of `key` (e.g. `VmHWM:`) in a `/proc/<pid>/status` or `/proc/meminfo`
/// text.
fn field_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS and VmHWM of process `pid`; `None` when it is gone. A field the kernel does not
/// report reads 0.
pub fn memory_kib(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Memory {
        rss_kib: field_kib(&status, "VmRSS:").unwrap_or(0),
        peak_kib: field_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// `(name, pid)` of every `<name>.pid` file in `dir`, sorted by name; unreadable ones are
/// skipped.
pub fn pid_files_in(dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let name = path.file_stem()?.to_string_lossy().into_owned();
            let pid = fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            Some((name, pid))
        })
        .collect()
}

/// Peak resident memory (VmHWM, KiB) of every process with a pid file in `pids_dir`, then of
/// this process as `self_name`.
pub fn peak_memory(pids_dir: Option<&Path>, self_name: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = pids_dir
        .map(pid_files_in)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, pid)| Some((name, memory_kib(pid)?.peak_kib)))
        .collect();
    if let Some(memory) = memory_kib(std::process::id()) {
        out.push((self_name.into(), memory.peak_kib));
    }
    out
}

/// The machine's memory, e.g. `24 GiB` (`/proc/meminfo`'s MemTotal).
pub fn memory_total() -> String {
    let kib =
        fs::read_to_string("/proc/meminfo").ok().and_then(|text| field_kib(&text, "MemTotal:")).unwrap_or(0);
    format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_the_machine() {
        let me = memory_kib(std::process::id());
        assert!(me.is_some_and(|m| m.rss_kib > 0 && m.peak_kib >= m.rss_kib), "{me:?}");
        assert!(!memory_total().starts_with("0 "), "{}", memory_total());
        assert_eq!(field_kib("Name:\tx\nVmHWM:\t  1234 kB\n", "VmHWM:"), Some(1234));
        assert_eq!(field_kib("Name:\tx\n", "VmHWM:"), None);
    }
}
