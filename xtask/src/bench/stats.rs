//! Statistics over timed samples and their markdown cells and rows.

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stats {
    pub(super) n: usize,
    pub(super) median: f64,
    pub(super) p95: f64,
    pub(super) min: f64,
}

/// Median, p95 (nearest rank) and minimum of microsecond samples.
pub(super) fn stats(samples: &[f64]) -> Stats {
    if samples.is_empty() {
        return Stats::default();
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
    Stats {
        n,
        median,
        p95: v[rank - 1],
        min: v[0],
    }
}

/// Microseconds as milliseconds for the tables.
pub(super) fn ms(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{:.0}", us / 1000.0)
    } else if us >= 10_000.0 {
        format!("{:.1}", us / 1000.0)
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

pub(super) fn row(what: &str, s: Stats) -> String {
    format!(
        "| {what} | {} | {} | {} | {} |\n",
        s.n,
        ms(s.median),
        ms(s.p95),
        ms(s.min)
    )
}

pub(super) const TABLE_HEAD: &str =
    "| | runs | median ms | p95 ms | min ms |\n|---|---:|---:|---:|---:|\n";

pub(super) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

pub(super) fn kib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1024.0)
}
