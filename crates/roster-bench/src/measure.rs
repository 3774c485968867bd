//! Measurements and report plumbing: HdrHistogram summaries, this process's CPU time
//! (getrusage), the server's RSS and CPU from /proc, kernel socket memory, and the
//! exact command line. Reading /proc never fails a run: a missing figure is `null`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// A histogram of microseconds from 1 µs to 1 hour with 3 significant digits.
pub fn micros_histogram() -> Histogram<u64> {
    // Bounds are constants that `new_with_bounds` accepts (low >= 1, high >= 2*low, sigfig <= 5).
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Records `micros`, clamping into the histogram's range rather than failing.
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.max(1));
}

/// `{count, mean, p50, p90, p99, p999, max}` in milliseconds (µs precision).
pub fn summary_ms(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    let ms = |us: u64| (us as f64) / 1000.0;
    json!({
        "count": h.len(),
        "mean": h.mean().round() / 1000.0,
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

/// A histogram as `[[value, count], …]`, to pass between processes.
pub fn histogram_to_json(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

/// Adds a histogram serialised by [`histogram_to_json`] into `into`.
pub fn merge_histogram_json(into: &mut Histogram<u64>, v: &Value) {
    for pair in v.as_array().into_iter().flatten() {
        if let (Some(value), Some(count)) = (
            pair.get(0).and_then(Value::as_u64),
            pair.get(1).and_then(Value::as_u64),
        ) {
            let _ = into.record_n(value.max(1), count);
        }
    }
}

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn usage(who: libc::c_int) -> Option<(f64, f64)> {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((secs(ru.ru_utime), secs(ru.ru_stime)))
}

/// CPU seconds (user, system) of this process so far, for [`cpu_delta`].
pub fn self_cpu() -> Option<(f64, f64)> {
    usage(libc::RUSAGE_SELF)
}

/// CPU seconds (user, system) of the calling thread so far.
pub fn thread_cpu() -> Option<(f64, f64)> {
    usage(libc::RUSAGE_THREAD)
}

/// CPU seconds (user, system) of this process and of its waited-for children.
pub fn own_cpu() -> Value {
    let to_json = |u: Option<(f64, f64)>| match u {
        Some((user, sys)) => json!({"user_s": round3(user), "sys_s": round3(sys)}),
        None => Value::Null,
    };
    json!({
        "self": to_json(usage(libc::RUSAGE_SELF)),
        "children": to_json(usage(libc::RUSAGE_CHILDREN)),
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Resident set size of `pid` in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:").map(|k| k * 1024)
}

/// `Slab:` of /proc/meminfo in bytes (kernel objects, sockets included), system-wide.
pub fn slab_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&meminfo, "Slab:").map(|k| k * 1024)
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// `TCP: inuse N … mem P` of /proc/net/sockstat: sockets in use and buffer pages.
pub fn tcp_sockstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |k: &str| {
        words
            .iter()
            .position(|w| *w == k)
            .and_then(|i| words.get(i + 1)?.parse().ok())
    };
    Some((after("inuse")?, after("mem")?))
}

/// CPU seconds (user, system) consumed so far by `pid`, from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> Option<(f64, f64)> {
    process_cpu_at(&format!("/proc/{pid}/stat"))
}

/// (user, system) seconds of a `/proc/…/stat` file (a process's or a thread's).
fn process_cpu_at(path: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some((utime / hz, stime / hz))
}

/// CPU seconds (user, system) of this process's live threads, summed by thread name
/// (`/proc/self/task/*/comm`: librdkafka's threads are `rdk:…`, tokio's workers
/// `tokio-runtime-w`). A thread that ended is no longer counted.
pub fn threads_cpu() -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if let Some((u, s)) = process_cpu_at(&format!("/proc/self/task/{tid}/stat")) {
            let e = out.entry(comm.trim().to_owned()).or_insert((0.0, 0.0));
            e.0 += u;
            e.1 += s;
        }
    }
    out
}

/// What each thread name used between two [`threads_cpu`] samples, in seconds, the
/// busiest first (names that used nothing left out).
pub fn threads_cpu_delta(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
) -> Value {
    let mut used: Vec<(&String, f64)> = after
        .iter()
        .map(|(name, a)| {
            let b = before.get(name).copied().unwrap_or((0.0, 0.0));
            (name, (a.0 - b.0) + (a.1 - b.1))
        })
        .filter(|(_, s)| *s > 0.0)
        .collect();
    used.sort_by(|x, y| y.1.total_cmp(&x.1));
    Value::Array(
        used.into_iter()
            .map(|(name, s)| json!([name, round3(s)]))
            .collect(),
    )
}

/// CPU used between two `process_cpu` / `self_cpu` samples, as JSON.
pub fn cpu_delta(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Value {
    match (before, after) {
        (Some(b), Some(a)) => json!({"user_s": round3(a.0 - b.0), "sys_s": round3(a.1 - b.1)}),
        _ => Value::Null,
    }
}

/// The 1, 5 and 15 minute load averages of the machine (/proc/loadavg), as written.
pub fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The sum of several `cpu_delta`s (the nodes of a cluster); `null` if any is.
pub fn cpu_sum(deltas: &[Value]) -> Value {
    let mut user = 0.0;
    let mut sys = 0.0;
    for d in deltas {
        match (d["user_s"].as_f64(), d["sys_s"].as_f64()) {
            (Some(u), Some(s)) => {
                user += u;
                sys += s;
            }
            _ => return Value::Null,
        }
    }
    json!({"user_s": round3(user), "sys_s": round3(sys)})
}

/// The soft limit on open files of this process.
pub fn open_files_limit() -> Option<u64> {
    // SAFETY: getrlimit only writes into the struct we own.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return None;
    }
    Some(rl.rlim_cur as u64)
}

/// This process's command line, shell-quoted so it can be pasted back.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_in_milliseconds() {
        let mut h = micros_histogram();
        for us in 1..=1000 {
            record(&mut h, us * 10);
        }
        let s = summary_ms(&h);
        assert_eq!(s["count"], 1000);
        assert!((s["p50"].as_f64().unwrap() - 5.0).abs() < 0.01);
        assert!((s["max"].as_f64().unwrap() - 10.0).abs() < 0.01);
    }

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut a = micros_histogram();
        record(&mut a, 1500);
        record(&mut a, 1500);
        record(&mut a, 90_000);
        let mut b = micros_histogram();
        merge_histogram_json(&mut b, &histogram_to_json(&a));
        assert_eq!(b.len(), 3);
        assert_eq!(b.max(), a.max());
    }

    #[test]
    fn proc_readers_work_on_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(process_cpu(me).is_some());
        let threads = threads_cpu();
        assert!(!threads.is_empty());
        let busy = threads_cpu_delta(&BTreeMap::new(), &threads);
        assert!(busy.as_array().is_some());
        assert!(tcp_sockstat().is_some());
        assert!(open_files_limit().unwrap() > 0);
    }

    #[test]
    fn command_lines_are_quoted() {
        assert_eq!(shell_quote("--members"), "--members");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
