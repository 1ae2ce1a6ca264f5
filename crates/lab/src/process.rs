//! prom-client's default process metrics (`collectDefaultMetrics`): start
//! time (the guard judges an instance from it), CPU, memory and file
//! descriptors, from /proc on Linux; elsewhere only the start time.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static STARTED: OnceLock<f64> = OnceLock::new();

/// Unix time the process started (first call: at start-up).
pub fn start_time_seconds() -> f64 {
    *STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    })
}

/// Resident set size in bytes, if /proc tells.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU seconds (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces: utime is the 14th field.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn gauge(out: &mut String, name: &str, kind: &str, help: &str, value: Option<String>) {
    if let Some(value) = value {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
}

/// The process metrics in the text exposition format.
pub fn exposition() -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        Some(start_time_seconds().floor().to_string()),
    );
    gauge(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        resident_memory_bytes().map(|b| b.to_string()),
    );
    // OpenMetrics: a counter family is named without _total, its sample with it.
    if let Some(seconds) = cpu_seconds() {
        out.push_str(&format!(
            "# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total {seconds}\n"
        ));
    }
    gauge(
        &mut out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        open_fds().map(|n| n.to_string()),
    );
    gauge(
        &mut out,
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max_fds().map(|n| n.to_string()),
    );
    out
}
