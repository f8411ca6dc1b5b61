//! Process and system figures for the reporter's heartbeat.
//!
//! A [`Sampler`] is made once and asked on every heartbeat, so it refreshes
//! only the few figures it reports: this process (memory, CPU time), system
//! memory, and the one disk that holds the working directory. It reads
//! `/proc` and calls `statvfs`, so call it off the async workers
//! (`spawn_blocking`).

use std::path::Path;

use automation_proto::v1::{ProcessStats, SystemStats};
use sysinfo::{
    CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Pid, ProcessRefreshKind,
    ProcessesToUpdate, System,
};

/// Samples this process and the system it runs on.
///
/// A figure the platform cannot provide is reported as 0 rather than failing
/// the heartbeat: a heartbeat without memory figures still says "alive".
pub struct Sampler {
    system: Option<System>,
    pid: Option<Pid>,
    disks: Option<Disks>,
    /// Index in `disks` of the disk holding the working directory, found once:
    /// mounts do not move under a running service.
    disk: Option<usize>,
    /// Whether the CPU figures were refreshed once already.
    cpu_baseline: bool,
}

impl Sampler {
    /// Prepares a sampler: finds this process and the disk holding the
    /// current directory.
    pub fn new() -> Self {
        let system = System::new()
            .inspect_err(|error| tracing::debug!(%error, "no process or memory figures"))
            .ok();
        let pid = sysinfo::get_current_pid()
            .inspect_err(|error| tracing::debug!(%error, "no process figures"))
            .ok();
        let disks = Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing())
            .inspect_err(|error| tracing::debug!(%error, "no disk figures"))
            .ok();
        let disk = disks.as_ref().and_then(|disks| {
            let cwd = std::env::current_dir().ok()?;
            let cwd = cwd.canonicalize().unwrap_or(cwd);
            holding_disk(disks.iter().map(sysinfo::Disk::mount_point), &cwd)
        });
        Self {
            system,
            pid,
            disks,
            disk,
            cpu_baseline: false,
        }
    }

    /// Takes one sample: this process's figures and the system's.
    pub fn sample(&mut self) -> (ProcessStats, SystemStats) {
        let mut process = ProcessStats::default();
        let mut system_stats = SystemStats::default();
        if let Some(system) = &mut self.system {
            if let Some(pid) = self.pid {
                system.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[pid]),
                    false,
                    // CPU for the accumulated time; no tasks, so threads are not listed.
                    ProcessRefreshKind::nothing()
                        .with_memory()
                        .with_cpu()
                        .without_tasks(),
                );
                if let Some(me) = system.process(pid) {
                    process.resident_memory_bytes = me.memory();
                    process.cpu_seconds_total = me.accumulated_cpu_time() as f64 / 1000.0;
                    process.open_fds = me.open_files().unwrap_or(0) as u64;
                    process.start_time_seconds = me.start_time() as f64;
                }
            }
            system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
            system_stats.memory_used_bytes = system.used_memory();
            system_stats.memory_total_bytes = system.total_memory();
            // CPU usage is measured between two refreshes: the first one
            // only sets the baseline.
            system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
            if std::mem::replace(&mut self.cpu_baseline, true) {
                let percent = f64::from(system.global_cpu_usage());
                system_stats.cpu_usage_ratio = Some((percent / 100.0).clamp(0.0, 1.0));
            }
        }
        if let (Some(disks), Some(index)) = (&mut self.disks, self.disk)
            && let Some(disk) = disks.get_mut(index)
        {
            disk.refresh_specifics(DiskRefreshKind::nothing().with_storage());
            system_stats.disk_available_bytes = disk.available_space();
            system_stats.disk_total_bytes = disk.total_space();
        }
        (process, system_stats)
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

/// The index of the mount point that holds `path`: the longest one that is a
/// prefix of it, compared by whole components (`/data` does not hold `/database`).
fn holding_disk<'a>(mounts: impl Iterator<Item = &'a Path>, path: &Path) -> Option<usize> {
    mounts
        .enumerate()
        .filter(|(_, mount)| path.starts_with(mount))
        .max_by_key(|(_, mount)| mount.components().count())
        .map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn figures_are_plausible() {
        let mut sampler = Sampler::new();
        let (process, system) = sampler.sample();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(process.resident_memory_bytes > 0, "{process:?}");
        assert!(process.cpu_seconds_total >= 0.0, "{process:?}");
        assert!(process.open_fds >= 3, "{process:?}");
        // Whole seconds, so allow one for rounding.
        assert!(process.start_time_seconds <= now + 1.0, "{process:?}");
        assert!(
            process.start_time_seconds > now - Duration::from_secs(3600).as_secs_f64(),
            "{process:?}"
        );
        assert!(system.memory_used_bytes > 0, "{system:?}");
        assert!(
            system.memory_total_bytes >= system.memory_used_bytes,
            "{system:?}"
        );
        assert!(system.disk_available_bytes > 0, "{system:?}");

        // Later samples keep working and CPU time never goes back.
        assert!(
            system.disk_total_bytes >= system.disk_available_bytes,
            "{system:?}"
        );
        // No CPU figure before there is an interval to measure over.
        assert_eq!(system.cpu_usage_ratio, None);

        // This thread keeps a core busy meanwhile: some CPU is in use.
        let busy = std::time::Instant::now();
        while busy.elapsed() < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL * 2 {
            std::hint::black_box((0..1000u64).sum::<u64>());
        }
        let (again, system) = sampler.sample();
        assert!(again.cpu_seconds_total >= process.cpu_seconds_total);
        let cpu = system
            .cpu_usage_ratio
            .expect("a CPU figure the second time");
        assert!(cpu > 0.0 && cpu <= 1.0, "{cpu}");
    }

    #[test]
    fn the_longest_mount_point_holds_a_path() {
        let mounts = [Path::new("/"), Path::new("/data"), Path::new("/data/cache")];
        let found = |path: &str| holding_disk(mounts.iter().copied(), Path::new(path));
        assert_eq!(found("/data/cache/x"), Some(2));
        assert_eq!(found("/data/other"), Some(1));
        assert_eq!(found("/database"), Some(0));
        assert_eq!(found("/"), Some(0));
        assert_eq!(
            holding_disk([Path::new("/data")].into_iter(), Path::new("/srv")),
            None
        );
    }
}
