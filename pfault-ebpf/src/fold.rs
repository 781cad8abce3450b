//! The accounting fold: per-thread counts and latencies moved into per-process rows.

use crate::*;

/// Adds a finished fault to its thread's counts. Nothing is looked up: the process's row is
/// only touched when [`fold`] moves the counts there. A hash-map update per fault would cost
/// more than the rest of both probes' work together.
#[inline(always)]
pub(crate) fn count_thread(p: *mut Pending, kind: u8, latency: u64, bytes: u64) {
    let s = thread_stats(p);
    // Atomic, though only this thread adds: `fold` may be taking from another CPU.
    unsafe {
        atomic_add(addr_of_mut!((*s).counts[(kind as usize) % 3]), 1);
        if (*p).error_code & PF_USER == 0 {
            atomic_add(addr_of_mut!((*s).kernel[(kind as usize) % 3]), 1);
        }
        if kind != KIND_ERROR {
            atomic_add(addr_of_mut!((*s).latency_sum_ns), latency);
            if bytes != 0 {
                atomic_add(addr_of_mut!((*s).bytes), bytes);
            }
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
pub(crate) fn take(from: *mut u64, to: *mut u64) {
    let v = unsafe { read_volatile(from) };
    if v != 0 {
        atomic_add(from, v.wrapping_neg());
        atomic_add(to, v);
    }
}

/// Moves the counts of `task` (a `task_struct *`) into its process's row, or its own with
/// `-t`: when the thread exits, and for every live thread before userspace reads the rows
/// (`fold_threads`).
#[inline(always)]
pub(crate) fn fold(task: *mut task_struct, t: *mut Thread) {
    let s = unsafe { addr_of_mut!((*t).stats) };
    let mut accounted = [0u64; 2];
    if conf!(flags) & CFG_ACCOUNTED != 0 && unsafe { read_volatile(addr_of!((*t).acct.ready)) } != 0 {
        let now = faults_accounted(task);
        // Moded at the same `now` as folded: each row's kernel-mode counts stay within its
        // counts.
        give_mode(t, now);
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
    // Inserted from a zeroed per-CPU slot: a ProcStats is too big for the stack.
    let Some(template) = PROC_TEMPLATE.get_ptr(0) else {
        return;
    };
    let Some(row) = get_or_insert(&PROC_STATS, &key, unsafe { &*template }) else {
        return;
    };
    // The latest name: a process forked by a shell is named by what it exec'd.
    let named = if per_thread {
        task as u64
    } else {
        read(task as u64, conf!(off.task_group_leader))
    };
    unsafe {
        (*row).comm = read(named, conf!(off.task_comm));
        if conf!(flags) & CFG_BY_CGROUP != 0 {
            (*row).cgroup = cgroup_of(named);
        }
        for (k, &n) in accounted.iter().enumerate() {
            atomic_add(addr_of_mut!((*row).counts[k]), n);
        }
        for k in 0..3 {
            take(addr_of_mut!((*s).counts[k]), addr_of_mut!((*row).counts[k]));
            take(addr_of_mut!((*s).kernel[k]), addr_of_mut!((*row).kernel[k]));
        }
        take(
            addr_of_mut!((*s).latency_sum_ns),
            addr_of_mut!((*row).latency_sum_ns),
        );
        take(addr_of_mut!((*s).bytes), addr_of_mut!((*row).bytes));
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
