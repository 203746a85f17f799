//! What `/proc` says about a process: resident memory and CPU time.

use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` times. `USER_HZ` is 100 on
/// every Linux architecture the bench runs on, and reading `sysconf` would
/// need `unsafe`.
const TICKS_PER_SECOND: u64 = 100;

/// A process to observe: a pid, or this process itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The bench itself.
    OwnProcess,
    /// Another process by pid.
    Pid(u32),
}

impl Process {
    fn dir(self) -> String {
        match self {
            Self::OwnProcess => "/proc/self".to_owned(),
            Self::Pid(pid) => format!("/proc/{pid}"),
        }
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(self) -> std::io::Result<u64> {
        let status = std::fs::read_to_string(format!("{}/status", self.dir()))?;
        parse_vm_rss_kib(&status).ok_or_else(|| std::io::Error::other("no VmRSS line"))
    }

    /// Write-like system calls made so far (`syscw` of `/proc/<pid>/io`:
    /// `write`, `writev` and their kin), to count how many writes a batch
    /// of frames took.
    pub fn write_syscalls(self) -> std::io::Result<u64> {
        let io = std::fs::read_to_string(format!("{}/io", self.dir()))?;
        parse_io_field(&io, "syscw").ok_or_else(|| std::io::Error::other("no syscw line"))
    }

    /// CPU time used so far, user plus system.
    pub fn cpu_time(self) -> std::io::Result<Duration> {
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir()))?;
        let ticks = parse_cpu_ticks(&stat).ok_or_else(|| std::io::Error::other("bad stat line"))?;
        Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
    }
}

/// CPU time the whole machine spent busy (everything but idle and I/O wait)
/// since boot, summed over its cores, from `/proc/stat`.
pub fn machine_busy() -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks =
        parse_machine_busy_ticks(&stat).ok_or_else(|| std::io::Error::other("bad /proc/stat"))?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// The busy ticks of the `cpu` line of `/proc/stat`: user, nice, system,
/// irq, softirq and steal.
pub fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum();
    Some(busy)
}

/// A CPU-time reading, to compare with a later one.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    at: Instant,
    cpu: Duration,
}

impl CpuMark {
    /// Reads `process`'s CPU time now.
    pub fn now(process: Process) -> std::io::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            cpu: process.cpu_time()?,
        })
    }

    /// CPU used between `self` and `later`, as a percentage of one core.
    pub fn percent_of_core_until(&self, later: &CpuMark) -> f64 {
        cpu_percent(
            later.cpu.saturating_sub(self.cpu),
            later.at.duration_since(self.at),
        )
    }

    /// CPU time used between `self` and `later`.
    pub fn cpu_until(&self, later: &CpuMark) -> Duration {
        later.cpu.saturating_sub(self.cpu)
    }
}

/// `cpu` over `wall`, as a percentage of one core.
pub fn cpu_percent(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
}

/// The `VmRSS` of a `/proc/<pid>/status` text, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One counter of a `/proc/<pid>/io` text (`syscw: 42`).
pub fn parse_io_field(io: &str, name: &str) -> Option<u64> {
    io.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
        .trim()
        .parse()
        .ok()
}

/// `utime + stime`, in clock ticks, of a `/proc/<pid>/stat` line.
///
/// The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is index 0: utime (14) and stime (15)
    // are indexes 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_from_status() {
        let status =
            "Name:\tpulse-gateway\nVmPeak:\t  900000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_from_stat_with_a_strange_name() {
        let stat =
            "4242 (pulse (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn machine_busy_from_proc_stat() {
        let stat = "cpu  100 5 50 9000 20 3 2 1 0 0\ncpu0 50 2 25 4500 10 1 1 0 0 0\n";
        assert_eq!(parse_machine_busy_ticks(stat), Some(161));
        assert_eq!(parse_machine_busy_ticks("intr 1 2 3\n"), None);
        machine_busy().unwrap();
    }

    #[test]
    fn own_process_is_readable() {
        assert!(Process::OwnProcess.rss_kib().unwrap() > 0);
        Process::OwnProcess.cpu_time().unwrap();
        Process::OwnProcess.write_syscalls().unwrap();
    }

    #[test]
    fn write_calls_from_proc_io() {
        let io = "rchar: 6976\nwchar: 10\nsyscr: 10\nsyscw: 3\nread_bytes: 0\n";
        assert_eq!(parse_io_field(io, "syscw"), Some(3));
        assert_eq!(parse_io_field(io, "syscr"), Some(10));
        assert_eq!(parse_io_field("rchar: 1\n", "syscw"), None);
    }

    #[test]
    fn percent_of_a_core() {
        assert_eq!(
            cpu_percent(Duration::from_millis(300), Duration::from_secs(30)),
            1.0
        );
        assert_eq!(cpu_percent(Duration::from_secs(1), Duration::ZERO), 0.0);
    }
}
