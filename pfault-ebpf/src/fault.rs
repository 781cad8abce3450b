//! The two halves of a fault: its entry (exception tracepoints or `handle_mm_fault`) parked
//! per thread, and its completion (perf software events or the return of `handle_mm_fault`),
//! which feeds the outputs.

use crate::*;

/// Parks a fault's entry in the thread's slot. `vma` is known on the `handle_mm_fault` path;
/// on the tracepoint path the mapping is looked up at completion (see [`finish`]).
#[inline(always)]
pub(crate) fn enter(
    ctx: *mut c_void,
    p: Option<*mut Pending>,
    (tgid, tid): (u32, u32),
    addr: u64,
    ip: u64,
    error_code: u32,
    vma: u64,
) {
    let Some(p) = p.or_else(|| parked(true)) else {
        return count(CNT_PENDING_FULL);
    };
    let flags = conf!(flags);
    if flags & CFG_NOTIFY_TASKS != 0 && unsafe { (*p).announced } == 0 {
        unsafe { (*p).announced = 1 };
        announce(TaskSeen {
            rec: REC_TASK,
            pid: tgid,
            tid,
            forked_from: 0,
        });
    }
    unsafe {
        (*p).addr = addr;
        (*p).ip = ip;
        (*p).error_code = error_code;
        (*p).vm_fault = 0;
        (*p).retried = 0;
        (*p).has_map = 0;
        (*p).ustack = STACK_NONE;
        (*p).kstack = STACK_NONE;
        (*p).late = 0;
        if flags & CFG_OUT_STACKS != 0 {
            let kernel_mode = error_code & PF_USER == 0;
            (*p).busy = 1;
            let ustack = walk(ctx, true, kernel_mode);
            (*p).late = walked_late(ustack) as u8;
            (*p).ustack = publish(tgid, ustack, true);
            // At the exception tracepoint (no `vma`), a fault raised in user mode has no kernel
            // stack of its own: the walk would find only the exception's entry and the
            // tracepoint's call of this program (bpf_trace_run3), on top of every user stack.
            // Counted at completion, from the fault's user registers, it has none either.
            if kernel_mode || vma != 0 {
                (*p).kstack = publish(tgid, walk(ctx, false, kernel_mode), false);
            }
            (*p).busy = 0;
        }
        if vma != 0 && flags & (CFG_MAPPING | CFG_OUT_FILES) != 0 {
            (*p).map = core::mem::zeroed();
            read_vma(vma, addr, &mut (*p).map);
            (*p).has_map = 1;
        }
        // Taken last: a fault's latency is the kernel's, not the time pfault took to walk its
        // stacks and read its mapping here.
        (*p).ts = bpf_ktime_get_ns();
        (*p).active = 1;
    }
}

/// A fault seen by the `exceptions:page_fault_*` tracepoints, as raw tracepoints: the
/// arguments come as they are, without the trace record a classic tracepoint program has
/// built for it first (cheaper on every fault).
/// `TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code)`.
#[inline(always)]
pub(crate) fn on_exception(ctx: &RawTracePointContext) -> u32 {
    let Some(who) = wanted_current() else {
        return 0;
    };
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
        let task = current_task();
        match THREADS.get(task, true) {
            Some(t) => check_accounted(task, t, (mode == MODE_KERNEL) as u8),
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
    if nested(p) {
        return 0;
    }
    flush_error(ctx.as_ptr(), p, false);
    enter(ctx.as_ptr(), p, who, addr, ip, error_code as u32, 0);
    0
}

/// Is this fault taken inside one of pfault's own walks of this thread's stacks?
#[inline(always)]
fn nested(p: Option<*mut Pending>) -> bool {
    p.is_some_and(|p| unsafe { (*p).busy } != 0)
}

/// A parked entry `p` that will never complete is an error fault.
#[inline(always)]
pub(crate) fn flush_error(ctx: *mut c_void, p: Option<*mut Pending>, stacks_ok: bool) {
    if let Some(p) = p {
        if unsafe { (*p).active } != 0 {
            finish(ctx, p, KIND_ERROR, unsafe { (*p).vm_fault }, 0, stacks_ok);
            unsafe { (*p).active = 0 };
        }
    }
}

/// Completion on the tracepoint path: `mm_account_fault` raised PAGE_FAULTS_MIN/MAJ.
#[inline(always)]
pub(crate) fn on_accounted(ctx: &PerfEventContext, kind: u8) -> u32 {
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

/// Entry of `handle_mm_fault(vma, address, flags, regs)`.
#[inline(always)]
pub(crate) fn on_hmf_enter(ctx: *mut c_void, vma: u64, addr: u64, fault_flags: u32, regs: u64) -> u32 {
    let Some(who) = wanted_current() else {
        return 0;
    };
    let user = fault_flags & conf!(off.fault_flag_user) != 0;
    let mode = if user { MODE_USER } else { MODE_KERNEL };
    let pending = parked(false);
    if nested(pending) {
        return 0;
    }
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
    enter(ctx, pending, who, addr, ip, error_code, vma);
    0
}

/// Return of `handle_mm_fault`: the `VM_FAULT_*` result says what became of the fault.
#[inline(always)]
pub(crate) fn on_hmf_return(ctx: *mut c_void, ret: u32) -> u32 {
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

/// Feeds one finished fault to every output userspace asked for, with nested entries held
/// off (see `Pending::busy`).
#[inline(always)]
pub(crate) fn finish(
    ctx: *mut c_void,
    p: *mut Pending,
    kind: u8,
    vm_fault: u32,
    latency: u64,
    stacks_ok: bool,
) {
    unsafe { (*p).busy = 1 };
    feed_outputs(ctx, p, kind, vm_fault, latency, stacks_ok);
    unsafe { (*p).busy = 0 };
}

#[inline(always)]
pub(crate) fn feed_outputs(
    ctx: *mut c_void,
    p: *mut Pending,
    kind: u8,
    vm_fault: u32,
    latency: u64,
    stacks_ok: bool,
) {
    if conf!(kinds) & (1 << kind) == 0 {
        return;
    }
    if kind != KIND_ERROR && latency < conf!(min_latency_ns) {
        return;
    }
    let flags = conf!(flags);
    let page_shift = if kind != KIND_ERROR {
        page_shift(unsafe { (*p).addr })
    } else {
        0
    };
    let bytes = page_bytes(page_shift);
    if flags & CFG_OUT_PROCS != 0 {
        count_thread(p, kind, latency, bytes);
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
            page_shift,
            comm,
        };
        emit_event(ctx, p, &d);
    }
    if flags & CFG_OUT_STACKS != 0 {
        let key = StackKey {
            tgid,
            kind: kind as u32,
            ustack: unsafe { (*p).ustack },
            kstack: unsafe { (*p).kstack },
            comm,
        };
        // The user stack is still the fault's at its completion: a late walk's copy is
        // taken now, with the latency it is counted with.
        let sent =
            unsafe { (*p).late } != 0 && send_late(tgid as u64, kind as u64, key.kstack, latency, bytes) != 0;
        if !sent {
            count_stack(&key, comm_words(&comm), latency, bytes);
        }
    }
    if flags & CFG_OUT_FILES != 0 {
        count_file(map, kind, tgid, &comm, bytes);
    }
}

/// Bytes of a page of `1 << shift` bytes; 0 for no page (shift 0).
#[inline(always)]
pub(crate) fn page_bytes(shift: u8) -> u64 {
    if shift == 0 {
        0
    } else {
        1 << (shift & 63)
    }
}

/// Log2 of the size of the page that maps `addr` in the current process now, just after its
/// fault completed: 30 or 21 where a PUD or PMD entry maps the page itself (a hugetlb page, a
/// transparent huge page), else 12; 0 unless `CFG_PAGE_SIZE`.
///
/// The page tables say what the fault left mapped, whichever path mapped it: the VMA would
/// only say a huge page was allowed (`VM_HUGEPAGE`, `VM_HUGETLB`), not whether this fault got
/// one (a THP fault falls back to 4 KiB pages where its 2 MiB range is not aligned, is
/// partly mapped already, or no huge page is free), and finding the VMA at completion costs
/// more than the fault. The walk is three or four probe reads (four or five with five-level
/// tables), no lock and no clock. A page table that another CPU splits or frees meanwhile
/// reads as what it then holds (a read that faults reads as empty: 4 KiB).
#[inline(always)]
pub(crate) fn page_shift(addr: u64) -> u8 {
    if conf!(flags) & CFG_PAGE_SIZE == 0 {
        return 0;
    }
    page_shift_global(addr) as u8
}

/// [`page_shift`]'s walk. A global function: the verifier checks it once, and the caller
/// goes on with one unknown result, not once for each size it can return (inline, the
/// stack walks and hashes after it were verified three times over: 22,473 instructions for
/// `stackcount -U --weight bytes`).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn page_shift_global(addr: u64) -> u64 {
    const PRESENT: u64 = 1;
    /// A PUD or PMD entry that maps a page rather than a table (`_PAGE_PSE`).
    const HUGE: u64 = 1 << 7;
    /// The physical address bits of an entry (`PTE_PFN_MASK`).
    const PHYS: u64 = 0x000f_ffff_ffff_f000;
    let at = conf!(page_offset_at);
    let base: u64 = if at != 0 { read(at, 0) } else { conf!(page_offset) };
    // Entry `index` (9 bits of `addr` from `shift`) of the table at `table`.
    let entry = |table: u64, shift: u32| -> u64 { read(table, (((addr >> shift) & 511) * 8) as u32) };
    let next = |e: u64| base + (e & PHYS);
    let mm: u64 = read(unsafe { bpf_get_current_task() }, conf!(off.task_mm));
    let mut table: u64 = read(mm, conf!(off.mm_pgd));
    if conf!(pgtable_l5) != 0 {
        let e = entry(table, 48);
        if e & PRESENT == 0 {
            return 12;
        }
        table = next(e);
    }
    let p4d = entry(table, 39);
    if p4d & PRESENT == 0 {
        return 12;
    }
    let pud = entry(next(p4d), 30);
    if pud & PRESENT == 0 {
        return 12;
    }
    if pud & HUGE != 0 {
        return 30;
    }
    let pmd = entry(next(pud), 21);
    if pmd & PRESENT != 0 && pmd & HUGE != 0 {
        return 21;
    }
    12
}

/// A finished fault: what the outputs need besides its parked entry.
pub(crate) struct Done {
    pub(crate) kind: u8,
    /// The context can walk this fault's stacks (not so for an error found at a later entry).
    pub(crate) stacks_ok: bool,
    pub(crate) vm_fault: u32,
    pub(crate) tgid: u32,
    pub(crate) tid: u32,
    pub(crate) latency: u64,
    /// Log2 of the size of the page it mapped (0: not known).
    pub(crate) page_shift: u8,
    pub(crate) comm: [u8; COMM_LEN],
}
