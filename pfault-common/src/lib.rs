//! The `#[repr(C)]` types that pfault's eBPF programs write and its userspace reads.
//!
//! Nothing but plain data lives here: both sides must agree on every byte, so every struct
//! is `#[repr(C)]` with explicit padding and no pointers.
#![no_std]

pub const COMM_LEN: usize = 16;
/// Bytes kept of a mapped file's name (the dentry's basename).
pub const NAME_LEN: usize = 48;
/// Frames kept per stack, the kernel's default `perf_event_max_stack`.
pub const MAX_STACK: usize = 127;
/// Sub-buckets per power of two in latency histograms (log-linear, about 19% wide).
pub const HIST_SUB: usize = 4;
/// Latency histogram buckets: up to 2^40 ns (about 18 minutes).
pub const HIST_BUCKETS: usize = 160;

/// What became of a fault.
pub const KIND_MINOR: u8 = 0;
pub const KIND_MAJOR: u8 = 1;
/// Entered the fault handler but never completed it (SIGSEGV, SIGBUS, OOM, EFAULT, ...).
pub const KIND_ERROR: u8 = 2;

/// What the faulting address was mapped to.
pub const MAP_UNKNOWN: u8 = 0;
pub const MAP_FILE: u8 = 1;
pub const MAP_ANON: u8 = 2;
pub const MAP_HEAP: u8 = 3;
pub const MAP_STACK: u8 = 4;
/// No VMA covers the address.
pub const MAP_NONE: u8 = 5;

/// x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
pub const PF_PROT: u32 = 1 << 0;
pub const PF_WRITE: u32 = 1 << 1;
pub const PF_USER: u32 = 1 << 2;
pub const PF_INSTR: u32 = 1 << 4;

/// Tag at the start of every ring-buffer record.
pub const REC_FAULT: u32 = 1;
pub const REC_TASK: u32 = 2;
pub const REC_STACK: u32 = 3;
pub const REC_MAP: u32 = 4;
pub const REC_UNWIND: u32 = 5;

/// `Config::flags` bits.
pub const CFG_FILTER_COMM: u32 = 1 << 0;
/// Filter by the `TRACED` map of tgids (a command and its children).
pub const CFG_FOLLOW: u32 = 1 << 1;
pub const CFG_MAPPING: u32 = 1 << 2;
pub const CFG_USTACK: u32 = 1 << 3;
pub const CFG_KSTACK: u32 = 1 << 4;
/// One ring-buffer record per fault (`trace`).
pub const CFG_OUT_EVENTS: u32 = 1 << 5;
/// Counts per stack (`stackcount`).
pub const CFG_OUT_STACKS: u32 = 1 << 6;
/// Counts per file (`ffaults`).
pub const CFG_OUT_FILES: u32 = 1 << 7;
/// Counts and latency per process (`stat`, `top`).
pub const CFG_OUT_PROCS: u32 = 1 << 8;
/// Aggregations keyed by thread, not process.
pub const CFG_PER_THREAD: u32 = 1 << 9;

/// Send a [`TaskSeen`] record on a thread's first fault and on exec, so userspace can read
/// its process's mappings while it lives (stacks and paths still resolve after it exits).
pub const CFG_NOTIFY_TASKS: u32 = 1 << 11;

/// Tracepoint path, stack counts only: count at completion alone, with stacks walked from the
/// fault's own registers; no entry probe (so no error faults and no latency).
pub const CFG_COMPLETION_ONLY: u32 = 1 << 12;

/// `stat` without latencies: minor and major counts come from the threads' own fault
/// accounting (`task_struct.min_flt`/`maj_flt`, read when counts are folded), so no probe runs
/// at completion. The exception tracepoints only check that the thread's previous fault was
/// accounted: one that was not is an error.
pub const CFG_ACCOUNTED: u32 = 1 << 13;

/// Send a [`MapSeen`] record for each file a wanted process maps (`mmap`), so that its
/// stacks name their libraries even when it exits before userspace reads its maps.
pub const CFG_NOTIFY_MAPS: u32 = 1 << 14;

/// Only tasks in one cgroup v2 and its descendants (`Config::cgroup_id`).
pub const CFG_FILTER_CGROUP: u32 = 1 << 15;
/// Per-process and per-file rows note their process's cgroup v2 id (`--by-cgroup`).
pub const CFG_BY_CGROUP: u32 = 1 << 16;
/// Walk user stacks with the binaries' CFI (`UNWIND_*` maps), the frame pointer where there is
/// none; else `bpf_get_stack`'s frame-pointer walk.
pub const CFG_UNWIND_CFI: u32 = 1 << 17;

/// `Config::modes` bits.
pub const MODE_USER: u32 = 1;
pub const MODE_KERNEL: u32 = 2;

/// Indexes of the per-CPU `COUNTERS` array: everything the kernel side could not record.
pub const CNT_RINGBUF_LOST: u32 = 0;
pub const CNT_PENDING_FULL: u32 = 1;
/// A new stack's frames did not fit in the ring buffer: its faults count as `STACK_LOST`.
pub const CNT_STACK_LOST: u32 = 2;
pub const CNT_AGG_FULL: u32 = 4;
pub const CNT_VMA_BUSY: u32 = 5;
/// Not losses: user frames the CFI unwinder had no row for (anonymous or JIT code, a binary
/// without CFI, a table still loading), unwound by the frame pointer instead.
pub const CNT_UNWIND_FP: u32 = 6;
/// User frames the CFI unwinder walked.
pub const CNT_UNWIND_FRAMES: u32 = 7;
pub const CNT_MAX: u32 = 8;

/// Kernel struct field offsets and enum values, read from the running kernel's BTF at load
/// time (aya's Rust programs cannot carry CO-RE relocations). Zero means "not found".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub vma_vm_start: u32,
    pub vma_vm_end: u32,
    pub vma_vm_pgoff: u32,
    pub vma_vm_file: u32,
    pub vma_vm_flags: u32,
    pub vma_vm_mm: u32,
    pub file_f_inode: u32,
    /// `file.f_path.dentry`
    pub file_dentry: u32,
    /// `dentry.d_name.name`
    pub dentry_name: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub mm_start_brk: u32,
    pub mm_brk: u32,
    pub mm_start_stack: u32,
    pub mm_start_code: u32,
    pub regs_ip: u32,
    pub regs_sp: u32,
    pub regs_bp: u32,
    /// `pt_regs.orig_ax`: the syscall number at syscall exit.
    pub regs_orig_ax: u32,
    pub task_mm: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_group_leader: u32,
    /// `task_struct.min_flt`/`maj_flt`: the thread's own fault accounting (getrusage's).
    pub task_min_flt: u32,
    pub task_maj_flt: u32,
    /// `mm_struct.mm_lock_seq`, bumped by every mmap-lock writer; 0 where the kernel has none
    /// (then the per-thread mapping cache is off).
    pub mm_lock_seq: u32,
    /// Bit offset of `task_struct.in_execve`, set while the task is in execve (0: unknown).
    pub task_in_execve_bit: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`: a task's
    /// cgroup v2 id, for tasks other than the current one.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// `enum vm_fault_reason` values.
    pub vm_fault_major: u32,
    pub vm_fault_retry: u32,
    pub vm_fault_error: u32,
    /// `enum fault_flag` values.
    pub fault_flag_write: u32,
    pub fault_flag_user: u32,
    pub fault_flag_instruction: u32,
    pub fault_flag_tried: u32,
}

/// Read-only settings handed to the programs at load time (global `CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// 0: any process.
    pub tgid: u32,
    /// 0: any thread.
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
    pub min_latency_ns: u64,
    pub flags: u32,
    /// Bit `1 << KIND_*` set for each kind wanted.
    pub kinds: u32,
    /// `MODE_USER | MODE_KERNEL`.
    pub modes: u32,
    /// Wake the event reader once this many bytes wait in the ring buffer (it also polls).
    pub wakeup_bytes: u32,
    /// pfault's own process: never traced (its faults are the tracer's, not the workload's).
    pub self_tgid: u32,
    /// Depth below the cgroup v2 root of `cgroup_id` (`CFG_FILTER_CGROUP`).
    pub cgroup_level: u32,
    /// Only tasks in this cgroup v2 or below it (`CFG_FILTER_CGROUP`).
    pub cgroup_id: u64,
    pub off: Offsets,
}

/// Where a faulting address lies.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    pub vm_start: u64,
    /// Offset of the faulting page in the file (`MAP_FILE` only).
    pub offset: u64,
    pub ino: u64,
    pub dev: u32,
    pub kind: u8,
    pub _pad: [u8; 3],
    pub name: [u8; NAME_LEN],
}

/// One fault, as `trace` receives it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FaultEvent {
    /// `REC_FAULT`
    pub rec: u32,
    pub pid: u32,
    pub tid: u32,
    /// x86 error code (`PF_*`), or one rebuilt from the fault flags on the `handle_mm_fault`
    /// path when no exception preceded it (get_user_pages).
    pub error_code: u32,
    /// `vm_fault_t` as returned by `handle_mm_fault` (0 when the probe path cannot see it).
    pub vm_fault: u32,
    pub kind: u8,
    pub _pad: u8,
    /// Bytes of `FaultEventStacks::ustack` / `kstack` filled.
    pub ustack_bytes: u16,
    pub kstack_bytes: u16,
    pub _pad2: [u8; 6],
    /// CLOCK_MONOTONIC at the fault's entry.
    pub ts_ns: u64,
    pub addr: u64,
    pub ip: u64,
    pub latency_ns: u64,
    pub comm: [u8; COMM_LEN],
    pub map: Mapping,
}

/// First fault of a thread, or an exec, in the `EVENTS` ring buffer when `CFG_NOTIFY_TASKS`
/// is set.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TaskSeen {
    /// `REC_TASK`
    pub rec: u32,
    pub pid: u32,
    pub tid: u32,
    /// A new process (fork), and its parent's pid; else 0.
    pub forked_from: u32,
}

/// A `FaultEvent` followed by its stacks (`trace -U/-K`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FaultEventStacks {
    pub ev: FaultEvent,
    pub ustack: [u64; MAX_STACK],
    pub kstack: [u64; MAX_STACK],
}

/// Stack hashes that stand for no stack: none taken (not asked for, or not walkable).
pub const STACK_NONE: u64 = 0;
/// A new stack whose frames the ring buffer had no room for.
pub const STACK_LOST: u64 = 1;
/// A fault the kernel takes while it writes a new program image during execve (bss, the
/// argument and auxv tables): the user registers are still the old program's.
pub const STACK_EXEC: u64 = 2;
/// Real stacks hash to this or above.
pub const STACK_FIRST: u64 = 3;

/// What `stackcount` counts faults by. Stacks are named by a 64-bit hash of their frames; the
/// frames go to userspace once per process and stack ([`StackFrames`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackKey {
    /// Always kept: a user stack is symbolized against its process's mappings.
    pub tgid: u32,
    pub kind: u32,
    pub ustack: u64,
    pub kstack: u64,
    pub comm: [u8; COMM_LEN],
}

/// A `STACK_COUNTS` value, under a 64-bit hash of its key ([`stack_key_hash`]): an 8-byte
/// key hashes and compares faster than the whole [`StackKey`] on every fault.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackCount {
    pub key: StackKey,
    pub count: u64,
}

/// The `STACK_COUNTS` key of `k`. Each step is a bijection of the state, so keys that differ
/// in one field never collide; any two collide with probability 2^-64.
#[inline(always)]
pub fn stack_key_hash(k: &StackKey, comm: [u64; 2]) -> u64 {
    #[inline(always)]
    fn mix(h: u64, v: u64) -> u64 {
        let h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    let h = mix(k.ustack, k.kstack.rotate_left(17));
    let h = mix(h, (k.tgid as u64) << 32 | k.kind as u64);
    mix(mix(h, comm[0]), comm[1])
}

/// A comm as the two words [`stack_key_hash`] takes.
#[inline(always)]
pub fn comm_words(comm: &[u8; COMM_LEN]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&comm[..8]);
    hi.copy_from_slice(&comm[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

/// A stack's frames, leaf first, sent in the `EVENTS` ring buffer the first time a process
/// counts a fault on it. Only the header and `nframes` frames are sent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackFrames {
    /// `REC_STACK`
    pub rec: u32,
    pub nframes: u32,
    pub hash: u64,
    /// The process that counted a fault on it: user frames are its addresses.
    pub tgid: u32,
    pub _pad: u32,
    pub frames: [u64; MAX_STACK],
}

/// Bytes of a [`StackFrames`] before its frames.
pub const STACK_FRAMES_HEADER: usize = 24;

/// Key of `STACKS_SENT`: a (process, stack) whose frames userspace has been sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SentKey {
    pub tgid: u32,
    pub _pad: u32,
    pub hash: u64,
}

/// A file a process mapped (`CFG_NOTIFY_MAPS`), as its VMA stood after `mmap` returned.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MapSeen {
    /// `REC_MAP`
    pub rec: u32,
    pub pid: u32,
    pub vm_end: u64,
    /// `offset` is the file offset of `vm_start`.
    pub map: Mapping,
}

/// Key of the `FILE_COUNTS` map (`ffaults`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub tgid: u32,
    pub dev: u32,
    pub ino: u64,
    /// `MAP_*`
    pub map_kind: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileCounts {
    /// Indexed by `KIND_*`.
    pub counts: [u64; 3],
    /// The process's cgroup v2 id when the file was first counted (`CFG_BY_CGROUP`).
    pub cgroup: u64,
    pub name: [u8; NAME_LEN],
}

/// Key of the `PROC_STATS` map (`stat`, `top`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcKey {
    pub tgid: u32,
    /// 0 unless counting per thread.
    pub tid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    /// Indexed by `KIND_*`.
    pub counts: [u64; 3],
    /// Of `counts`, the faults raised in kernel mode (timed faults only: the accounting path
    /// does not see the mode).
    pub kernel: [u64; 3],
    pub latency_sum_ns: u64,
    /// Updated without atomics: two CPUs racing may keep the smaller of two new maxima.
    pub latency_max_ns: u64,
    /// The process's name (its main thread's) when its threads' counts were last folded in;
    /// the thread's own name in a per-thread row.
    pub comm: [u8; COMM_LEN],
    /// The process's (or thread's) cgroup v2 id when last folded (`CFG_BY_CGROUP`).
    pub cgroup: u64,
    /// Latency of completed faults, log-linear buckets (see [`hist_bucket`]).
    pub hist: [u64; HIST_BUCKETS],
}

/// Bucket of a latency in the log-linear histogram: exact below 4, then `HIST_SUB`
/// buckets per power of two. Written without `leading_zeros` (no BPF instruction for it).
#[inline(always)]
pub fn hist_bucket(v: u64) -> usize {
    if v < 4 {
        return v as usize;
    }
    // floor(log2(v)) by binary search: six bounded steps the verifier accepts.
    let mut lg = 0u64;
    let mut x = v;
    if x >= 1 << 32 {
        x >>= 32;
        lg += 32;
    }
    if x >= 1 << 16 {
        x >>= 16;
        lg += 16;
    }
    if x >= 1 << 8 {
        x >>= 8;
        lg += 8;
    }
    if x >= 1 << 4 {
        x >>= 4;
        lg += 4;
    }
    if x >= 1 << 2 {
        x >>= 2;
        lg += 2;
    }
    if x >= 1 << 1 {
        lg += 1;
    }
    let idx = 4 * (lg - 1) + ((v >> (lg - 2)) & 3);
    if idx >= HIST_BUCKETS as u64 {
        HIST_BUCKETS - 1
    } else {
        idx as usize
    }
}

/// Smallest latency that falls in bucket `idx`.
pub fn hist_bucket_floor(idx: usize) -> u64 {
    if idx < 4 {
        return idx as u64;
    }
    let lg = idx / 4 + 1;
    let sub = (idx % 4) as u64;
    (4 + sub) << (lg - 2)
}

/// How an unwind row finds the caller's frame: its CFA (the stack pointer before the call),
/// whose word below is the return address (x86-64).
/// No row covers the address: the frame pointer is followed instead.
pub const CFA_NONE: u8 = 0;
/// CFA = rsp + `cfa_off`.
pub const CFA_RSP: u8 = 1;
/// CFA = rbp + `cfa_off`.
pub const CFA_RBP: u8 = 2;
/// A PLT entry: CFA = rsp + 8, plus 8 once rip is `cfa_off` or more bytes into its 16-byte
/// slot (the push of the lazy-binding stub).
pub const CFA_PLT: u8 = 3;
/// The return address is undefined: the outermost frame (`_start`, a thread's start).
pub const CFA_END: u8 = 4;
/// A signal frame (`__restore_rt`): the interrupted rip, rsp and rbp are in the `ucontext`
/// at rsp, and the interrupted rip is no return address (its own row, not the one before).
pub const CFA_SIGNAL: u8 = 5;
/// Where the kernel's x86-64 `ucontext` (at rsp in `__restore_rt`) keeps rbp, rsp and rip:
/// `uc_mcontext.gregs[REG_RBP]`, `[REG_RSP]`, `[REG_RIP]`.
pub const SIGFRAME_RBP: u64 = 120;
pub const SIGFRAME_RSP: u64 = 160;
pub const SIGFRAME_RIP: u64 = 168;

/// One row of a binary's unwind table: from file offset `off` up to the next row's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub off: u32,
    pub cfa_off: i16,
    /// `CFA_*`
    pub cfa: u8,
    /// Where the caller's rbp was saved: at CFA + 8 * `rbp`; 0 when rbp is unchanged.
    pub rbp: i8,
}

/// A file, as the kernel names it: `s_dev` and inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileId {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// `UnwindFile::state`: the kernel side asked userspace for the table.
pub const TABLE_ASKED: u32 = 0;
/// Rows `first..first + rows` of `UNWIND_ROWS`.
pub const TABLE_READY: u32 = 1;
/// The file has no usable CFI (or no room was left): its frames follow the frame pointer.
pub const TABLE_NONE: u32 = 2;

/// Value of `UNWIND_FILES`: where a binary's rows are, shared by every process mapping it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindFile {
    pub first: u32,
    pub rows: u32,
    pub state: u32,
    pub _pad: u32,
}

/// Key of `TEXT_VMAS`: a 64 KiB granule of a process's address space. `gen` (`EXEC_GEN`)
/// tells a process apart from what it was before an exec, and from an earlier process that
/// had its pid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TextKey {
    pub tgid: u32,
    pub gen: u32,
    pub granule: u32,
    pub _pad: u32,
}

/// `TEXT_VMAS` granules are this many bits of address.
pub const TEXT_GRANULE_SHIFT: u32 = 16;

/// A code mapping the unwinder met, and its file's table as last seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TextVma {
    pub start: u64,
    pub end: u64,
    /// File offset of an address = address + `bias` (wrapping).
    pub bias: u64,
    pub file: FileId,
    pub table: UnwindFile,
}

/// The kernel side met code of a file it has no table for (`REC_UNWIND`): the VMA it was in,
/// to open through /proc/PID/map_files.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwindNeed {
    pub rec: u32,
    pub pid: u32,
    pub vm_start: u64,
    pub vm_end: u64,
    pub file: FileId,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Mapping {}
    unsafe impl aya::Pod for FaultEvent {}
    unsafe impl aya::Pod for FaultEventStacks {}
    unsafe impl aya::Pod for TaskSeen {}
    unsafe impl aya::Pod for StackKey {}
    unsafe impl aya::Pod for StackFrames {}
    unsafe impl aya::Pod for StackCount {}
    unsafe impl aya::Pod for SentKey {}
    unsafe impl aya::Pod for MapSeen {}
    unsafe impl aya::Pod for FileKey {}
    unsafe impl aya::Pod for FileCounts {}
    unsafe impl aya::Pod for ProcKey {}
    unsafe impl aya::Pod for ProcStats {}
    unsafe impl aya::Pod for UnwindRow {}
    unsafe impl aya::Pod for FileId {}
    unsafe impl aya::Pod for UnwindFile {}
    unsafe impl aya::Pod for TextKey {}
    unsafe impl aya::Pod for TextVma {}
    unsafe impl aya::Pod for UnwindNeed {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_buckets_are_monotonic_and_floors_match() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let b = hist_bucket(v);
            assert!(b >= last, "bucket went down at {v}");
            assert!(hist_bucket_floor(b) <= v, "floor above value at {v}");
            assert_eq!(hist_bucket(hist_bucket_floor(b)), b);
            last = b;
        }
        assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
    }
}
