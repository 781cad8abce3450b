//! Sizes and map capacities: what the kernel side declares and userspace sizes, checks and
//! reports.

pub const COMM_LEN: usize = 16;
/// Bytes kept of a mapped file's name (the dentry's basename).
pub const NAME_LEN: usize = 48;
/// Frames kept per stack, the kernel's default `perf_event_max_stack`.
pub const MAX_STACK: usize = 127;
/// log2 of the sub-buckets per power of two in latency histograms.
pub const HIST_SUB_BITS: u32 = 2;
/// Sub-buckets per power of two in latency histograms (log-linear, about 19% wide).
pub const HIST_SUB: usize = 1 << HIST_SUB_BITS;
/// Latency histogram buckets: up to 2^40 ns (about 18 minutes).
pub const HIST_BUCKETS: usize = 160;

/// User space ends here on x86-64 (47-bit addresses): an address at or above it is the
/// kernel's.
pub const USER_END: u64 = 1 << 47;

/// A user frame the CFI unwinder reached by a frame-pointer step (its caller's code had no
/// row): this bit is set on its address, which userspace clears before naming it.
pub const FRAME_BY_FP: u64 = 1 << 62;
/// A user stack's last frame may be a marker, not an address: `FRAME_MARK | STOP_*`, why the
/// walk ended short of the stack's outermost frame.
pub const FRAME_MARK: u64 = 1 << 63;
/// The frame limit (`MAX_STACK`) was reached: the marker takes the last frame's place.
pub const STOP_TRUNCATED: u64 = 1;
/// The caller's CFA is in a register only the faulting frame's registers tell.
pub const STOP_REGISTER: u64 = 2;
/// A word of the stack (a return address, a saved CFA, a signal frame) could not be read.
pub const STOP_UNREADABLE: u64 = 3;
/// The caller's CFA was at or below the stack pointer, or outside user space: a bad row or
/// a frame pointer that is not one.
pub const STOP_BAD_CFA: u64 = 4;
/// The return address was not in user space.
pub const STOP_BAD_RA: u64 = 5;
/// A walk of a stack's copy (`LateStack`) needed a word above what was copied.
pub const STOP_COPY_END: u64 = 6;

/// log2 of the most rows one unwind table may hold: the kernel side's binary search takes
/// this many steps, and userspace refuses a larger table.
pub const UNWIND_SEARCH_STEPS: u32 = 22;
pub const UNWIND_TABLE_MAX_ROWS: usize = 1 << UNWIND_SEARCH_STEPS;

/// Map capacities. Where a tool's flag sizes a map the loader sets it, and these are the
/// defaults; the others are used as the kernel side declares them.
pub mod capacity {
    /// Tgids followed as a command's family.
    pub const TRACED: u32 = 4096;
    /// stackcount's counts (`--map-entries`): a program with a hundred thousand stacks fits.
    pub const STACK_COUNTS: u32 = 262_144;
    /// (process, stack) pairs whose frames were sent.
    pub const STACKS_SENT: u32 = 65_536;
    /// ffaults' counts per (process, file) (`--map-entries`).
    pub const FILE_COUNTS: u32 = 40_960;
    /// stat's and top's rows per process or thread.
    pub const PROC_STATS: u32 = 8192;
    /// Binaries with unwind tables.
    pub const UNWIND_FILES: u32 = 8192;
    /// Processes whose exec/exit generation the unwinder keeps.
    pub const EXEC_GEN: u32 = 8192;
    /// Code mappings the unwinder remembers (per process and 64 KiB): a few hundred processes'.
    pub const TEXT_VMAS: u32 = 16384;
    /// Slots per CPU for the last walk of a thread (by thread id): 1.5 KiB each.
    pub const WALK_CACHE: u32 = 2;
    /// Threads with a parked fault or counts, where the kernel has no task storage for
    /// tracing programs (the compat object keys them by thread id): a busy host's threads.
    pub const THREADS: u32 = 65_536;
}

/// Levels of a VMA red-black tree the compat object descends: a tree of `max_map_count`
/// (65,530) VMAs is at most 2 log2(n + 1) = 32 deep.
pub const VMA_TREE_DEPTH: u32 = 40;
