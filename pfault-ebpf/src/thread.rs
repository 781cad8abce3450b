//! Per-thread state: the parked fault entry and, for `stat`/`top`, the thread's counts, hung
//! on its `task_struct` (task storage).

use crate::*;

/// A `BPF_MAP_TYPE_TASK_STORAGE` map (aya-ebpf 0.2 has none): a value hung on each thread's
/// `task_struct`. Finding it is a pointer chase, where a hash map keyed by thread id hashes
/// and compares on every fault; it is freed with the thread, and never fills up.
#[cfg(not(feature = "compat"))]
#[repr(C)]
pub(crate) struct TaskStorage<T> {
    // The BTF map definition: the loader reads these types, never the values.
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

#[cfg(not(feature = "compat"))]
unsafe impl<T> Sync for TaskStorage<T> {}

#[cfg(not(feature = "compat"))]
impl<T> TaskStorage<T> {
    pub(crate) const fn new() -> Self {
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
    pub(crate) fn get(&self, task: *mut task_struct, create: bool) -> Option<*mut T> {
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
    pub(crate) fn current(&self, create: bool) -> Option<*mut T> {
        self.get(current_task(), create)
    }

    /// Nothing to do: the value goes with the task.
    #[inline(always)]
    pub(crate) fn release_current(&self) {}
}

/// Compat's per-thread values: a hash map keyed by thread id (kernels before 5.11 have no
/// task storage for tracing programs), emptied as threads exit. Preallocated (see [`GROWN`]):
/// the loader sizes it to the host's threads.
#[cfg(feature = "compat")]
#[repr(transparent)]
pub(crate) struct TaskStorage<T>(HashMap<u32, T>);

#[cfg(feature = "compat")]
impl<T> TaskStorage<T> {
    pub(crate) const fn new() -> Self {
        Self(HashMap::with_max_entries(capacity::THREADS, GROWN as u32))
    }

    #[inline(always)]
    pub(crate) fn get(&self, task: *mut task_struct, create: bool) -> Option<*mut T> {
        self.of_thread(read(task as u64, conf!(off.task_pid)), create)
    }

    #[inline(always)]
    pub(crate) fn current(&self, create: bool) -> Option<*mut T> {
        self.of_thread(bpf_get_current_pid_tgid() as u32, create)
    }

    #[inline(always)]
    fn of_thread(&self, tid: u32, create: bool) -> Option<*mut T> {
        const { assert!(size_of::<T>() <= size_of::<Thread>()) };
        if let Some(v) = self.0.get_ptr_mut(&tid) {
            return Some(v);
        }
        if !create {
            return None;
        }
        // From a zeroed per-CPU slot: a value is too big for the stack.
        let zero = ZERO_THREAD.get_ptr(0)? as *const T;
        let _ = self.0.insert(&tid, unsafe { &*zero }, BPF_NOEXIST as u64);
        self.0.get_ptr_mut(&tid)
    }

    /// The current thread exits: its value goes.
    #[inline(always)]
    pub(crate) fn release_current(&self) {
        let _ = self.0.remove(&(bpf_get_current_pid_tgid() as u32));
    }
}

/// A zeroed `Thread` (the largest per-thread value) to insert from. Never written.
#[cfg(feature = "compat")]
#[map]
static ZERO_THREAD: PerCpuArray<Thread> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) ts: u64,
    pub(crate) addr: u64,
    pub(crate) ip: u64,
    pub(crate) error_code: u32,
    /// `VM_FAULT_*` bits of earlier attempts (RETRY).
    pub(crate) vm_fault: u32,
    /// Hashes of the fault's stacks, taken where it was raised (`stackcount`).
    pub(crate) ustack: u64,
    pub(crate) kstack: u64,
    pub(crate) retried: u8,
    pub(crate) has_map: u8,
    /// A fault is parked.
    pub(crate) active: u8,
    /// Userspace has been told of this thread (`CFG_NOTIFY_TASKS`).
    pub(crate) announced: u8,
    /// Set while a program completes this thread's fault or walks its stacks. A fault taken
    /// inside (a user-stack walk meeting an unmapped page) runs the entry programs nested, in
    /// the same thread: they must not take the fault being completed for one that never
    /// completed, nor walk again. Raw tracepoints guard against running inside themselves
    /// only on newer kernels: on 5.10 one recursed until the kernel stack overflowed. Per
    /// thread, not per CPU: fentry and fexit programs can be preempted, and another thread's
    /// fault on that CPU meanwhile is its own.
    pub(crate) busy: u8,
    /// The user stack's walk met code it has no table for yet (`walked_late`): it is sent
    /// to userspace to walk at completion.
    pub(crate) late: u8,
    pub(crate) _pad: [u8; 2],
    pub(crate) map: Mapping,
    /// The thread's last VMA, valid while its mm's `mm_lock_seq` stays `cache_seq`: a fault
    /// storm in one mapping costs one `bpf_find_vma`, not one per fault.
    pub(crate) cache_mm: u64,
    pub(crate) cache_end: u64,
    pub(crate) cache_pgoff: u64,
    pub(crate) cache_seq: u32,
    pub(crate) _pad2: u32,
    pub(crate) cache: Mapping,
}

/// What `stat` and `top` keep per thread: the parked entry, and the counts and latencies of
/// the thread's faults since [`fold`] last moved them into `PROC_STATS`.
#[repr(C)]
pub(crate) struct Thread {
    pub(crate) pending: Pending,
    pub(crate) stats: ProcStats,
    pub(crate) acct: Accounted,
}

/// A thread's `CFG_ACCOUNTED` state.
#[repr(C)]
pub(crate) struct Accounted {
    /// The thread's `min_flt`, `maj_flt` already folded into `PROC_STATS` (at first sight:
    /// what it had faulted before).
    pub(crate) folded: [u64; 2],
    /// The accounting already given a mode (`CFG_ACCOUNTED_MODES`): its moves past here are
    /// the last entered fault's.
    pub(crate) moded: [u64; 2],
    /// `min_flt + maj_flt` when the thread last entered the fault handler.
    pub(crate) at_entry: u64,
    /// `folded` is set ([`fold`] waits for it).
    pub(crate) ready: u8,
    /// `at_entry` is set.
    pub(crate) entered: u8,
    /// The last fault entered was raised in kernel mode.
    pub(crate) in_kernel: u8,
    pub(crate) _pad: [u8; 5],
}

/// The current thread's parked entry: in `THREADS` when processes are counted, so that one
/// lookup per probe serves both.
#[inline(always)]
pub(crate) fn parked(create: bool) -> Option<*mut Pending> {
    if conf!(flags) & CFG_OUT_PROCS != 0 {
        THREADS.current(create).map(|t| t as *mut Pending)
    } else {
        PENDING.current(create)
    }
}

/// The counts beside a parked entry from [`parked`] (`CFG_OUT_PROCS` only).
#[inline(always)]
pub(crate) fn thread_stats(p: *mut Pending) -> *mut ProcStats {
    unsafe { addr_of_mut!((*(p as *mut Thread)).stats) }
}

/// `task`'s minor and major faults as the kernel accounts them.
#[inline(always)]
pub(crate) fn faults_accounted(task: *mut task_struct) -> [u64; 2] {
    [
        task_u64(task, conf!(off.task_min_flt)),
        task_u64(task, conf!(off.task_maj_flt)),
    ]
}

/// `CFG_ACCOUNTED`: counts an error if the thread entered the fault handler since it was
/// last seen and its accounting did not move (a fault that completes is always accounted),
/// gives the moves their mode, then notes where the accounting stands and the mode of the
/// fault now entered (`in_kernel`; at exit, the last one's, passed back).
#[inline(always)]
pub(crate) fn check_accounted(task: *mut task_struct, t: *mut Thread, in_kernel: u8) {
    let now = faults_accounted(task);
    let [min, maj] = now;
    unsafe {
        let a = addr_of_mut!((*t).acct);
        if (*a).ready == 0 {
            write_volatile(addr_of_mut!((*a).folded), now);
            write_volatile(addr_of_mut!((*a).moded), now);
            write_volatile(addr_of_mut!((*a).ready), 1);
        } else {
            if (*a).entered != 0 && (*a).at_entry == min + maj && conf!(kinds) & (1 << KIND_ERROR) != 0 {
                atomic_add(addr_of_mut!((*t).stats.counts[KIND_ERROR as usize]), 1);
                if (*a).in_kernel != 0 {
                    atomic_add(addr_of_mut!((*t).stats.kernel[KIND_ERROR as usize]), 1);
                }
            }
            give_mode(t, now);
        }
        (*a).at_entry = min + maj;
        (*a).entered = 1;
        (*a).in_kernel = in_kernel;
    }
}

/// `CFG_ACCOUNTED_MODES`: the accounting's moves up to `now` not yet given a mode are the
/// last entered fault's (and those of get_user_pages, which raise no exception, in
/// between): kernel-mode faults if it was. Called at each entry and by [`fold`], each move
/// taken once.
#[inline(always)]
pub(crate) fn give_mode(t: *mut Thread, now: [u64; 2]) {
    if conf!(flags) & CFG_ACCOUNTED_MODES == 0 {
        return;
    }
    unsafe {
        let a = addr_of_mut!((*t).acct);
        let in_kernel = read_volatile(addr_of!((*a).in_kernel)) != 0;
        for (k, &now) in now.iter().enumerate() {
            let d = advance(addr_of_mut!((*a).moded[k]), now);
            if in_kernel && d != 0 && conf!(kinds) & (1 << k) != 0 {
                atomic_add(addr_of_mut!((*t).stats.kernel[k]), d);
            }
        }
    }
}
