//! What differs between kernels: here, but for the per-thread maps (`TaskStorage` in
//! [`crate::thread`]) and the unwinder's loop (`walk_frames` in [`crate::unwind`]). The default object uses what 5.17 and later
//! give tracing programs: `bpf_find_vma`, `bpf_loop`, task storage, `bpf_task_pt_regs` and
//! BTF-typed task pointers. The compat object (`--features compat`, `pfault-compat.bpf.o`)
//! does the same work with what 5.8 has (ring buffers and task iterators are the floor):
//! userspace picks one from the helpers the running kernel lists in its BTF
//! (`enum bpf_func_id`), never from its version.
//!
//! Compat costs more per fault (a hash lookup per thread instead of a pointer chase, a VMA
//! lookup without the kernel's lock) and verifies the unwinder's loop as a bounded loop
//! around a global function instead of `bpf_loop`.

#[cfg(not(feature = "compat"))]
use core::intrinsics::atomic_cxchg;

use crate::*;

/// Flags of a hash map best allocated as entries are added. Before 6.1 perf_event programs
/// (the tracepoint path's completions) may use preallocated hash maps alone: compat's are.
pub(crate) const GROWN: u64 = if cfg!(feature = "compat") {
    0
} else {
    BPF_F_NO_PREALLOC as u64
};

/// A `bpf_find_vma` callback: `(task, vma, ctx)`.
pub(crate) type VmaCallback = extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> i64;

/// The current task, as a pointer the verifier knows the type of where the kernel can say.
#[inline(always)]
pub(crate) fn current_task() -> *mut task_struct {
    #[cfg(not(feature = "compat"))]
    {
        unsafe { bpf_get_current_task_btf() }
    }
    #[cfg(feature = "compat")]
    {
        (unsafe { bpf_get_current_task() }) as *mut task_struct
    }
}

/// A `u64` field of `task`.
#[inline(always)]
pub(crate) fn task_u64(task: *mut task_struct, off: u32) -> u64 {
    btf_u64(task as u64, off)
}

/// The `u64` at `base + off`, where `base` is a task or its user registers ([`user_regs`]): a
/// plain load where the pointer is BTF-typed (checked by the verifier, cheaper than a probe
/// read on every fault), a probe read where it is not.
#[inline(always)]
pub(crate) fn btf_u64(base: u64, off: u32) -> u64 {
    #[cfg(not(feature = "compat"))]
    {
        unsafe { read_volatile((base as *const u8).add(off as usize) as *const u64) }
    }
    #[cfg(feature = "compat")]
    {
        read(base, off)
    }
}

/// `task`'s user registers (0: none to be had). Compat finds them where x86-64 keeps them,
/// at the top of the task's kernel stack (`task_pt_regs()`); userspace says how far up.
#[inline(always)]
pub(crate) fn user_regs(task: *mut task_struct) -> u64 {
    #[cfg(not(feature = "compat"))]
    {
        (unsafe { bpf_task_pt_regs(task) }) as u64
    }
    #[cfg(feature = "compat")]
    {
        let stack: u64 = read(task as u64, conf!(off.task_stack));
        if stack == 0 {
            0
        } else {
            stack + conf!(off.user_regs_in_stack) as u64
        }
    }
}

/// Calls `found` on the current task's VMA holding `addr`, as `bpf_find_vma` does: 0, -ENOENT
/// where no VMA holds it, another error where the lookup was not made (the mmap lock busy).
#[inline(always)]
pub(crate) fn find_vma(addr: u64, found: VmaCallback, ctx: *mut c_void) -> i64 {
    #[cfg(not(feature = "compat"))]
    {
        unsafe { bpf_find_vma(bpf_get_current_task_btf(), addr, found as *mut c_void, ctx, 0) }
    }
    #[cfg(feature = "compat")]
    {
        let vma = vma_lookup(addr);
        if vma == 0 {
            return -2;
        }
        found(core::ptr::null_mut(), vma as *mut c_void, ctx);
        0
    }
}

/// The current task's VMA holding `addr`, or 0: `find_vma()`'s descent of the mm's
/// red-black tree, by probe reads. Without the mmap lock (a tracing program cannot take it):
/// a tree being rebalanced may send the walk astray, which ends it with no VMA or a wrong
/// one, never a fault. A global function: verified once, not at each caller.
#[cfg(feature = "compat")]
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn vma_lookup(addr: u64) -> u64 {
    let mm: u64 = read(unsafe { bpf_get_current_task() }, conf!(off.task_mm));
    let mut node: u64 = read(mm, conf!(off.mm_rb));
    let mut found = 0;
    let mut i = 0;
    while i < VMA_TREE_DEPTH {
        if node == 0 {
            break;
        }
        let vma = node.wrapping_sub(conf!(off.vma_vm_rb) as u64);
        if read::<u64>(vma, conf!(off.vma_vm_end)) > addr {
            found = vma;
            if read::<u64>(vma, conf!(off.vma_vm_start)) <= addr {
                break;
            }
            node = read(node, conf!(off.rb_left));
        } else {
            node = read(node, conf!(off.rb_right));
        }
        i += 1;
    }
    if found != 0 && read::<u64>(found, conf!(off.vma_vm_start)) <= addr {
        found
    } else {
        0
    }
}

/// Moves `*folded` up to `now` and returns by how much; 0 where another CPU's fold got
/// there first (and counted the difference). Compat has no compare-and-swap (5.12): two
/// folds of one thread at once (its exit beside a read of the rows) may count the
/// difference twice.
#[inline(always)]
pub(crate) fn advance(folded: *mut u64, now: u64) -> u64 {
    #[cfg(not(feature = "compat"))]
    {
        for _ in 0..3 {
            let prev = unsafe { read_volatile(folded) };
            if now <= prev {
                return 0;
            }
            let (_, swapped) = unsafe {
                atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                    folded, prev, now,
                )
            };
            if swapped {
                return now - prev;
            }
        }
        0
    }
    #[cfg(feature = "compat")]
    {
        let prev = unsafe { read_volatile(folded) };
        if now <= prev {
            return 0;
        }
        unsafe { write_volatile(folded, now) };
        now - prev
    }
}
