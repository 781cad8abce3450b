//! Histograms drawn as bpftrace's `hist()` draws them: power-of-two buckets and `@` bars.

use std::io::Write;

use anyhow::Result;
use pfault_common::{hist_bucket_floor, HIST_BUCKETS};

const BAR: usize = 52;

/// Draws a log-linear latency histogram (ns) as log2 buckets in microseconds.
pub fn write_log2_us(w: &mut dyn Write, hist: &[u64; HIST_BUCKETS]) -> Result<()> {
    // The fine buckets are summed into the power-of-two microsecond bucket they fall in.
    let mut log2: Vec<(u64, u64)> = Vec::new();
    for (i, &n) in hist.iter().enumerate() {
        let lo_ns = hist_bucket_floor(i);
        let lo_us = lo_ns / 1000;
        let bucket = if lo_us == 0 {
            0
        } else {
            1u64 << (63 - lo_us.leading_zeros())
        };
        match log2.last_mut() {
            Some((b, c)) if *b == bucket => *c += n,
            _ => log2.push((bucket, n)),
        }
    }
    let first = log2.iter().position(|&(_, n)| n > 0);
    let last = log2.iter().rposition(|&(_, n)| n > 0);
    let (Some(first), Some(last)) = (first, last) else {
        writeln!(w, "(no completed faults)")?;
        return Ok(());
    };
    let max = log2.iter().map(|&(_, n)| n).max().unwrap_or(1).max(1);
    for &(lo, n) in &log2[first..=last] {
        let range = if lo == 0 {
            "[0, 1)".to_string()
        } else {
            format!("[{}, {})", human(lo), human(lo * 2))
        };
        let bar = "@".repeat((n as f64 / max as f64 * BAR as f64).round() as usize);
        writeln!(w, "{range:<16}{n:>8} |{bar:<BAR$}|")?;
    }
    Ok(())
}

/// 1, 2, ... 512, 1K, 2K ... as bpftrace labels buckets.
fn human(v: u64) -> String {
    match v {
        v if v >= 1 << 20 => format!("{}M", v >> 20),
        v if v >= 1 << 10 => format!("{}K", v >> 10),
        v => v.to_string(),
    }
}

/// The latency below which `q` of the faults fall, from the log-linear histogram (the
/// bucket's midpoint: within about 10%), never above `max`, the largest latency seen.
pub fn percentile(hist: &[u64; HIST_BUCKETS], max: u64, q: f64) -> u64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = (total as f64 * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let lo = hist_bucket_floor(i);
            let hi = if i + 1 < HIST_BUCKETS {
                hist_bucket_floor(i + 1)
            } else {
                lo
            };
            return ((lo + hi) / 2).min(max);
        }
    }
    0
}
