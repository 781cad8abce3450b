//! pfault's kernel side.
//!
//! A fault is seen in two halves. Its *entry* comes from the `exceptions:page_fault_*`
//! tracepoints (address, ip, error code) or from `handle_mm_fault` itself (kprobe/fentry: the
//! VMA and fault flags); the entry is parked in the thread's task storage (`PENDING`, or
//! `THREADS` when processes are counted; a hash map by thread id in the compat object, see
//! [`kernel`]). Its *completion* comes from the perf software events
//! `PAGE_FAULTS_MIN/MAJ` (tracepoint path) or from the return of `handle_mm_fault`
//! (kretprobe/fexit: the `VM_FAULT_*` result). A parked entry that never completes (the thread
//! faults again, or exits) is an error fault. Every completion goes through `fault::finish`,
//! which feeds whichever outputs userspace asked for: ring-buffer events, per-stack, per-file
//! or per-thread counts (folded into per-process rows by `fold::fold`).
//!
//! This file holds the program entry points, the maps and `CONFIG`; the modules hold the
//! pipeline: [`thread`] (per-thread state), [`vma`] (mapping lookup), [`fault`] (entry and
//! completion), [`outputs`] (events, stack counts, file counts), [`fold`] (per-process rows).
//! One object, one namespace: the modules see this file's imports and maps through
//! `use crate::*`.
//!
//! `stat` without latencies (`CFG_ACCOUNTED`) needs no completion: the kernel's own
//! per-thread accounting has the minor and major counts.
#![no_std]
#![no_main]
// BPF has no compare-and-swap for `AtomicU64::fetch_add`; the intrinsic lowers to `lock xadd`.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// Map keys and values go by reference: by value they would be copied onto the 512-byte stack.
#![allow(clippy::needless_borrows_for_generic_args)]

use core::{
    ffi::c_void,
    intrinsics::{atomic_xadd, AtomicOrdering},
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
};

#[cfg(not(feature = "compat"))]
use aya_ebpf::{
    bindings::bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE,
    helpers::generated::{
        bpf_find_vma, bpf_get_attach_cookie, bpf_get_current_task_btf, bpf_loop, bpf_task_pt_regs,
        bpf_task_storage_get,
    },
    macros::btf_map,
};
use aya_ebpf::{
    bindings::{task_struct, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_smp_processor_id,
            bpf_get_stack,
        },
    },
    macros::{fentry, fexit, kprobe, kretprobe, map, perf_event, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        FEntryContext, FExitContext, PerfEventContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
    EbpfContext, Global,
};
use aya_log_ebpf::warn;
use pfault_common::*;

#[unsafe(no_mangle)]
static CONFIG: Global<Config> = Global::new(unsafe { core::mem::zeroed() });

/// Reads one field of `CONFIG`. Volatile, so the loader's value is used and not the zeroed
/// initializer the compiler sees.
macro_rules! conf {
    ($($f:ident).+) => {
        {
            #[allow(unused_unsafe)]
            let v = unsafe { read_volatile(addr_of!((*(addr_of!(CONFIG) as *const Config)).$($f).+)) };
            v
        }
    };
}

/// Tgids to trace when following a command and its children.
#[map]
static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(capacity::TRACED, 0);

mod fault;
mod fold;
mod helpers;
mod kernel;
mod outputs;
mod thread;
mod unwind;
mod vma;

use crate::{
    fault::*,
    fold::*,
    helpers::*,
    kernel::*,
    outputs::{events::*, files::*, stacks::*},
    thread::*,
    unwind::*,
    vma::*,
};

/// Each thread's fault entry waiting for its completion.
#[cfg_attr(not(feature = "compat"), btf_map)]
#[cfg_attr(feature = "compat", map)]
static PENDING: TaskStorage<Pending> = TaskStorage::new();

#[cfg_attr(not(feature = "compat"), btf_map)]
#[cfg_attr(feature = "compat", map)]
static THREADS: TaskStorage<Thread> = TaskStorage::new();

/// Fault events and notices; each tool sizes it (`Plan::ringbuf_bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Counts per (process, kind, stack hashes, comm), under a hash of those. Allocated as entries
/// are added where the kernel allows ([`GROWN`]): the default holds a program with a hundred
/// thousand stacks, and most runs use a few hundred.
#[map]
static STACK_COUNTS: HashMap<u64, StackCount> =
    HashMap::with_max_entries(capacity::STACK_COUNTS, GROWN as u32);

/// Per-CPU room to walk a user and a kernel stack into (a stack is too big for the
/// 512-byte BPF stack).
#[map]
static STACK_SCRATCH: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(2, 0);

/// The (process, stack) pairs whose frames userspace has.
#[map]
static STACKS_SENT: LruHashMap<SentKey, u8> = LruHashMap::with_max_entries(capacity::STACKS_SENT, 0);

/// Every loaded binary's unwind rows, back to back (`CFG_UNWIND_CFI`; sized by the loader).
/// Userspace writes it through an mmap of its own.
#[map]
static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Where each binary's rows are in `UNWIND_ROWS`, by file.
#[map]
static UNWIND_FILES: HashMap<FileId, UnwindFile> = HashMap::with_max_entries(capacity::UNWIND_FILES, 0);

/// Each process's generation in `TEXT_VMAS` keys (absent: 0).
#[map]
static EXEC_GEN: LruHashMap<u32, u32> = LruHashMap::with_max_entries(capacity::EXEC_GEN, 0);

/// The code mappings the unwinder met, per process and 64 KiB granule.
#[map]
static TEXT_VMAS: LruHashMap<TextKey, TextVma> = LruHashMap::with_max_entries(capacity::TEXT_VMAS, 0);

#[map]
static FILE_COUNTS: HashMap<FileKey, FileCounts> = HashMap::with_max_entries(capacity::FILE_COUNTS, 0);

#[map]
static PROC_STATS: HashMap<ProcKey, ProcStats> = HashMap::with_max_entries(capacity::PROC_STATS, 0);

/// A zeroed `ProcStats` to insert from: too big for the 512-byte stack. Never written.
#[map]
static PROC_TEMPLATE: PerCpuArray<ProcStats> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CNT_MAX, 0);

/// Both exception tracepoints, `page_fault_user` and `page_fault_kernel`: one program
/// attached twice is verified once (its error code tells the two apart).
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault(ctx: RawTracePointContext) -> u32 {
    on_exception(&ctx)
}

/// Both completion events, PAGE_FAULTS_MIN and PAGE_FAULTS_MAJ, each attached with its kind
/// as the cookie: one program, verified once. The compat object (kernels before 5.15 have no
/// attach cookies) has one program per event instead.
#[cfg(not(feature = "compat"))]
#[perf_event]
pub fn fault_done(ctx: PerfEventContext) -> u32 {
    // KIND_MINOR (0) or KIND_MAJOR (1): masked, not compared, so the verifier checks the
    // rest once for a kind it does not know rather than once for each.
    let kind = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } & 1;
    on_accounted(&ctx, kind as u8)
}

#[cfg(feature = "compat")]
#[perf_event]
pub fn fault_minor(ctx: PerfEventContext) -> u32 {
    on_accounted(&ctx, KIND_MINOR)
}

#[cfg(feature = "compat")]
#[perf_event]
pub fn fault_major(ctx: PerfEventContext) -> u32 {
    on_accounted(&ctx, KIND_MAJOR)
}

#[kprobe]
pub fn hmf_kprobe(ctx: ProbeContext) -> u32 {
    let vma: u64 = ctx.arg(0).unwrap_or(0);
    let addr: u64 = ctx.arg(1).unwrap_or(0);
    let flags: u32 = ctx.arg(2).unwrap_or(0);
    let regs: u64 = ctx.arg(3).unwrap_or(0);
    on_hmf_enter(ctx.as_ptr(), vma, addr, flags, regs)
}

#[kretprobe]
pub fn hmf_kretprobe(ctx: RetProbeContext) -> u32 {
    let ret: u32 = ctx.ret();
    on_hmf_return(ctx.as_ptr(), ret)
}

#[fentry(function = "handle_mm_fault")]
pub fn hmf_fentry(ctx: FEntryContext) -> u32 {
    let vma: u64 = ctx.arg(0);
    let addr: u64 = ctx.arg(1);
    let flags: u32 = ctx.arg(2);
    let regs: u64 = ctx.arg(3);
    on_hmf_enter(ctx.as_ptr(), vma, addr, flags, regs)
}

#[fexit(function = "handle_mm_fault")]
pub fn hmf_fexit(ctx: FExitContext) -> u32 {
    // fexit sees the arguments, then the return value.
    let ret: u32 = ctx.arg(4);
    on_hmf_return(ctx.as_ptr(), ret)
}

/// A thread exits with a fault still parked: the fault killed it (SIGSEGV, SIGBUS, OOM).
/// The user registers are still those of the fault, so its user stack can still be read.
/// Raw tracepoints here and at exec: a classic one's detach waits for a grace period (tens of
/// milliseconds at pfault's exit).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn task_exit(ctx: RawTracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid >> 32 == pid_tgid & 0xffff_ffff {
        next_generation((pid_tgid >> 32) as u32);
    }
    let p = parked(false);
    let flags = conf!(flags);
    let task = current_task();
    if flags & CFG_ACCOUNTED == 0 {
        flush_error(ctx.as_ptr(), p, true);
    } else if let Some(p) = p {
        // A last fault never accounted is the one that killed the thread.
        let t = p as *mut Thread;
        check_accounted(task, t, unsafe { (*t).acct.in_kernel });
    }
    if flags & CFG_OUT_PROCS != 0 {
        if let Some(p) = p {
            fold(task, p as *mut Thread);
        }
    }
    PENDING.release_current();
    THREADS.release_current();
    0
}

/// A traced process replaced its image: its maps are new, tell userspace while it lives.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn task_exec(_ctx: RawTracePointContext) -> u32 {
    next_generation((bpf_get_current_pid_tgid() >> 32) as u32);
    if let Some((tgid, tid)) = wanted_current() {
        announce(TaskSeen {
            rec: REC_TASK,
            pid: tgid,
            tid,
            forked_from: 0,
        });
        // The kernel mapped the program and its loader itself (no mmap to see): their code
        // is where the program's text starts and where it will start running.
        let task = current_task();
        let mm: u64 = read(task as u64, conf!(off.task_mm));
        let start_code: u64 = read(mm, conf!(off.mm_start_code));
        let regs = user_regs(task);
        let entry: u64 = if regs != 0 {
            read(regs, conf!(off.regs_ip))
        } else {
            0
        };
        if conf!(flags) & CFG_NOTIFY_MAPS != 0 {
            notify_map(tgid, start_code);
            if entry != 0 {
                notify_map(tgid, entry);
            }
        }
        unwind_ahead(tgid, start_code);
        unwind_ahead(tgid, entry);
    }
    0
}

/// A wanted process mapped a file. Its VMA goes to userspace, which then knows the file's
/// place in the process even if the process exits before its maps are read (a program that
/// runs a millisecond still gets its libraries named).
/// The classic `syscalls:sys_exit_mmap` event: the kernel runs it for mmap alone, the other
/// system calls only testing a bit of a bitmap (a raw `sys_exit` program ran at every one:
/// about 100 ns each, three times the classic event's cost). Its detach waits for an RCU
/// grace period, which a process of pfault's own takes at exit (`engine::linger`).
#[tracepoint]
pub fn task_mmap(ctx: TracePointContext) -> u32 {
    // `struct trace_event_raw_sys_exit`: the common fields (8 bytes), the syscall's number,
    // then its return value: the mapping's start, or -errno.
    let ret: i64 = unsafe { *(ctx.as_ptr() as *const i64).add(2) };
    if ret < 0 {
        return 0;
    }
    if let Some((tgid, _)) = wanted_current() {
        notify_map(tgid, ret as u64);
    }
    0
}

/// A new process: traced if its parent is (following a command), and announced so that
/// userspace knows its maps (its parent's, until it execs) even if it exits at once.
/// `TP_PROTO(struct task_struct *parent, struct task_struct *child)`.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn task_fork(ctx: RawTracePointContext) -> u32 {
    let child: u64 = ctx.arg(1);
    let (pid, tgid): (u32, u32) = (
        read(child, conf!(off.task_pid)),
        read(child, conf!(off.task_tgid)),
    );
    if pid != tgid {
        // A thread: its process is known already.
        return 0;
    }
    let flags = conf!(flags);
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if flags & CFG_FOLLOW != 0 && TRACED.get_ptr(parent).is_some() && TRACED.insert(tgid, 1u8, 0).is_err() {
        count(CNT_AGG_FULL);
    }
    if flags & CFG_NOTIFY_TASKS != 0 && wanted_task(tgid, pid) {
        announce(TaskSeen {
            rec: REC_TASK,
            pid: tgid,
            tid: pid,
            forked_from: parent,
        });
    }
    0
}

/// Run by userspace over every task (a BPF task iterator) before it reads `PROC_STATS`, so
/// that the rows include the live threads' latest faults.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn fold_threads(ctx: *mut c_void) -> i32 {
    // struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }
    let task = unsafe { *(ctx as *const *mut task_struct).add(1) };
    if task.is_null() {
        return 0;
    }
    if let Some(t) = THREADS.get(task, false) {
        fold(task, t);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; telling LLVM none is reachable lets it
    // drop the (already proven impossible) bounds-check branches.
    unsafe { core::hint::unreachable_unchecked() }
}
