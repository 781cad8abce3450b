//! Ring-buffer records (`REC_*`) and what they carry.

use crate::*;

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
pub const REC_LATE: u32 = 6;

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
pod!(Mapping);

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
    /// Log2 of the size of the page the fault mapped (12, 21, 30; 0 for an error fault, or
    /// without `CFG_PAGE_SIZE`).
    pub page_shift: u8,
    pub _pad2: [u8; 5],
    /// CLOCK_MONOTONIC at the fault's entry.
    pub ts_ns: u64,
    pub addr: u64,
    pub ip: u64,
    pub latency_ns: u64,
    pub comm: [u8; COMM_LEN],
    pub map: Mapping,
}
pod!(FaultEvent);

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
pod!(TaskSeen);

/// A `FaultEvent` followed by its stacks (`trace -U/-K`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FaultEventStacks {
    pub ev: FaultEvent,
    pub ustack: [u64; MAX_STACK],
    pub kstack: [u64; MAX_STACK],
}
pod!(FaultEventStacks);

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
pod!(StackFrames);

/// Bytes of a [`StackFrames`] before its frames.
pub const STACK_FRAMES_HEADER: usize = 24;

// Checked, not counted by hand: userspace parses the header of a record cut short.
const _: () = assert!(core::mem::offset_of!(StackFrames, frames) == STACK_FRAMES_HEADER);

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
    /// The mapping is code (`VM_EXEC`): its file's unwind table is built now, before its
    /// first stacks (a library a process loads with dlopen).
    pub exec: u8,
    pub _pad: [u8; 7],
}
pod!(MapSeen);

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
pod!(UnwindNeed);

/// Bytes of user stack a late walk copies at most: the rest of the page the stack pointer is
/// in and the page above it (perf's `--call-graph dwarf` copies 8 KiB).
pub const LATE_STACK_BYTES: usize = 8192;

/// Words of the kernel's x86-64 `struct pt_regs` (a uapi layout, `asm/ptrace.h`), and where
/// it keeps rip and rsp (rbp is `REG_RBP`).
pub const PT_REGS_WORDS: usize = 21;
pub const PT_REGS_IP: usize = 16;
pub const PT_REGS_SP: usize = 19;

/// A fault whose user stack the CFI unwinder met code it has no table for yet (`REC_LATE`):
/// a table still loading, or a code mapping not found with the mmap lock busy. Its registers
/// and a copy of its stack, to be walked by userspace once the tables are in, and what
/// `stackcount` counts it under; the kernel side does not count it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LateStack {
    pub rec: u32,
    /// Bytes of `stack` copied: the stack from `regs[PT_REGS_SP]` up.
    pub stack_len: u32,
    /// Its `ustack` is `STACK_NONE`: the walk is userspace's.
    pub key: StackKey,
    pub latency_ns: u64,
    pub bytes: u64,
    /// The task's user registers, as `struct pt_regs`.
    pub regs: [u64; PT_REGS_WORDS],
    pub stack: [u8; LATE_STACK_BYTES],
}
pod!(LateStack);

/// Bytes of a [`LateStack`] before its stack.
pub const LATE_STACK_HEADER: usize = core::mem::offset_of!(LateStack, stack);
