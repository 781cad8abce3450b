//! Histograms drawn as bpftrace's `hist()` draws them: power-of-two buckets and `@` bars.

use std::io::Write;

use anyhow::Result;
use pfault_common::{hist_bucket_floor, HIST_BUCKETS};

const BAR: usize = 52;

/// Draws a log-linear latency histogram (ns) as log2 buckets in microseconds.
pub(crate) fn write_log2_us(w: &mut dyn Write, hist: &[u64; HIST_BUCKETS]) -> Result<()> {
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
pub(crate) fn percentile(hist: &[u64; HIST_BUCKETS], max: u64, q: f64) -> u64 {
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

#[cfg(test)]
mod tests {
    use pfault_common::hist_bucket;

    use super::*;

    fn empty() -> [u64; HIST_BUCKETS] {
        [0; HIST_BUCKETS]
    }

    fn draw(h: &[u64; HIST_BUCKETS]) -> String {
        let mut out = Vec::new();
        write_log2_us(&mut out, h).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_empty_histogram_has_no_percentiles_and_says_so() {
        let h = empty();
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(percentile(&h, 0, q), 0);
            assert_eq!(percentile(&h, 1000, q), 0);
        }
        assert_eq!(draw(&h), "(no completed faults)\n");
    }

    #[test]
    fn one_bucket_gives_its_midpoint_capped_at_the_max() {
        // Bucket 8 holds 8 and 9 ns (the next starts at 10): midpoint 9.
        let mut h = empty();
        assert_eq!((hist_bucket(8), hist_bucket(9), hist_bucket(10)), (8, 8, 9));
        h[8] = 10;
        assert_eq!(percentile(&h, 9, 0.5), 9);
        assert_eq!(percentile(&h, 9, 1.0), 9);
        // All were 8 ns: the midpoint would be above the largest seen.
        assert_eq!(percentile(&h, 8, 0.5), 8);
        assert_eq!(percentile(&h, 8, 0.99), 8);
    }

    #[test]
    fn percentiles_pick_the_bucket_holding_their_rank() {
        let mut h = empty();
        h[4] = 90; // 4 ns exactly
        h[12] = 10; // 16..20 ns: midpoint 18
        assert_eq!(percentile(&h, 19, 0.0), 4);
        assert_eq!(percentile(&h, 19, 0.5), 4);
        assert_eq!(percentile(&h, 19, 0.9), 4);
        assert_eq!(percentile(&h, 19, 0.95), 18);
        assert_eq!(percentile(&h, 19, 1.0), 18);
    }

    #[test]
    fn the_last_bucket_is_open_ended_and_never_above_the_max() {
        let mut h = empty();
        h[HIST_BUCKETS - 1] = 1;
        let floor = hist_bucket_floor(HIST_BUCKETS - 1);
        assert_eq!(floor, 7 << 38);
        assert_eq!(percentile(&h, u64::MAX, 0.5), floor);
        assert_eq!(percentile(&h, 5, 0.5), 5);
    }

    #[test]
    fn percentile_is_never_above_max_and_grows_with_q() {
        // Every bucket filled, with the max at each bucket's floor (the smallest it can be).
        for top in 0..HIST_BUCKETS {
            let mut h = empty();
            for (i, n) in h.iter_mut().enumerate().take(top + 1) {
                *n = i as u64 % 7 + 1;
            }
            let max = hist_bucket_floor(top);
            let mut last = 0;
            for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let p = percentile(&h, max, q);
                assert!(p <= max, "bucket {top}, q {q}: {p} > max {max}");
                assert!(p >= last, "bucket {top}: p{q} {p} below {last}");
                last = p;
            }
        }
    }

    #[test]
    fn one_latency_draws_one_full_bar() {
        let mut h = empty();
        h[hist_bucket(2500)] = 1; // 2.5 us
        let bar = "@".repeat(52);
        assert_eq!(draw(&h), format!("[2, 4)                 1 |{bar}|\n"));
    }

    #[test]
    fn empty_buckets_between_are_drawn_and_bars_scale_to_the_largest() {
        let mut h = empty();
        h[0] = 3; // 0 ns: [0, 1) us
        h[hist_bucket(2500)] = 6; // [2, 4) us
        let text = draw(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            format!("[0, 1)                 3 |{:<52}|", "@".repeat(26))
        );
        assert_eq!(lines[1], format!("[1, 2)                 0 |{:<52}|", ""));
        assert_eq!(lines[2], format!("[2, 4)                 6 |{}|", "@".repeat(52)));
    }

    #[test]
    fn large_buckets_are_labelled_in_k_and_m() {
        let mut h = empty();
        h[hist_bucket(1 << 20)] = 1; // 1048 us: in [1K, 2K)
        h[HIST_BUCKETS - 1] = 1; // 7 << 38 ns = 1924 s: in [1024M, 2048M) us
        let text = draw(&h);
        let first = text.lines().next().unwrap();
        let last = text.lines().last().unwrap();
        assert!(first.starts_with("[1K, 2K) "), "{text}");
        assert!(last.starts_with("[1024M, 2048M) "), "{text}");
        // Powers of two in between: 2K, 4K, ... 512M.
        assert_eq!(text.lines().count(), 21, "{text}");
        assert!(text.lines().all(|l| l.ends_with('|')), "{text}");
    }
}
