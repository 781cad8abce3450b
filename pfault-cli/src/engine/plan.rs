//! What a subcommand asks of the kernel side: which outputs, which faults, which tasks, and
//! how big the maps are.

use pfault_common::{
    capacity, FileId, SentKey, StackCount, TextKey, TextVma, UnwindFile, UnwindRow, KIND_ERROR, KIND_MAJOR,
    KIND_MINOR, MODE_KERNEL, MODE_USER,
};

use super::objects::maps;
use crate::unwind::{rows_for_mb, UNWIND_MB};

/// How a fault's completion (and with it minor/major/error and latency) is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProbeMode {
    /// fentry/fexit on handle_mm_fault: VM_FAULT_* flags, cheapest hook.
    Fentry,
    /// kprobe/kretprobe on handle_mm_fault: VM_FAULT_* flags.
    Kprobe,
    /// exceptions:page_fault_* tracepoints + PAGE_FAULTS_MIN/MAJ perf events: works everywhere.
    Tracepoint,
}

impl ProbeMode {
    pub(crate) const ALL: [ProbeMode; 3] = [ProbeMode::Fentry, ProbeMode::Kprobe, ProbeMode::Tracepoint];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ProbeMode::Fentry => "fentry",
            ProbeMode::Kprobe => "kprobe",
            ProbeMode::Tracepoint => "tracepoint",
        }
    }
}

/// What became of a fault, as the kernel side's `KIND_*` values name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Kind {
    Minor,
    Major,
    Error,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Minor, Kind::Major, Kind::Error];

    /// The kernel side's `KIND_*` value.
    pub(crate) fn raw(self) -> u8 {
        match self {
            Kind::Minor => KIND_MINOR,
            Kind::Major => KIND_MAJOR,
            Kind::Error => KIND_ERROR,
        }
    }

    /// The kind a `KIND_*` value names; anything else is an error fault (it never completed).
    pub(crate) fn from_raw(raw: u8) -> Kind {
        match raw {
            KIND_MINOR => Kind::Minor,
            KIND_MAJOR => Kind::Major,
            _ => Kind::Error,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Minor => "minor",
            Kind::Major => "major",
            Kind::Error => "error",
        }
    }

    /// `Config::kinds` for a set of kinds: bit `1 << KIND_*` for each.
    pub(crate) fn mask(kinds: &[Kind]) -> u32 {
        kinds.iter().fold(0, |m, k| m | 1 << k.raw())
    }
}

/// A map whose size a subcommand lets the user choose, and the flag that chooses it: errors
/// and loss reports name the flag, and only where the tool has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tunable {
    pub(crate) map: &'static str,
    pub(crate) flag: &'static str,
}

/// What a subcommand wants from the kernel side.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// `CFG_OUT_*` and the other `CFG_*` bits.
    pub(crate) flags: u32,
    /// Bit `1 << KIND_*` for each kind wanted.
    pub(crate) kinds: u32,
    pub(crate) modes: u32,
    pub(crate) min_latency_ns: u64,
    pub(crate) probe: Option<ProbeMode>,
    pub(crate) bpf_log: bool,
    pub(crate) ringbuf_bytes: u32,
    /// `STACKS_SENT`, `STACK_COUNTS` and `FILE_COUNTS` entries.
    pub(crate) stacks_sent_entries: u32,
    pub(crate) stack_count_entries: u32,
    pub(crate) file_count_entries: u32,
    /// Rows of `UNWIND_ROWS` (`CFG_UNWIND_CFI`).
    pub(crate) unwind_rows: u32,
    /// The maps this subcommand sizes from its flags.
    pub(crate) tunables: Vec<Tunable>,
    /// `CFG_PAGE_SIZE` is dropped, with a note, where this kernel's page tables cannot be
    /// read (else pfault stops and says why).
    pub(crate) page_sizes_optional: bool,
}

impl Plan {
    pub(crate) fn new(flags: u32) -> Self {
        Plan {
            flags,
            kinds: Kind::mask(&Kind::ALL),
            modes: MODE_USER | MODE_KERNEL,
            min_latency_ns: 0,
            probe: None,
            bpf_log: false,
            // One page: tools that send records size it themselves.
            ringbuf_bytes: 4096,
            stacks_sent_entries: capacity::STACKS_SENT,
            stack_count_entries: capacity::STACK_COUNTS,
            file_count_entries: capacity::FILE_COUNTS,
            unwind_rows: 0,
            tunables: Vec::new(),
            page_sizes_optional: false,
        }
    }

    /// The flag that sizes `map` in this subcommand, if it has one.
    pub(crate) fn flag_for(&self, map: &str) -> Option<&'static str> {
        self.tunables.iter().find(|t| t.map == map).map(|t| t.flag)
    }
}

/// Which tasks to trace.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskFilter {
    pub(crate) tgid: u32,
    pub(crate) tid: u32,
    pub(crate) comm: Option<String>,
    pub(crate) cgroup: Option<crate::cgroup::Cgroup>,
    /// Trace the tgids in the `TRACED` map (a command and its children).
    pub(crate) follow: bool,
    /// The program of the command pfault starts: its unwind table is built ahead.
    pub(crate) program: Option<std::path::PathBuf>,
}

/// The ring buffer carries process notices and each new stack's frames, once: a program
/// importing a large library sends tens of thousands in a second. And the stacks that met a
/// table still loading, 8 KiB each: a loop faulting meanwhile sends one per fault, and 4 MiB
/// holds about 500 while the reader waits for the table.
pub(crate) const STACK_RINGBUF_BYTES: u32 = 4 << 20;

/// The most kernel memory stackcount's maps take with the default sizes, map by map: a hash
/// map entry is its key and value behind a 48-byte element header.
pub(crate) fn stack_map_memory() -> Vec<(&'static str, u64)> {
    let entry = |key: usize, value: usize| 48 + key as u64 + value.next_multiple_of(8) as u64;
    vec![
        (
            maps::STACK_COUNTS,
            capacity::STACK_COUNTS as u64 * entry(size_of::<u64>(), size_of::<StackCount>()),
        ),
        (
            maps::STACKS_SENT,
            capacity::STACKS_SENT as u64 * entry(size_of::<SentKey>(), 1),
        ),
        (maps::EVENTS, STACK_RINGBUF_BYTES as u64),
        // The CFI unwinder's (`--unwind cfi`, the default).
        (
            maps::UNWIND_ROWS,
            rows_for_mb(UNWIND_MB) as u64 * size_of::<UnwindRow>() as u64,
        ),
        (
            maps::TEXT_VMAS,
            capacity::TEXT_VMAS as u64 * entry(size_of::<TextKey>(), size_of::<TextVma>()),
        ),
        (
            maps::UNWIND_FILES,
            capacity::UNWIND_FILES as u64 * entry(size_of::<FileId>(), size_of::<UnwindFile>()),
        ),
        (
            maps::EXEC_GEN,
            capacity::EXEC_GEN as u64 * entry(size_of::<u32>(), size_of::<u32>()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_kernel_values_whatever_their_order() {
        assert_eq!(Kind::Minor.raw(), KIND_MINOR);
        assert_eq!(Kind::Major.raw(), KIND_MAJOR);
        assert_eq!(Kind::Error.raw(), KIND_ERROR);
        for k in Kind::ALL {
            assert_eq!(Kind::from_raw(k.raw()), k);
        }
        assert_eq!(Kind::mask(&[Kind::Major]), 1 << KIND_MAJOR);
        assert_eq!(
            Kind::mask(&Kind::ALL),
            1 << KIND_MINOR | 1 << KIND_MAJOR | 1 << KIND_ERROR
        );
    }
}
