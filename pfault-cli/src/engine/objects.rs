//! The compiled kernel side and the names of what is in it: every map and global the userspace
//! side reaches for is named here and nowhere else (programs, in the probe table), and a test
//! holds the names against the embedded object (what a libbpf skeleton gives for free).

/// The compiled kernel side, committed so that stable Rust alone can build pfault
/// (`cargo xtask build-ebpf` refreshes it; `cargo xtask test` fails when it is stale).
pub(crate) static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/pfault.bpf.o");
/// The same programs for kernels that lack one of `features::HELPERS` (pfault-ebpf's
/// `kernel.rs` says what it does instead).
pub(crate) static BPF_OBJECT_COMPAT: &[u8] = aya::include_bytes_aligned!("../../bpf/pfault-compat.bpf.o");

/// The read-only settings (`pfault_common::Config`).
pub(crate) const CONFIG: &str = "CONFIG";
/// aya-log's level global: 0 silences the kernel side's log.
pub(crate) const LOG_LEVEL: &str = aya_log::LEVEL;

pub(crate) mod maps {
    /// Ring buffer: fault events (`trace`) and process notices.
    pub(crate) const EVENTS: &str = "EVENTS";
    /// Counts per (process, kind, stack hashes, comm).
    pub(crate) const STACK_COUNTS: &str = "STACK_COUNTS";
    /// The (process, stack) pairs whose frames were sent.
    pub(crate) const STACKS_SENT: &str = "STACKS_SENT";
    pub(crate) const FILE_COUNTS: &str = "FILE_COUNTS";
    pub(crate) const PROC_STATS: &str = "PROC_STATS";
    /// Each thread's parked fault; with its counts (`stat`, `top`).
    pub(crate) const PENDING: &str = "PENDING";
    pub(crate) const THREADS: &str = "THREADS";
    /// Per-CPU counts of what the kernel side could not record.
    pub(crate) const COUNTERS: &str = "COUNTERS";
    /// Tgids to trace when following a command and its children.
    pub(crate) const TRACED: &str = "TRACED";
    /// Unwind rows of every loaded binary, back to back.
    pub(crate) const UNWIND_ROWS: &str = "UNWIND_ROWS";
    /// Where each binary's rows are, by file.
    pub(crate) const UNWIND_FILES: &str = "UNWIND_FILES";
    /// The code mappings the unwinder met, per process and 64 KiB granule.
    pub(crate) const TEXT_VMAS: &str = "TEXT_VMAS";
    /// Each process's generation in `TEXT_VMAS` keys: bumped at exec and exit.
    pub(crate) const EXEC_GEN: &str = "EXEC_GEN";
    /// Each thread slot's last user-stack walk, per CPU.
    pub(crate) const WALK_CACHE: &str = "WALK_CACHE";

    #[cfg(test)]
    pub(crate) const ALL: &[&str] = &[
        EVENTS,
        STACK_COUNTS,
        STACKS_SENT,
        FILE_COUNTS,
        PROC_STATS,
        COUNTERS,
        PENDING,
        THREADS,
        TRACED,
        UNWIND_ROWS,
        UNWIND_FILES,
        TEXT_VMAS,
        EXEC_GEN,
        WALK_CACHE,
    ];
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSymbol as _};

    use super::*;

    /// Needs no root: the object is parsed, not loaded.
    #[test]
    fn every_name_the_cli_uses_is_in_the_objects() {
        use super::super::probes::{COMPAT_ONLY, DEFAULT_ONLY, PROBES};
        for (object, not_here) in [
            (BPF_OBJECT, COMPAT_ONLY.as_slice()),
            (BPF_OBJECT_COMPAT, &DEFAULT_ONLY),
        ] {
            let obj = aya_obj::Object::parse(object).expect("the embedded object parses");
            for m in maps::ALL {
                assert!(obj.maps.contains_key(*m), "the object has no map {m}");
            }
            for p in PROBES {
                assert_eq!(
                    obj.programs.contains_key(p.program),
                    !not_here.contains(&p.program),
                    "program {} in the object",
                    p.program
                );
            }
        }
    }

    #[test]
    fn the_config_global_is_the_size_of_the_rust_struct() {
        for object in [BPF_OBJECT, BPF_OBJECT_COMPAT] {
            config_global_matches(object);
        }
    }

    fn config_global_matches(object: &[u8]) {
        let elf = object::File::parse(object).expect("the embedded object is ELF");
        let sym = elf
            .symbols()
            .find(|s| s.name() == Ok(CONFIG))
            .expect("the object has no CONFIG global");
        assert_eq!(sym.size() as usize, size_of::<pfault_common::Config>());
        let level = elf
            .symbols()
            .find(|s| s.name() == Ok(LOG_LEVEL))
            .expect("the object has no aya-log level global");
        assert_eq!(level.size(), 1);
    }
}
