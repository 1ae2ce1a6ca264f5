//! The standard `process_*` metrics, read from `/proc/self` at each scrape
//! (Linux only; elsewhere the collector reports nothing).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Linux reports CPU times in /proc in clock ticks of USER_HZ, which the
/// kernel fixes at 100 for its user-space ABI on every architecture it
/// supports (whatever its internal HZ). Kept as a constant: reading it with
/// `sysconf(_SC_CLK_TCK)` takes unsafe code (the crate forbids it), and the
/// `procfs` crate would bring a dependency tree for one constant.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default)]
pub struct ProcessCollector;

impl ProcessCollector {
    pub fn register(registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(ProcessCollector));
    }
}

/// One reading of the process' resource usage.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: f64,
    pub virtual_memory_bytes: f64,
    pub open_fds: f64,
    pub max_fds: f64,
    pub start_time_seconds: f64,
}

impl ProcessStats {
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        // Fields after the command name, which is in parentheses and may contain spaces.
        let after_comm = stat.get(stat.rfind(')')? + 2..)?;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // Field numbers of proc(5) minus 3: state is field 3, utime 14, stime 15, starttime 22.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let start_ticks: f64 = fields.get(19)?.parse().ok()?;
        let boot_time: f64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(ProcessStats {
            cpu_seconds: (utime + stime) / CLOCK_TICKS_PER_SECOND,
            resident_memory_bytes: status_kib(&status, "VmRSS:")? * 1024.0,
            virtual_memory_bytes: status_kib(&status, "VmSize:")? * 1024.0,
            open_fds,
            max_fds: max_open_files(&limits)?,
            start_time_seconds: boot_time + start_ticks / CLOCK_TICKS_PER_SECOND,
        })
    }
}

fn status_kib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    line.split_whitespace().next()?.parse().ok()
}

fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    let soft = line.split_whitespace().next()?;
    Some(if soft == "unlimited" {
        f64::INFINITY
    } else {
        soft.parse().ok()?
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                stats.resident_memory_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                stats.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                stats.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                stats.max_fds,
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                stats.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plausible_values_of_this_process() {
        let stats = ProcessStats::read().expect("/proc is readable on Linux");
        assert!(stats.resident_memory_bytes > 100_000.0);
        assert!(stats.virtual_memory_bytes >= stats.resident_memory_bytes);
        assert!(stats.open_fds >= 3.0);
        assert!(stats.max_fds >= stats.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        assert!(stats.start_time_seconds > now - 3600.0 && stats.start_time_seconds <= now + 1.0);
    }

    #[test]
    fn parses_unlimited_and_numeric_fd_limits() {
        let limits = "Limit Soft Limit Hard Limit Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(
            max_open_files("Max open files unlimited unlimited files"),
            Some(f64::INFINITY)
        );
    }
}
