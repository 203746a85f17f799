//! CPU, write calls and a counter, read at the start and the end of a
//! measured window, for figures per delivery or per request.

use std::time::{Duration, Instant};

use crate::procfs::{Process, cpu_percent, machine_busy};

/// What the processes had used at one moment.
#[derive(Debug, Clone)]
pub struct Marks {
    /// When the marks were read.
    pub at: Instant,
    /// The count the caller measures (deliveries, requests) at that moment.
    pub delivered: u64,
    /// CPU of the server processes, summed; `None` without any.
    server_cpu: Option<Duration>,
    /// Write calls of the server processes, summed; `None` without any, or
    /// where `/proc/<pid>/io` cannot be read.
    server_writes: Option<u64>,
    others: Vec<(String, Duration)>,
    client_cpu: Duration,
    machine: Duration,
}

impl Marks {
    /// Reads every figure now.
    pub fn take(
        server_pids: &[u32],
        watch: &[(String, u32)],
        delivered: u64,
    ) -> std::io::Result<Self> {
        let server_cpu = if server_pids.is_empty() {
            None
        } else {
            let mut sum = Duration::ZERO;
            for &pid in server_pids {
                sum += Process::Pid(pid).cpu_time()?;
            }
            Some(sum)
        };
        let server_writes = if server_pids.is_empty() {
            None
        } else {
            server_pids
                .iter()
                .map(|&pid| Process::Pid(pid).write_syscalls().ok())
                .sum()
        };
        let others = watch
            .iter()
            .map(|(name, pid)| Ok((name.clone(), Process::Pid(*pid).cpu_time()?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            at: Instant::now(),
            delivered,
            server_cpu,
            server_writes,
            others,
            client_cpu: Process::OwnProcess.cpu_time()?,
            machine: machine_busy()?,
        })
    }

    /// The servers' CPU between `self` and `later`.
    pub fn server_cpu_until(&self, later: &Self) -> Option<Duration> {
        Some(later.server_cpu?.saturating_sub(self.server_cpu?))
    }

    /// The servers' write calls between `self` and `later`.
    pub fn server_writes_until(&self, later: &Self) -> Option<u64> {
        Some(later.server_writes?.saturating_sub(self.server_writes?))
    }

    /// Each watched process's CPU between `self` and `later`.
    pub fn others_until(&self, later: &Self) -> Vec<(String, Duration)> {
        self.others
            .iter()
            .zip(&later.others)
            .map(|((name, before), (_, after))| (name.clone(), after.saturating_sub(*before)))
            .collect()
    }

    /// The load generator's CPU between `self` and `later`.
    pub fn client_cpu_until(&self, later: &Self) -> Duration {
        later.client_cpu.saturating_sub(self.client_cpu)
    }

    /// CPU the machine spent on anything but the servers, the watched
    /// processes and the load generator, in percent of one core: how
    /// contended the window was (the kernel's softirq work for loopback
    /// traffic, charged to no process, is in it too).
    pub fn foreign_percent_until(&self, later: &Self) -> f64 {
        let ours = self.server_cpu_until(later).unwrap_or_default()
            + self
                .others_until(later)
                .into_iter()
                .map(|(_, cpu)| cpu)
                .sum::<Duration>()
            + self.client_cpu_until(later);
        let busy = later.machine.saturating_sub(self.machine);
        cpu_percent(busy.saturating_sub(ours), later.at.duration_since(self.at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_of_this_process_move_forward() {
        let pid = std::process::id();
        let watch = vec![("self".to_owned(), pid)];
        let before = Marks::take(&[pid], &watch, 3).unwrap();
        // Some CPU and some writes of our own between the two marks.
        let mut spin = 0u64;
        for i in 0..2_000_000u64 {
            spin = spin.wrapping_add(i * i);
        }
        std::hint::black_box(spin);
        let after = Marks::take(&[pid], &watch, 10).unwrap();
        assert_eq!(after.delivered - before.delivered, 7);
        assert!(before.server_cpu_until(&after).is_some());
        assert!(before.server_writes_until(&after).is_some());
        assert_eq!(before.others_until(&after).len(), 1);
        assert!(before.foreign_percent_until(&after) >= 0.0);
        let none = Marks::take(&[], &[], 0).unwrap();
        assert_eq!(none.server_cpu_until(&none), None);
        assert_eq!(none.server_writes_until(&none), None);
    }
}
