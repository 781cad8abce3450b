//! Fault counts per stack (`stackcount`).

use crate::*;

/// Stack ids for `stackcount`, taken where the fault is raised.
#[inline(always)]
pub(crate) fn stack_id(ctx: *mut c_void, flag: u32, user: bool) -> i32 {
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

/// Stack counts with one probe per fault: the perf event holds the fault's registers, so the
/// user stack (and, for a fault raised in kernel mode, the kernel stack) is the fault's own.
#[inline(always)]
pub(crate) fn count_stack_at_completion(ctx: &PerfEventContext, kind: u8) -> u32 {
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
pub(crate) fn count_stack(key: &StackKey) {
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
pub(crate) fn slot_is_ours(slot: *mut StackSlot, key: &StackKey) -> bool {
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

#[inline(always)]
pub(crate) fn add_count<K>(map: &HashMap<K, u64>, key: &K) {
    if let Some(v) = get_or_insert(map, key, &0) {
        atomic_add(v, 1);
    }
}
