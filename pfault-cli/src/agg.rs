//! Shared by the subcommands that count in the kernel: reading and resetting the count maps,
//! and noticing new processes early enough to cache what they map.

use anyhow::{Context, Result};
use aya::{maps::HashMap, Pod};
use pfault_common::{hist_bucket_floor, ProcKey, ProcStats, TaskSeen, HIST_BUCKETS};

use crate::probes::Engine;

/// All entries of a count map; with `reset`, the map is emptied for the next interval (counts
/// added between the read and the reset are lost, as with bcc's `-i`).
pub fn read_counts<K: Pod, V: Pod>(engine: &mut Engine, name: &str, reset: bool) -> Result<Vec<(K, V)>> {
    let mut map: HashMap<_, K, V> = HashMap::try_from(
        engine
            .ebpf
            .map_mut(name)
            .with_context(|| format!("no {name} map"))?,
    )?;
    let entries: Vec<(K, V)> = map.iter().filter_map(|r| r.ok()).collect();
    if reset {
        for (k, _) in &entries {
            let _ = map.remove(k);
        }
    }
    Ok(entries)
}

/// The per-process (or per-thread) rows of `stat` and `top`, the live threads' latest faults
/// included.
pub fn read_proc_stats(engine: &mut Engine, reset: bool) -> Result<Vec<(ProcKey, ProcStats)>> {
    engine.fold_threads()?;
    read_counts(engine, "PROC_STATS", reset)
}

/// A `TaskSeen` record (a thread's first fault, an exec, a fork), if `data` is one.
pub fn task_seen(data: &[u8]) -> Option<TaskSeen> {
    (data.len() == size_of::<TaskSeen>()).then(|| unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) })
}

/// A comm from the kernel, as text.
pub fn comm(bytes: &[u8]) -> String {
    crate::mappings::cstr(bytes).to_string()
}

/// Says on stderr what the kernel could not record, if anything. `ring_what` names what the
/// ring buffer carried for this subcommand.
pub fn report_losses(engine: &Engine, ring_what: &str) -> Result<()> {
    let losses = engine.losses()?;
    let others = losses.others();
    if losses.ringbuf > 0 || !others.is_empty() {
        eprintln!(
            "pfault: {} {ring_what} lost (ring buffer full){others}",
            losses.ringbuf
        );
    }
    Ok(())
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
