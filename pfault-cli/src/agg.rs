//! Shared by the subcommands that count in the kernel: reading and resetting the count maps,
//! and noticing new processes early enough to cache what they map.

use anyhow::{Context, Result};
use aya::{maps::HashMap, Pod};
use pfault_common::TaskSeen;

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

/// The process of a `TaskSeen` record (a thread's first fault), if `data` is one.
pub fn task_seen(data: &[u8]) -> Option<u32> {
    (data.len() == size_of::<TaskSeen>()).then(|| {
        let t: TaskSeen = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        t.pid
    })
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
