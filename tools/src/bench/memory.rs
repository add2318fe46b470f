//! The services' memory after the bench: VmHWM and VmRSS of each process of the stack, and
//! the README row that checks them against 100 MB.

use std::path::Path;

use super::config::{ProcessMemory, Row, RowMaker};
use crate::{procfs, stack};

/// VmHWM and VmRSS of every process with a pid file under `state_dir/pids`.
pub fn service_memory(state_dir: &Path) -> Vec<ProcessMemory> {
    stack::pid_files(state_dir)
        .into_iter()
        .filter_map(|(name, pid)| {
            let memory = procfs::memory_kib(pid)?;
            Some(ProcessMemory { name, pid, vm_hwm_kb: memory.peak_kib, vm_rss_kb: memory.rss_kib })
        })
        .collect()
}

/// The memory row: each service's peak, met when none is over 100 MB.
pub fn row_of(memory: &[ProcessMemory], row: &RowMaker<'_>) -> Row {
    if memory.is_empty() {
        return row(
            "Memory per service",
            "no pid files found".into(),
            String::new(),
            "≤100 MB per service",
            None,
        );
    }
    let peak = memory.iter().map(|m| m.vm_hwm_kb).max().unwrap_or(0);
    let text = memory
        .iter()
        .filter(|m| m.name != "haproxy")
        .map(|m| format!("{} {:.0} MB", m.name, m.vm_hwm_kb as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ");
    let services_peak =
        memory.iter().filter(|m| m.name != "haproxy").map(|m| m.vm_hwm_kb).max().unwrap_or(peak);
    row(
        "Memory per service (peak RSS, VmHWM, after the bench)",
        text,
        String::new(),
        "≤100 MB per service",
        Some(services_peak <= 100 * 1024),
    )
}
