//! pfault's kernel side.
//!
//! A fault is seen in two halves. Its *entry* comes from the `exceptions:page_fault_*`
//! tracepoints (address, ip, error code) or from `handle_mm_fault` itself (kprobe/fentry: the
//! VMA and fault flags); the entry is parked in the thread's task storage (`PENDING`, or
//! `THREADS` when processes are counted). Its *completion* comes from the perf software events
//! `PAGE_FAULTS_MIN/MAJ` (tracepoint path) or from the return of `handle_mm_fault`
//! (kretprobe/fexit: the `VM_FAULT_*` result). A parked entry that never completes (the thread
//! faults again, or exits) is an error fault. Every completion goes through [`finish`], which
//! feeds whichever outputs userspace asked for: ring-buffer events, per-stack, per-file or
//! per-thread counts (folded into per-process rows by [`fold`]).
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
    intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering},
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::{
        bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE, task_struct, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC,
        BPF_F_USER_STACK, BPF_NOEXIST,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        generated::{
            bpf_find_vma, bpf_get_current_task_btf, bpf_get_stack, bpf_get_stackid, bpf_task_storage_get,
        },
    },
    macros::{btf_map, fentry, fexit, kprobe, kretprobe, map, perf_event, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{
        FEntryContext, FExitContext, PerfEventContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
    EbpfContext, Global,
};
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
static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// A `BPF_MAP_TYPE_TASK_STORAGE` map (aya-ebpf 0.2 has none): a value hung on each thread's
/// `task_struct`. Finding it is a pointer chase, where a hash map keyed by thread id hashes
/// and compares on every fault; it is freed with the thread, and never fills up.
#[repr(C)]
struct TaskStorage<T> {
    // The BTF map definition: the loader reads these types, never the values.
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// `task`'s value; with `create`, a zeroed one is made if it has none.
    #[inline(always)]
    fn get(&self, task: *mut task_struct, create: bool) -> Option<*mut T> {
        const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;
        let flags = if create { BPF_LOCAL_STORAGE_GET_F_CREATE } else { 0 };
        let p = unsafe {
            bpf_task_storage_get(
                self as *const Self as *mut c_void,
                task,
                core::ptr::null_mut(),
                flags,
            )
        };
        (!p.is_null()).then_some(p as *mut T)
    }

    #[inline(always)]
    fn current(&self, create: bool) -> Option<*mut T> {
        self.get(unsafe { bpf_get_current_task_btf() }, create)
    }
}

/// Each thread's fault entry waiting for its completion.
#[btf_map]
static PENDING: TaskStorage<Pending> = TaskStorage::new();

/// What `stat` and `top` keep per thread: the parked entry, and the counts and latencies of
/// the thread's faults since [`fold`] last moved them into `PROC_STATS`.
#[repr(C)]
struct Thread {
    pending: Pending,
    stats: ProcStats,
    acct: Accounted,
}

/// A thread's `CFG_ACCOUNTED` state.
#[repr(C)]
struct Accounted {
    /// The thread's `min_flt`, `maj_flt` already folded into `PROC_STATS` (at first sight:
    /// what it had faulted before).
    folded: [u64; 2],
    /// `min_flt + maj_flt` when the thread last entered the fault handler.
    at_entry: u64,
    /// `folded` is set ([`fold`] waits for it).
    ready: u8,
    /// `at_entry` is set.
    entered: u8,
    _pad: [u8; 6],
}

#[btf_map]
static THREADS: TaskStorage<Thread> = TaskStorage::new();

/// The current thread's parked entry: in `THREADS` when processes are counted, so that one
/// lookup per probe serves both.
#[inline(always)]
fn parked(create: bool) -> Option<*mut Pending> {
    if conf!(flags) & CFG_OUT_PROCS != 0 {
        THREADS.current(create).map(|t| t as *mut Pending)
    } else {
        PENDING.current(create)
    }
}

/// The counts beside a parked entry from [`parked`] (`CFG_OUT_PROCS` only).
#[inline(always)]
fn thread_stats(p: *mut Pending) -> *mut ProcStats {
    unsafe { addr_of_mut!((*(p as *mut Thread)).stats) }
}

/// `task`'s minor and major faults as the kernel accounts them. Plain loads, checked by the
/// verifier against the kernel's BTF: cheaper than two probe reads on every fault.
#[inline(always)]
fn faults_accounted(task: *mut task_struct) -> [u64; 2] {
    let at = |off: u32| unsafe { read_volatile((task as *const u8).add(off as usize) as *const u64) };
    [at(conf!(off.task_min_flt)), at(conf!(off.task_maj_flt))]
}

/// `CFG_ACCOUNTED`: counts an error if the thread entered the fault handler since it was
/// last seen and its accounting did not move (a fault that completes is always accounted),
/// then notes where the accounting stands.
#[inline(always)]
fn check_accounted(task: *mut task_struct, t: *mut Thread) {
    let [min, maj] = faults_accounted(task);
    unsafe {
        let a = addr_of_mut!((*t).acct);
        if (*a).ready == 0 {
            write_volatile(addr_of_mut!((*a).folded), [min, maj]);
            write_volatile(addr_of_mut!((*a).ready), 1);
        } else if (*a).entered != 0 && (*a).at_entry == min + maj && conf!(kinds) & (1 << KIND_ERROR) != 0 {
            atomic_add(addr_of_mut!((*t).stats.counts[KIND_ERROR as usize]), 1);
        }
        (*a).at_entry = min + maj;
        (*a).entered = 1;
    }
}

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

#[map]
static STACK_COUNTS: HashMap<StackKey, u64> = HashMap::with_max_entries(40960, 0);

/// Stack counts indexed by the stack id (`CFG_STACK_SLOTS`; as many slots as `STACKS` has
/// buckets): an array lookup where `STACK_COUNTS` hashes the key on every fault. Userspace
/// maps it into memory to read it (tens of thousands of slots, no syscall each).
#[map]
static STACK_SLOTS: Array<StackSlot> = Array::with_max_entries(16384, BPF_F_MMAPABLE);

#[map]
static FILE_COUNTS: HashMap<FileKey, FileCounts> = HashMap::with_max_entries(16384, 0);

#[map]
static PROC_STATS: HashMap<ProcKey, ProcStats> = HashMap::with_max_entries(8192, 0);

/// A zeroed `ProcStats` to insert from: too big for the 512-byte stack. Never written.
#[map]
static PROC_TEMPLATE: PerCpuArray<ProcStats> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CNT_MAX, 0);

/// Set while a completion runs on this CPU. fexit and raw-tracepoint programs only guard
/// against recursion of themselves, so a fault taken inside a completion (a user-stack walk
/// meeting an unmapped page) runs the entry programs nested; they must not take the fault
/// being completed for one that never completed.
#[map]
static COMPLETING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn completing() -> bool {
    COMPLETING.get(0).is_some_and(|c| *c != 0)
}

#[inline(always)]
fn set_completing(on: bool) {
    if let Some(c) = COMPLETING.get_ptr_mut(0) {
        unsafe { *c = on as u32 };
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    ts: u64,
    addr: u64,
    ip: u64,
    error_code: u32,
    /// `VM_FAULT_*` bits of earlier attempts (RETRY).
    vm_fault: u32,
    ustack_id: i32,
    kstack_id: i32,
    retried: u8,
    has_map: u8,
    /// A fault is parked.
    active: u8,
    /// Userspace has been told of this thread (`CFG_NOTIFY_TASKS`).
    announced: u8,
    _pad: [u8; 4],
    map: Mapping,
    /// The thread's last VMA, valid while its mm's `mm_lock_seq` stays `cache_seq`: a fault
    /// storm in one mapping costs one `bpf_find_vma`, not one per fault.
    cache_mm: u64,
    cache_end: u64,
    cache_pgoff: u64,
    cache_seq: u32,
    _pad2: u32,
    cache: Mapping,
}

const EEXIST: i64 = 17;
const ENOMEM: i64 = 12;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const PAGE_MASK: u64 = !0xfff;

#[inline(always)]
fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn atomic_add(p: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
fn read<T: Copy>(base: u64, off: u32) -> T {
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).unwrap_or(core::mem::zeroed()) }
}

/// Is this task one the user asked for?
#[inline(always)]
fn wanted_task(tgid: u32, tid: u32) -> bool {
    if tgid == conf!(self_tgid) {
        return false;
    }
    let want_tgid = conf!(tgid);
    if want_tgid != 0 && want_tgid != tgid {
        return false;
    }
    let want_tid = conf!(tid);
    if want_tid != 0 && want_tid != tid {
        return false;
    }
    let flags = conf!(flags);
    if flags & CFG_FOLLOW != 0 && TRACED.get_ptr(tgid).is_none() {
        return false;
    }
    if flags & CFG_FILTER_COMM != 0 {
        let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        let want = conf!(comm);
        let mut i = 0;
        while i < COMM_LEN {
            if comm[i] != want[i] {
                return false;
            }
            if comm[i] == 0 {
                break;
            }
            i += 1;
        }
    }
    true
}

/// Fills `m` from a `struct vm_area_struct *`: file, inode and offset, or which kind of
/// anonymous memory (heap and stack as /proc/PID/maps tells them apart). Returns the VMA's
/// end and page offset.
#[inline(always)]
fn read_vma(vma: u64, addr: u64, m: &mut Mapping) -> (u64, u64) {
    let start: u64 = read(vma, conf!(off.vma_vm_start));
    let end: u64 = read(vma, conf!(off.vma_vm_end));
    let file: u64 = read(vma, conf!(off.vma_vm_file));
    let pgoff: u64 = read(vma, conf!(off.vma_vm_pgoff));
    m.vm_start = start;
    if file != 0 {
        m.kind = MAP_FILE;
        m.offset = (pgoff << 12) + ((addr & PAGE_MASK) - start);
        let inode: u64 = read(file, conf!(off.file_f_inode));
        m.ino = read(inode, conf!(off.inode_i_ino));
        let sb: u64 = read(inode, conf!(off.inode_i_sb));
        m.dev = read(sb, conf!(off.sb_s_dev));
        let dentry: u64 = read(file, conf!(off.file_dentry));
        let name: u64 = read(dentry, conf!(off.dentry_name));
        unsafe {
            let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut m.name);
        }
    } else {
        let mm: u64 = read(vma, conf!(off.vma_vm_mm));
        let start_brk: u64 = read(mm, conf!(off.mm_start_brk));
        let brk: u64 = read(mm, conf!(off.mm_brk));
        let start_stack: u64 = read(mm, conf!(off.mm_start_stack));
        m.kind = if mm != 0 && start <= brk && end >= start_brk {
            MAP_HEAP
        } else if mm != 0 && start <= start_stack && end >= start_stack {
            MAP_STACK
        } else {
            MAP_ANON
        };
    }
    (end, pgoff)
}

#[repr(C)]
struct VmaCtx {
    addr: u64,
    end: u64,
    pgoff: u64,
    map: Mapping,
}

/// `bpf_find_vma` callback. Not `no_mangle`: the verifier wants a static function.
#[inline(never)]
extern "C" fn vma_found(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    let ctx = unsafe { &mut *(ctx as *mut VmaCtx) };
    (ctx.end, ctx.pgoff) = read_vma(vma as u64, ctx.addr, &mut ctx.map);
    0
}

/// Stack ids for `stackcount`, taken where the fault is raised.
#[inline(always)]
fn stack_id(ctx: *mut c_void, flag: u32, user: bool) -> i32 {
    if conf!(flags) & flag == 0 {
        return -1;
    }
    let f = if user { BPF_F_USER_STACK as u64 } else { 0 };
    let id = unsafe { bpf_get_stackid(ctx, addr_of!(STACKS) as *mut c_void, f) };
    // -EFAULT only says there is no such stack (no kernel stack for a fault raised in user
    // mode, no user stack for a kernel thread): nothing lost.
    if id == -EEXIST {
        count(CNT_STACK_COLLISION);
    } else if id == -ENOMEM {
        count(CNT_STACK_MISSING);
    }
    if id < 0 {
        return -1;
    }
    id as i32
}

/// Parks a fault's entry in the thread's slot. `vma` is known on the `handle_mm_fault` path;
/// on the tracepoint path the mapping is looked up at completion (see [`finish`]).
#[inline(always)]
fn enter(ctx: *mut c_void, p: Option<*mut Pending>, tid: u32, addr: u64, ip: u64, error_code: u32, vma: u64) {
    let Some(p) = p.or_else(|| parked(true)) else {
        return count(CNT_PENDING_FULL);
    };
    let flags = conf!(flags);
    if flags & CFG_NOTIFY_TASKS != 0 && unsafe { (*p).announced } == 0 {
        unsafe { (*p).announced = 1 };
        announce(TaskSeen {
            rec: REC_TASK,
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            tid,
            forked_from: 0,
        });
    }
    unsafe {
        (*p).ts = bpf_ktime_get_ns();
        (*p).addr = addr;
        (*p).ip = ip;
        (*p).error_code = error_code;
        (*p).vm_fault = 0;
        (*p).retried = 0;
        (*p).has_map = 0;
        (*p).ustack_id = -1;
        (*p).kstack_id = -1;
        if flags & CFG_OUT_STACKS != 0 {
            (*p).ustack_id = stack_id(ctx, CFG_USTACK, true);
            (*p).kstack_id = stack_id(ctx, CFG_KSTACK, false);
        }
        if vma != 0 && flags & (CFG_MAPPING | CFG_OUT_FILES) != 0 {
            (*p).map = core::mem::zeroed();
            read_vma(vma, addr, &mut (*p).map);
            (*p).has_map = 1;
        }
        (*p).active = 1;
    }
}

/// The mapping of the parked fault `p`, from the thread's cache or `bpf_find_vma`.
///
/// `bpf_find_vma` costs more than the fault itself where interrupts are off (the exception
/// tracepoints, the perf overflow path): it defers its unlock to an irq_work, a
/// self-interrupt. Hence the lookup at completion, and the cache.
#[inline(always)]
fn mapping_of(p: *mut Pending) {
    let out = unsafe { &mut (*p).map };
    let addr = unsafe { (*p).addr };
    let task = unsafe { bpf_get_current_task() };
    let mm: u64 = read(task, conf!(off.task_mm));
    let seq_off = conf!(off.mm_lock_seq);
    // Odd: a writer holds the mmap lock (or the kernel has no sequence): do not cache.
    let seq: u32 = if seq_off != 0 { read(mm, seq_off) } else { 1 };
    unsafe {
        let c = &(*p).cache;
        if seq & 1 == 0
            && (*p).cache_mm == mm
            && (*p).cache_seq == seq
            && c.vm_start <= addr
            && addr < (*p).cache_end
        {
            *out = *c;
            if out.kind == MAP_FILE {
                out.offset = ((*p).cache_pgoff << 12) + ((addr & PAGE_MASK) - c.vm_start);
            }
            return;
        }
    }
    let mut v = VmaCtx {
        addr,
        end: 0,
        pgoff: 0,
        map: unsafe { core::mem::zeroed() },
    };
    let ret = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            addr,
            vma_found as *mut c_void,
            addr_of_mut!(v) as *mut c_void,
            0,
        )
    };
    if ret == 0 {
        if seq & 1 == 0 {
            unsafe {
                (*p).cache_mm = mm;
                (*p).cache_seq = seq;
                (*p).cache_end = v.end;
                (*p).cache_pgoff = v.pgoff;
                (*p).cache = v.map;
            }
        }
    } else if ret == -2 {
        v.map.kind = MAP_NONE;
    } else {
        count(CNT_VMA_BUSY);
    }
    *out = v.map;
}

/// A fault seen by the `exceptions:page_fault_*` tracepoints, as raw tracepoints: the
/// arguments come as they are, without the trace record a classic tracepoint program has
/// built for it first (cheaper on every fault).
/// `TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code)`.
#[inline(always)]
fn on_exception(ctx: &RawTracePointContext) -> u32 {
    if completing() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if !wanted_task(tgid, tid) {
        return 0;
    }
    let addr: u64 = ctx.arg(0);
    // Faults on kernel addresses (vmalloc and the like) never reach handle_mm_fault.
    if (addr as i64) < 0 {
        return 0;
    }
    let error_code: u64 = ctx.arg(2);
    let mode = if error_code as u32 & PF_USER != 0 {
        MODE_USER
    } else {
        MODE_KERNEL
    };
    if conf!(modes) & mode == 0 {
        return 0;
    }
    if conf!(flags) & CFG_ACCOUNTED != 0 {
        let task = unsafe { bpf_get_current_task_btf() };
        match THREADS.get(task, true) {
            Some(t) => check_accounted(task, t),
            None => count(CNT_PENDING_FULL),
        }
        return 0;
    }
    // Only printed events show the faulting ip: not worth a probe read otherwise.
    let ip = if conf!(flags) & CFG_OUT_EVENTS != 0 {
        read(ctx.arg::<u64>(1), conf!(off.regs_ip))
    } else {
        0
    };
    let p = parked(false);
    flush_error(ctx.as_ptr(), p, false);
    enter(ctx.as_ptr(), p, tid, addr, ip, error_code as u32, 0);
    0
}

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(ctx: RawTracePointContext) -> u32 {
    on_exception(&ctx)
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> u32 {
    on_exception(&ctx)
}

/// A parked entry `p` that will never complete is an error fault.
#[inline(always)]
fn flush_error(ctx: *mut c_void, p: Option<*mut Pending>, stacks_ok: bool) {
    if let Some(p) = p {
        if unsafe { (*p).active } != 0 {
            finish(ctx, p, KIND_ERROR, unsafe { (*p).vm_fault }, 0, stacks_ok);
            unsafe { (*p).active = 0 };
        }
    }
}

/// Completion on the tracepoint path: `mm_account_fault` raised PAGE_FAULTS_MIN/MAJ.
#[inline(always)]
fn on_accounted(ctx: &PerfEventContext, kind: u8) -> u32 {
    if conf!(flags) & CFG_COMPLETION_ONLY != 0 {
        return count_stack_at_completion(ctx, kind);
    }
    if let Some(p) = parked(false) {
        if unsafe { (*p).active } != 0 {
            let latency = unsafe { bpf_ktime_get_ns() - (*p).ts };
            finish(ctx.as_ptr(), p, kind, 0, latency, true);
            unsafe { (*p).active = 0 };
        }
    }
    0
}

/// Stack counts with one probe per fault: the perf event holds the fault's registers, so the
/// user stack (and, for a fault raised in kernel mode, the kernel stack) is the fault's own.
#[inline(always)]
fn count_stack_at_completion(ctx: &PerfEventContext, kind: u8) -> u32 {
    if conf!(kinds) & (1 << kind) == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if !wanted_task(tgid, tid) {
        return 0;
    }
    let key = StackKey {
        tgid,
        kind: kind as u32,
        ustack_id: stack_id(ctx.as_ptr(), CFG_USTACK, true),
        kstack_id: stack_id(ctx.as_ptr(), CFG_KSTACK, false),
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    };
    count_stack(&key);
    0
}

/// Counts a fault on its stacks: in the stack id's slot when the slot is free or this
/// process's, else in `STACK_COUNTS`.
#[inline(always)]
fn count_stack(key: &StackKey) {
    if conf!(flags) & CFG_STACK_SLOTS != 0 {
        let id = if key.ustack_id >= 0 {
            key.ustack_id
        } else {
            key.kstack_id
        };
        if id >= 0 {
            if let Some(slot) = STACK_SLOTS.get_ptr_mut(id as u32) {
                if slot_is_ours(slot, key) {
                    atomic_add(
                        unsafe { addr_of_mut!((*slot).counts[(key.kind as usize) % 3]) },
                        1,
                    );
                    return;
                }
            }
        }
    }
    add_count(&STACK_COUNTS, key);
}

/// Takes a free slot for `key`'s process and comm, or tells whether it is theirs already.
#[inline(always)]
fn slot_is_ours(slot: *mut StackSlot, key: &StackKey) -> bool {
    let owner = unsafe { addr_of_mut!((*slot).tgid) };
    if unsafe { read_volatile(owner) } == 0 {
        let (_, took) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                owner,
                0,
                key.tgid as u64,
            )
        };
        if took {
            unsafe { (*slot).comm = key.comm };
            return true;
        }
    }
    // Until its taker has written the comm, a slot matches no one: those faults go to the
    // hash map under the same key, and userspace adds the two.
    unsafe { read_volatile(owner) == key.tgid as u64 && (*slot).comm == key.comm }
}

#[perf_event]
pub fn fault_minor(ctx: PerfEventContext) -> u32 {
    on_accounted(&ctx, KIND_MINOR)
}

#[perf_event]
pub fn fault_major(ctx: PerfEventContext) -> u32 {
    on_accounted(&ctx, KIND_MAJOR)
}

/// Entry of `handle_mm_fault(vma, address, flags, regs)`.
#[inline(always)]
fn on_hmf_enter(ctx: *mut c_void, vma: u64, addr: u64, fault_flags: u32, regs: u64) -> u32 {
    if completing() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if !wanted_task(tgid, tid) {
        return 0;
    }
    let user = fault_flags & conf!(off.fault_flag_user) != 0;
    let mode = if user { MODE_USER } else { MODE_KERNEL };
    let pending = parked(false);
    if let Some(p) = pending {
        // The exception tracepoint parked this fault, or this is a retry: keep the first
        // entry's time so the latency spans every attempt.
        if unsafe { (*p).addr } & PAGE_MASK == addr & PAGE_MASK {
            let wants_map = conf!(flags) & (CFG_MAPPING | CFG_OUT_FILES) != 0;
            if wants_map && unsafe { (*p).has_map } == 0 || unsafe { (*p).map.kind } == MAP_UNKNOWN {
                unsafe {
                    read_vma(vma, addr, &mut (*p).map);
                    (*p).has_map = 1;
                }
            }
            return 0;
        }
        flush_error(ctx, pending, false);
    }
    if conf!(modes) & mode == 0 {
        return 0;
    }
    // get_user_pages faults have no exception (and no regs): rebuild an error code from the
    // fault flags so access and mode still read right.
    let mut error_code = 0;
    if fault_flags & conf!(off.fault_flag_write) != 0 {
        error_code |= PF_WRITE;
    }
    if user {
        error_code |= PF_USER;
    }
    if fault_flags & conf!(off.fault_flag_instruction) != 0 {
        error_code |= PF_INSTR;
    }
    let ip = if regs != 0 {
        read(regs, conf!(off.regs_ip))
    } else {
        0
    };
    enter(ctx, pending, tid, addr, ip, error_code, vma);
    0
}

/// Return of `handle_mm_fault`: the `VM_FAULT_*` result says what became of the fault.
#[inline(always)]
fn on_hmf_return(ctx: *mut c_void, ret: u32) -> u32 {
    let Some(p) = parked(false) else {
        return 0;
    };
    if unsafe { (*p).active } == 0 {
        return 0;
    }
    let vm_fault = ret | unsafe { (*p).vm_fault };
    if ret & conf!(off.vm_fault_retry) != 0 {
        unsafe {
            (*p).retried = 1;
            (*p).vm_fault = vm_fault;
        }
        return 0;
    }
    // As mm_account_fault() counts: a retried fault is a major one.
    let kind = if ret & conf!(off.vm_fault_error) != 0 {
        KIND_ERROR
    } else if ret & conf!(off.vm_fault_major) != 0 || unsafe { (*p).retried } != 0 {
        KIND_MAJOR
    } else {
        KIND_MINOR
    };
    let latency = unsafe { bpf_ktime_get_ns() - (*p).ts };
    finish(ctx, p, kind, vm_fault, latency, true);
    unsafe { (*p).active = 0 };
    0
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
#[tracepoint]
pub fn task_exit(ctx: TracePointContext) -> u32 {
    // The thread's storage goes with its task_struct.
    let p = parked(false);
    let flags = conf!(flags);
    let task = unsafe { bpf_get_current_task_btf() };
    if flags & CFG_ACCOUNTED == 0 {
        flush_error(ctx.as_ptr(), p, true);
    } else if let Some(p) = p {
        // A last fault never accounted is the one that killed the thread.
        check_accounted(task, p as *mut Thread);
    }
    if flags & CFG_OUT_PROCS != 0 {
        if let Some(p) = p {
            fold(task, p as *mut Thread);
        }
    }
    0
}

/// A traced process replaced its image: its maps are new, tell userspace while it lives.
#[tracepoint]
pub fn task_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if wanted_task(tgid, tid) {
        announce(TaskSeen {
            rec: REC_TASK,
            pid: tgid,
            tid,
            forked_from: 0,
        });
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

/// Tells userspace of a process to note the maps of. Woken at once: it must read them while
/// the process lives.
#[inline(always)]
fn announce(seen: TaskSeen) {
    if EVENTS.output::<TaskSeen>(&seen, BPF_RB_FORCE_WAKEUP).is_err() {
        count(CNT_RINGBUF_LOST);
    }
}

/// Feeds one finished fault to every output userspace asked for, with nested entries held
/// off (see `COMPLETING`).
#[inline(always)]
fn finish(ctx: *mut c_void, p: *mut Pending, kind: u8, vm_fault: u32, latency: u64, stacks_ok: bool) {
    set_completing(true);
    feed_outputs(ctx, p, kind, vm_fault, latency, stacks_ok);
    set_completing(false);
}

#[inline(always)]
fn feed_outputs(ctx: *mut c_void, p: *mut Pending, kind: u8, vm_fault: u32, latency: u64, stacks_ok: bool) {
    if conf!(kinds) & (1 << kind) == 0 {
        return;
    }
    if kind != KIND_ERROR && latency < conf!(min_latency_ns) {
        return;
    }
    let flags = conf!(flags);
    if flags & CFG_OUT_PROCS != 0 {
        count_thread(p, kind, latency);
    }
    if flags & (CFG_OUT_EVENTS | CFG_OUT_STACKS | CFG_OUT_FILES) == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    if flags & (CFG_MAPPING | CFG_OUT_FILES) != 0 && unsafe { (*p).has_map } == 0 {
        mapping_of(p);
    }
    let map = unsafe { &(*p).map };
    if flags & CFG_OUT_EVENTS != 0 {
        let d = Done {
            kind,
            stacks_ok,
            vm_fault,
            tgid,
            tid,
            latency,
            comm,
        };
        emit_event(ctx, p, &d);
    }
    if flags & CFG_OUT_STACKS != 0 {
        let key = StackKey {
            tgid,
            kind: kind as u32,
            ustack_id: unsafe { (*p).ustack_id },
            kstack_id: unsafe { (*p).kstack_id },
            comm,
        };
        count_stack(&key);
    }
    if flags & CFG_OUT_FILES != 0 {
        count_file(map, kind, tgid, &comm);
    }
}

#[inline(always)]
fn add_count<K>(map: &HashMap<K, u64>, key: &K) {
    if let Some(v) = map.get_ptr_mut(key) {
        atomic_add(v, 1);
    } else if map.insert(key, 1u64, BPF_NOEXIST as u64).is_err() {
        // Another CPU may have inserted it first.
        match map.get_ptr_mut(key) {
            Some(v) => atomic_add(v, 1),
            None => count(CNT_AGG_FULL),
        }
    }
}

#[inline(always)]
fn count_file(m: &Mapping, kind: u8, tgid: u32, comm: &[u8; COMM_LEN]) {
    let key = FileKey {
        tgid,
        dev: m.dev,
        ino: m.ino,
        map_kind: m.kind as u32,
        _pad: 0,
        comm: *comm,
    };
    let v = match FILE_COUNTS.get_ptr_mut(&key) {
        Some(v) => v,
        None => {
            let fresh = FileCounts {
                counts: [0; 3],
                name: m.name,
            };
            let _ = FILE_COUNTS.insert(&key, &fresh, BPF_NOEXIST as u64);
            match FILE_COUNTS.get_ptr_mut(&key) {
                Some(v) => v,
                None => return count(CNT_AGG_FULL),
            }
        }
    };
    atomic_add(unsafe { addr_of_mut!((*v).counts[(kind as usize) % 3]) }, 1);
}

/// Adds a finished fault to its thread's counts. Nothing is looked up: the process's row is
/// only touched when [`fold`] moves the counts there. A hash-map update per fault would cost
/// more than the rest of both probes' work together.
#[inline(always)]
fn count_thread(p: *mut Pending, kind: u8, latency: u64) {
    let s = thread_stats(p);
    // Atomic, though only this thread adds: `fold` may be taking from another CPU.
    unsafe {
        atomic_add(addr_of_mut!((*s).counts[(kind as usize) % 3]), 1);
        if kind != KIND_ERROR {
            atomic_add(addr_of_mut!((*s).latency_sum_ns), latency);
            if latency > (*s).latency_max_ns {
                (*s).latency_max_ns = latency;
            }
            atomic_add(addr_of_mut!((*s).hist[hist_bucket(latency)]), 1);
        }
    }
}

/// Moves what `from` holds into `to`. Subtracting what was read, rather than zeroing, keeps
/// a count the thread adds meanwhile.
#[inline(always)]
fn take(from: *mut u64, to: *mut u64) {
    let v = unsafe { read_volatile(from) };
    if v != 0 {
        atomic_add(from, v.wrapping_neg());
        atomic_add(to, v);
    }
}

/// Moves `*folded` up to `now` and returns by how much; 0 where another CPU's fold got
/// there first (and counted the difference).
#[inline(always)]
fn advance(folded: *mut u64, now: u64) -> u64 {
    for _ in 0..3 {
        let prev = unsafe { read_volatile(folded) };
        if now <= prev {
            return 0;
        }
        let (_, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(folded, prev, now)
        };
        if swapped {
            return now - prev;
        }
    }
    0
}

/// Moves the counts of `task` (a `task_struct *`) into its process's row, or its own with
/// `-t`: when the thread exits, and for every live thread before userspace reads the rows
/// (`fold_threads`).
#[inline(always)]
fn fold(task: *mut task_struct, t: *mut Thread) {
    let s = unsafe { addr_of_mut!((*t).stats) };
    let mut accounted = [0u64; 2];
    if conf!(flags) & CFG_ACCOUNTED != 0 && unsafe { read_volatile(addr_of!((*t).acct.ready)) } != 0 {
        let now = faults_accounted(task);
        for k in 0..2 {
            let d = advance(unsafe { addr_of_mut!((*t).acct.folded[k]) }, now[k]);
            if conf!(kinds) & (1 << k) != 0 {
                accounted[k] = d;
            }
        }
    }
    let n = unsafe { read_volatile(addr_of!((*s).counts)) };
    if accounted[0] | accounted[1] | n[0] | n[1] | n[2] == 0 {
        return;
    }
    let per_thread = conf!(flags) & CFG_PER_THREAD != 0;
    let tid: u32 = read(task as u64, conf!(off.task_pid));
    let key = ProcKey {
        tgid: read(task as u64, conf!(off.task_tgid)),
        tid: if per_thread { tid } else { 0 },
    };
    let row = match PROC_STATS.get_ptr_mut(&key) {
        Some(v) => v,
        None => {
            // Inserted from a zeroed per-CPU slot: a ProcStats is too big for the stack.
            let Some(t) = PROC_TEMPLATE.get_ptr(0) else {
                return;
            };
            let _ = PROC_STATS.insert(&key, unsafe { &*t }, BPF_NOEXIST as u64);
            match PROC_STATS.get_ptr_mut(&key) {
                Some(v) => v,
                None => return count(CNT_AGG_FULL),
            }
        }
    };
    // The latest name: a process forked by a shell is named by what it exec'd.
    let named = if per_thread {
        task as u64
    } else {
        read(task as u64, conf!(off.task_group_leader))
    };
    unsafe {
        (*row).comm = read(named, conf!(off.task_comm));
        for (k, &n) in accounted.iter().enumerate() {
            atomic_add(addr_of_mut!((*row).counts[k]), n);
        }
        for k in 0..3 {
            take(addr_of_mut!((*s).counts[k]), addr_of_mut!((*row).counts[k]));
        }
        take(
            addr_of_mut!((*s).latency_sum_ns),
            addr_of_mut!((*row).latency_sum_ns),
        );
        let max = (*s).latency_max_ns;
        (*s).latency_max_ns = 0;
        if max > (*row).latency_max_ns {
            (*row).latency_max_ns = max;
        }
        for b in 0..HIST_BUCKETS {
            take(addr_of_mut!((*s).hist[b]), addr_of_mut!((*row).hist[b]));
        }
    }
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

/// Wakes the reader only when a batch waits: a wakeup per record is an irq_work per fault.
/// The reader also polls, so a quiet trickle is still printed promptly.
#[inline(always)]
fn wakeup_flag() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= conf!(wakeup_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// A finished fault: what the outputs need besides its parked entry.
struct Done {
    kind: u8,
    /// The context can walk this fault's stacks (not so for an error found at a later entry).
    stacks_ok: bool,
    vm_fault: u32,
    tgid: u32,
    tid: u32,
    latency: u64,
    comm: [u8; COMM_LEN],
}

#[inline(always)]
fn fill_event(e: *mut FaultEvent, p: *const Pending, d: &Done) {
    unsafe {
        (*e).ts_ns = (*p).ts;
        (*e).addr = (*p).addr;
        (*e).ip = (*p).ip;
        (*e).latency_ns = d.latency;
        (*e).pid = d.tgid;
        (*e).tid = d.tid;
        (*e).error_code = (*p).error_code;
        (*e).vm_fault = d.vm_fault;
        (*e).kind = d.kind;
        (*e).ustack_bytes = 0;
        (*e).kstack_bytes = 0;
        (*e)._pad = 0;
        (*e)._pad2 = [0; 6];
        (*e).rec = REC_FAULT;
        (*e).comm = d.comm;
        (*e).map = (*p).map;
    }
}

#[inline(always)]
fn emit_event(ctx: *mut c_void, p: *const Pending, d: &Done) {
    let flags = conf!(flags);
    if flags & (CFG_USTACK | CFG_KSTACK) == 0 {
        let Some(mut e) = EVENTS.reserve::<FaultEvent>(0) else {
            return count(CNT_RINGBUF_LOST);
        };
        fill_event(e.as_mut_ptr(), p, d);
        e.submit(wakeup_flag());
    } else {
        let Some(mut e) = EVENTS.reserve::<FaultEventStacks>(0) else {
            return count(CNT_RINGBUF_LOST);
        };
        let s = e.as_mut_ptr();
        unsafe {
            fill_event(addr_of_mut!((*s).ev), p, d);
            const BYTES: u32 = (MAX_STACK * 8) as u32;
            if d.stacks_ok && flags & CFG_USTACK != 0 {
                let n = bpf_get_stack(
                    ctx,
                    addr_of_mut!((*s).ustack) as *mut c_void,
                    BYTES,
                    BPF_F_USER_STACK as u64,
                );
                (*s).ev.ustack_bytes = if n > 0 { n as u16 } else { 0 };
            }
            if d.stacks_ok && flags & CFG_KSTACK != 0 {
                let n = bpf_get_stack(ctx, addr_of_mut!((*s).kstack) as *mut c_void, BYTES, 0);
                (*s).ev.kstack_bytes = if n > 0 { n as u16 } else { 0 };
            }
        }
        e.submit(wakeup_flag());
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; telling LLVM none is reachable lets it
    // drop the (already proven impossible) bounds-check branches.
    unsafe { core::hint::unreachable_unchecked() }
}
