//! `GET /admin/process`: this process's own CPU time and context switches
//! (getrusage, every thread), and its resident memory, so a load tester can
//! state what the proxy spent per request beside the latency it measured.

use serde_json::json;

/// The process's figures since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

/// getrusage(RUSAGE_SELF): CPU time and switches of every thread.
pub fn usage() -> Usage {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Usage::default();
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Usage {
        cpu_user_us: us(ru.ru_utime),
        cpu_system_us: us(ru.ru_stime),
        voluntary_switches: ru.ru_nvcsw as u64,
        involuntary_switches: ru.ru_nivcsw as u64,
    }
}

/// Resident memory in bytes (VmRSS), when /proc tells.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kb * 1024)
}

pub fn json() -> serde_json::Value {
    let mut v = serde_json::to_value(usage()).unwrap_or_default();
    v["rss_bytes"] = json!(rss_bytes());
    v["pid"] = json!(std::process::id());
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_grows_with_work() {
        let before = super::usage();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = super::usage();
        assert!(after.cpu_user_us + after.cpu_system_us >= before.cpu_user_us + before.cpu_system_us + 10_000, "{before:?} {after:?}");
        assert!(super::rss_bytes().unwrap() > 1024 * 1024);
    }
}
