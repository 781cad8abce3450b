//! The consumer's cost per event: ring-buffer records replayed through `pfault trace`'s
//! decoder and writers into a file, with no kernel side. `cargo xtask bench` runs it
//! (`cargo bench -p pfault-cli --bench consumer -- N`) and prints ns per event per format.

use std::time::Instant;

use pfault::{commands::trace, output::Format, records::bytes_of};
use pfault_common::*;

/// Records as a busy anonymous-memory workload sends them: one process, fresh pages,
/// minor write faults, one in ten on a file mapping.
fn records(n: usize) -> Vec<Vec<u8>> {
    let pid = std::process::id();
    (0..n)
        .map(|i| {
            // SAFETY: FaultEvent is plain data (Pod): all-zero bytes are a value.
            let mut ev: FaultEvent = unsafe { std::mem::zeroed() };
            ev.rec = REC_FAULT;
            ev.pid = pid;
            ev.tid = pid;
            ev.error_code = PF_USER | PF_WRITE;
            ev.kind = KIND_MINOR;
            ev.ts_ns = 1_000_000_000 + i as u64 * 2_300;
            ev.addr = 0x7f00_0000_0000 + i as u64 * 4096;
            ev.ip = 0x5555_5555_51d2;
            ev.latency_ns = 1_800 + (i as u64 % 700);
            ev.comm[..11].copy_from_slice(b"anon_writer");
            ev.map.kind = if i % 10 == 0 && std::env::var_os("FILES").is_some() {
                MAP_FILE
            } else {
                MAP_ANON
            };
            ev.map.ino = 1234;
            ev.map.dev = 0x80_0001;
            ev.map.offset = (i as u64 % 512) * 4096;
            ev.map.name[..8].copy_from_slice(b"data.bin");
            bytes_of(&ev).to_vec()
        })
        .collect()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let recs = records(n);
    let dir = std::env::temp_dir();
    for (name, format) in [("json", Format::Json), ("text", Format::Text)] {
        let path = dir.join(format!("pfault-consumer-bench.{name}"));
        let out = std::fs::File::create(&path).expect("a scratch file");
        let start = Instant::now();
        let written = trace::replay(&recs, format, Box::new(out)).expect("replaying records");
        let ns = start.elapsed().as_nanos() as f64 / written as f64;
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        let _ = std::fs::remove_file(&path);
        println!("consumer {name}: {ns:.0} ns per event ({written} events, {bytes} bytes)");
    }
}
