//! Fault counts per stack (`stackcount`).
//!
//! A stack is walked into a per-CPU scratch buffer and named by a 64-bit hash of its frames;
//! counts are keyed by that hash in a hash map, which chains its collisions, so no stack is
//! dropped for sharing a bucket (the kernel's stack-trace map drops one whenever its bucket is
//! taken). The frames go to userspace through the ring buffer once per process and stack.

use crate::*;

/// Scratch slot of the user stack; the kernel stack's is `KERNEL_SCRATCH`.
pub(crate) const USER_SCRATCH: u32 = 0;
const KERNEL_SCRATCH: u32 = 1;

/// `regs->cs` in `struct pt_regs` (x86_64): its low two bits are the privilege level the fault
/// was raised at.
const PT_REGS_CS: usize = 17;
/// `addr` in `struct bpf_perf_event_data` (after the 21 words of `pt_regs` and
/// `sample_period`), in words: the perf sample's address.
const PERF_DATA_ADDR: usize = 22;

/// Walks the current user (or kernel) stack into its scratch slot and names it: a hash of its
/// frames, `STACK_NONE` when it was not asked for or cannot be walked, `STACK_EXEC` for the
/// kernel's own writes to a new image during execve.
#[inline(always)]
pub(crate) fn walk(ctx: *mut c_void, user: bool, kernel_mode: bool) -> u64 {
    let flag = if user { CFG_USTACK } else { CFG_KSTACK };
    if conf!(flags) & flag == 0 {
        return STACK_NONE;
    }
    if user && kernel_mode && in_exec() {
        return STACK_EXEC;
    }
    let Some(s) = STACK_SCRATCH.get_ptr_mut(if user { USER_SCRATCH } else { KERNEL_SCRATCH }) else {
        return STACK_NONE;
    };
    let mut n = if user && conf!(flags) & CFG_UNWIND_CFI != 0 {
        unwind_user()
    } else {
        let f = if user { BPF_F_USER_STACK as u64 } else { 0 };
        const BYTES: u32 = (MAX_STACK * 8) as u32;
        let got = unsafe { bpf_get_stack(ctx, addr_of_mut!((*s).frames) as *mut c_void, BYTES, f) };
        // -EFAULT only says there is no such stack (no kernel stack for a fault raised in user
        // mode, no user stack for a kernel thread): nothing lost.
        if got <= 0 {
            return STACK_NONE;
        }
        got as usize / 8
    };
    if n == 0 {
        return STACK_NONE;
    }
    if n > MAX_STACK {
        n = MAX_STACK;
    }
    let h = hash_frames(user as u64, n as u64);
    unsafe {
        (*s).rec = REC_STACK;
        (*s).nframes = n as u32;
        (*s).hash = h;
    }
    h
}

/// The hash of the first `n` frames of the user (`user` != 0) or kernel scratch slot. A
/// global function: the verifier walks its loop once, not in each program and for each stack
/// it hashes (unrolled inline: twice its 127 turns in each of stackcount's completion
/// programs).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn hash_frames(user: u64, n: u64) -> u64 {
    let Some(s) = STACK_SCRATCH.get_ptr(if user != 0 { USER_SCRATCH } else { KERNEL_SCRATCH }) else {
        return STACK_NONE;
    };
    let n = n as usize;
    let mut h = stack_hash_start(user != 0);
    let mut i = 0;
    while i < MAX_STACK {
        if i >= n {
            break;
        }
        h = stack_hash_step(h, unsafe { (*s).frames[i] });
        i += 1;
    }
    stack_hash_end(h, n as u64)
}

/// Is the current task in execve (`task_struct.in_execve`, a bit field)? A fault it takes in
/// kernel mode then is the kernel writing the new image, and its user registers still belong
/// to the old one. (`fs_struct.in_exec` would be a whole byte, but 6.18 clears it before the
/// binary loader writes.)
#[inline(always)]
fn in_exec() -> bool {
    let bit = conf!(off.task_in_execve_bit);
    bit != 0 && read::<u8>(unsafe { bpf_get_current_task() }, bit / 8) & (1 << (bit % 8)) != 0
}

/// Makes sure userspace has the frames of the stack `walk` just left in its scratch slot, for
/// process `tgid`. Returns the stack's hash, or `STACK_LOST` when the ring buffer had no room
/// (the next fault on that stack tries again).
#[inline(always)]
pub(crate) fn publish(tgid: u32, hash: u64, user: bool) -> u64 {
    if hash < STACK_FIRST {
        return hash;
    }
    let sent = SentKey { tgid, _pad: 0, hash };
    if STACKS_SENT.get_ptr(&sent).is_some() {
        return hash;
    }
    let Some(s) = STACK_SCRATCH.get_ptr_mut(if user { USER_SCRATCH } else { KERNEL_SCRATCH }) else {
        return STACK_LOST;
    };
    unsafe { (*s).tgid = tgid };
    let mut n = unsafe { (*s).nframes } as usize;
    if n > MAX_STACK {
        n = MAX_STACK;
    }
    let len = STACK_FRAMES_HEADER + n * 8;
    // Only the frames walked: a full record is 1 KiB, most stacks a fraction of it.
    let bytes = unsafe { core::slice::from_raw_parts(s as *const u8, len) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flag()).is_err() {
        count(CNT_STACK_LOST);
        return STACK_LOST;
    }
    // LRU: a (process, stack) pushed out is sent again, which userspace takes as it is.
    let _ = STACKS_SENT.insert(&sent, &1u8, 0);
    hash
}

/// Was the fault in the perf event's registers raised in kernel mode?
#[inline(always)]
fn raised_in_kernel(ctx: &PerfEventContext) -> bool {
    let cs: u64 = unsafe { *(ctx.ctx as *const u64).add(PT_REGS_CS) };
    cs & 3 == 0
}

/// Stack counts with one probe per fault: the perf event holds the fault's registers, so the
/// user stack (and, for a fault raised in kernel mode, the kernel stack) is the fault's own.
#[inline(always)]
pub(crate) fn count_stack_at_completion(ctx: &PerfEventContext, kind: u8) -> u32 {
    if conf!(kinds) & (1 << kind) == 0 {
        return 0;
    }
    let Some((tgid, _)) = wanted_current() else {
        return 0;
    };
    let kernel_mode = raised_in_kernel(ctx);
    // The thread's name in two loads from its task: no helper call on the hot path.
    let task = current_task();
    let comm_at = |i: u32| task_u64(task, conf!(off.task_comm) + 8 * i);
    let comm = [comm_at(0), comm_at(1)];
    // The perf sample's address is the fault's (mm_account_fault passes it on).
    let addr = unsafe { *(ctx.ctx as *const u64).add(PERF_DATA_ADDR) };
    let bytes = page_bytes(page_shift(addr));
    let mut key = StackKey {
        tgid,
        kind: kind as u32,
        ustack: walk(ctx.as_ptr(), true, kernel_mode),
        kstack: walk(ctx.as_ptr(), false, kernel_mode),
        comm: [0; COMM_LEN],
    };
    if walked_late(key.ustack) && send_late(tgid as u64, kind as u64, key.kstack, 0, bytes) != 0 {
        return 0;
    }
    // A stack this process has counted on before: its frames are with userspace.
    if let Some(v) = STACK_COUNTS.get_ptr_mut(&stack_key_hash(&key, comm)) {
        add_weights(v, 0, bytes);
        return 0;
    }
    key.ustack = publish(tgid, key.ustack, true);
    key.kstack = publish(tgid, key.kstack, false);
    key.comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    count_stack(&key, comm, 0, bytes);
    0
}

/// Sends the current fault's user registers and a copy of its stack for userspace to walk
/// and count under (`tgid`, `kind`, no user stack, `kstack`, the task's comm), with its
/// latency and bytes: a walk that met a table still loading guessed its frames by frame
/// pointer, and userspace walks the copy once the table is in, as perf walks its copies of
/// the stack. Returns 1 where sent (the caller then counts nothing). A global function,
/// verified once.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn send_late(tgid: u64, kind: u64, kstack: u64, latency: u64, bytes: u64) -> i64 {
    let regs = user_regs(current_task());
    if regs == 0 {
        return 0;
    }
    // Its kernel stack's frames, where not sent yet (the entry program sent them where there
    // is one).
    let kstack = publish(tgid as u32, kstack, false);
    // A loop faulting while a table loads sends one copy per fault, faster than any reader
    // takes them: a quarter of the ring is left to the notices and new stacks' frames, which
    // nothing stands in for.
    if EVENTS.query(BPF_RB_AVAIL_DATA) * 4 > EVENTS.query(BPF_RB_RING_SIZE) * 3 {
        count(CNT_UNWIND_LATE_LOST);
        return 0;
    }
    let Some(mut r) = EVENTS.reserve::<LateStack>(0) else {
        count(CNT_UNWIND_LATE_LOST);
        return 0;
    };
    let l = r.as_mut_ptr();
    unsafe {
        (*l).rec = REC_LATE;
        (*l).key = StackKey {
            tgid: tgid as u32,
            kind: kind as u32,
            ustack: STACK_NONE,
            kstack,
            comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
        };
        (*l).latency_ns = latency;
        (*l).bytes = bytes;
        let got = aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            addr_of_mut!((*l).regs) as *mut c_void,
            (PT_REGS_WORDS * 8) as u32,
            regs as *const c_void,
        );
        if got != 0 {
            r.discard(0);
            return 0;
        }
        // A page at a time, never across a mapping's end: the rest of the stack pointer's
        // page, then the page above (where the stack's top is, that read fails alone).
        let sp = (*l).regs[PT_REGS_SP];
        let first = 4096 - (sp & 4095);
        let stack = addr_of_mut!((*l).stack) as *mut u8;
        let mut len = 0;
        if aya_ebpf::helpers::generated::bpf_probe_read_user(
            stack as *mut c_void,
            first as u32,
            sp as *const c_void,
        ) == 0
        {
            len = first;
            let next = (sp & !4095) + 4096;
            if aya_ebpf::helpers::generated::bpf_probe_read_user(
                stack.add(first as usize) as *mut c_void,
                4096,
                next as *const c_void,
            ) == 0
            {
                len += 4096;
            }
        }
        (*l).stack_len = len as u32;
    }
    r.submit(wakeup_flag());
    count(CNT_UNWIND_LATE);
    1
}

/// Counts a fault under `key`, whose comm is also given as the words it was hashed from, with
/// its latency and the bytes it mapped (0 where not measured).
#[inline(always)]
pub(crate) fn count_stack(key: &StackKey, comm: [u64; 2], latency: u64, bytes: u64) {
    let fresh = StackCount {
        key: *key,
        count: 0,
        latency_ns: 0,
        bytes: 0,
    };
    if let Some(v) = get_or_insert(&STACK_COUNTS, &stack_key_hash(key, comm), &fresh) {
        add_weights(v, latency, bytes);
    }
}

/// One fault more in `v`; the weights only where measured (an atomic add each).
#[inline(always)]
fn add_weights(v: *mut StackCount, latency: u64, bytes: u64) {
    atomic_add(unsafe { addr_of_mut!((*v).count) }, 1);
    if latency != 0 {
        atomic_add(unsafe { addr_of_mut!((*v).latency_ns) }, latency);
    }
    if bytes != 0 {
        atomic_add(unsafe { addr_of_mut!((*v).bytes) }, bytes);
    }
}
