//! The process group a run lives in: signalling it, telling whether anything
//! in it is still alive, and measuring its memory.
//!
//! On Linux, members are found by reading `/proc/<pid>/stat` of every
//! process and keeping those whose process group is ours. Zombies do not
//! count as alive (they hold no memory and cannot be killed; their reaper
//! may be slow or, in some containers, absent).

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// What a look at the group found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct GroupStats {
    /// Processes in the group that are not zombies.
    pub(super) members: usize,
    /// Sum of their resident set sizes.
    pub(super) rss_bytes: u64,
}

/// Sends `signal` to every process in the group. A group that is already
/// gone is not an error.
pub(super) fn signal(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => tracing::warn!(pgid, %signal, %error, "cannot signal the test process group"),
    }
}

/// Whether anything in the group is still alive.
pub(super) async fn is_alive(pgid: i32) -> bool {
    match stats(pgid).await {
        Some(stats) => stats.members > 0,
        // No /proc: ask the kernel (this counts zombies as alive).
        None => killpg(Pid::from_raw(pgid), None).is_ok(),
    }
}

/// Members and memory of the group, read on a blocking thread; `None` where
/// `/proc` cannot be read (not Linux, or not mounted).
pub(super) async fn stats(pgid: i32) -> Option<GroupStats> {
    tokio::task::spawn_blocking(move || scan(pgid))
        .await
        .ok()
        .flatten()
}

#[cfg(target_os = "linux")]
fn scan(pgid: i32) -> Option<GroupStats> {
    let page_size = page_size();
    let mut stats = GroupStats::default();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // The process may have gone since the directory was listed.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((pgrp, rss_pages)) = parse_stat(&stat)
            && pgrp == pgid
        {
            stats.members += 1;
            stats.rss_bytes = stats
                .rss_bytes
                .saturating_add(rss_pages.saturating_mul(page_size));
        }
    }
    Some(stats)
}

#[cfg(not(target_os = "linux"))]
fn scan(_pgid: i32) -> Option<GroupStats> {
    None
}

/// Process group and resident pages from `/proc/<pid>/stat`, or `None` for a
/// zombie (or a line that does not parse). The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from its last `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(stat: &str) -> Option<(i32, u64)> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 is the state, 5 the process group, 24 the RSS in pages.
    let state = *fields.first()?;
    if state == "Z" || state == "X" {
        return None;
    }
    let pgrp = fields.get(2)?.parse().ok()?;
    let rss_pages = fields.get(21)?.parse().ok()?;
    Some((pgrp, rss_pages))
}

/// The page size, from the kernel's auxiliary vector (`AT_PAGESZ`); 4 KiB if
/// it cannot be read.
#[cfg(target_os = "linux")]
fn page_size() -> u64 {
    static PAGE_SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        const AT_PAGESZ: usize = 6;
        const WORD: usize = std::mem::size_of::<usize>();
        let word = |bytes: &[u8]| bytes.try_into().ok().map(usize::from_ne_bytes);
        std::fs::read("/proc/self/auxv")
            .ok()
            .and_then(|auxv| {
                auxv.chunks_exact(2 * WORD).find_map(|pair| {
                    let (key, value) = pair.split_at(WORD);
                    if word(key)? == AT_PAGESZ {
                        word(value)
                    } else {
                        None
                    }
                })
            })
            .and_then(|size| u64::try_from(size).ok())
            .filter(|size| *size > 0)
            .unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "4242 (cargo test (x)) S 1 4240 4240 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 \
                    1 0 100 1000000 2560 18446744073709551615";
        assert_eq!(parse_stat(line), Some((4240, 2560)));
        let zombie = "4243 (sh) Z 1 4240 4240 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(zombie), None);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_our_own_group() {
        assert!(matches!(page_size(), 4096 | 16384 | 65536));
        let own = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        let (pgrp, rss) = parse_stat(&own).expect("parses");
        assert!(rss > 0);
        let stats = scan(pgrp).expect("/proc is readable");
        assert!(stats.members >= 1);
        assert!(stats.rss_bytes >= rss * page_size());
    }
}
