//! User stacks unwound from the binaries' own CFI (`CFG_UNWIND_CFI`).
//!
//! A frame-pointer walk loses a frame wherever code keeps no frame pointer: hand-written
//! memset/memcpy skip their caller, and code built without `-fno-omit-frame-pointer` (most
//! Rust and -O2 C) ends the stack after its first frame. Userspace turns each binary's
//! `.eh_frame` into rows (file offset -> how to find the CFA and the caller's rbp) in
//! `UNWIND_ROWS`, one table per file shared by every process mapping it (`UNWIND_FILES`).
//! Here each frame's code mapping is found (`TEXT_VMAS`, filled from `bpf_find_vma` once per
//! process and 64 KiB of code), its row binary-searched, and the caller's pc, rsp and rbp
//! computed from it, frame after frame in a `bpf_loop` (compat: a bounded loop). Code no table covers (anonymous or JIT
//! code, a file without CFI, a table still loading) takes one frame-pointer step, counted in
//! `CNT_UNWIND_FP` and by why (`CNT_FP_*`), and its caller's frame is marked `FRAME_BY_FP`.
//! A walk that ends short of the outermost frame (at the frame limit, or on a step that
//! fails) ends in a `FRAME_MARK` frame saying why. A walk that met a table still loading, or
//! a mapping it could not look up for the mmap lock, is `late`: its frame-pointer guess is not
//! counted where stacks are counted, the fault's registers and stack are sent for userspace to
//! walk once the table is in (`send_late`), as perf walks the stacks it copies.
//!
//! Two things make the walk cheap where a loop faults page after page from one place. A user
//! read costs more than a frame's table search (about 90 ns on one 6.18 build, 150 for the
//! first of a run): the stack is read a page at a time into `WINDOW` and each word taken from
//! there. And each walk is kept per CPU and thread slot (`WALK_CACHE`) with every stack word
//! it read and what the word held: a walk that starts from the same registers in the same
//! process and finds the same words would end where that one did, so its frames are taken as
//! they are, after one read of the stack. Walks whose outcome hung on anything else (a table
//! still loading, a read that failed, a register other than rsp and rbp) are not kept; one
//! that used the task's own rbp (and not one restored from the stack) holds for that rbp.

use crate::*;

/// The lowest address user code can run at; a return address below it ends the walk.
const MIN_USER_PC: u64 = 4096;

/// `UNWIND_FILES.insert`'s error where another CPU inserted the file first.
const EEXIST: i32 = 17;
/// `bpf_find_vma`'s where no VMA holds the address.
const ENOENT: i64 = 2;

/// Adds `n` to one of `COUNTERS` without [`count`]'s log call: its stack frame would take the
/// walk's chain of calls past the 512 bytes 6.1 allows them together.
#[inline(always)]
fn bump(idx: u32, n: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *c += n };
    }
}

/// The code mapping [`unwind_text_vma`] found through `bpf_find_vma`, per CPU: its callback
/// fills it in place (the BPF stack has no room left for it on 6.1).
#[map]
static VMA_FOUND: PerCpuArray<TextVma> = PerCpuArray::with_max_entries(1, 0);

/// The walk's state, per CPU: in a map value the verifier knows nothing of what each step
/// leaves, so it checks the step once (state on the BPF stack would be checked again for
/// every different value the steps could leave there).
#[repr(C)]
pub(crate) struct Walk {
    pc: u64,
    sp: u64,
    bp: u64,
    n: u64,
    tgid: u64,
    gen: u64,
    /// The code mapping of the last frame (`end == 0`: none yet), and its file's table.
    start: u64,
    end: u64,
    bias: u64,
    first: u32,
    rows: u32,
    state: u64,
    /// `pc` was interrupted (by a signal), not called from: its own row is the one.
    exact: u64,
    /// `FRAME_BY_FP` where `pc` was found by a frame-pointer step, else 0.
    by_fp: u64,
    /// The thread's `WALK_CACHE` slot.
    slot: u32,
    _pad: u32,
    /// The word [`stack_word_global`] read.
    word: u64,
    /// `bp` is still the task's own rbp (no step restored it from the stack); a step used it
    /// so (`bp_used`): then the walk holds only for that rbp, where -O2 code keeps any value.
    bp_own: u64,
    bp_used: u64,
    /// The walk met code it has no table for yet (still loading, or the mapping's lookup
    /// found the mmap lock busy): its frames are the frame pointer's guess, and the fault's
    /// stack is better sent to userspace to walk once the table is in (`send_late`).
    late: u64,
}

#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// Bytes of user stack read at once: the rest of the page a word lies in, so that a read
/// never runs into a mapping that may not be there.
const WINDOW_BYTES: usize = 4096;
const WINDOW_WORDS: usize = WINDOW_BYTES / 8;

/// User stack bytes read at once, per CPU.
#[repr(C)]
pub(crate) struct Window {
    /// `words` hold the stack's `base..base + len` (`base` 8-aligned: BPF has no unaligned
    /// load, and the stack's words are aligned).
    base: u64,
    len: u64,
    words: [u64; WINDOW_WORDS],
}

#[map]
static WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);

/// Stack words a walk may read and still be kept.
const WALK_READS: usize = 24;

/// The most frames a kept walk has: one per word read, and a last step and a marker that read
/// none.
const KEPT_FRAMES: usize = WALK_READS + 2;

/// `WalkReads::n` of a walk not kept: it read more than `WALK_READS` words, or its outcome
/// hung on more than the words it read.
const WALK_UNKEPT: u64 = u64::MAX;

/// Every stack word a walk read, and what it held.
#[repr(C)]
struct WalkReads {
    /// How many, or `WALK_UNKEPT`.
    n: u64,
    /// The stack they lie in: `lo..hi`.
    lo: u64,
    hi: u64,
    addr: [u64; WALK_READS],
    val: [u64; WALK_READS],
}

impl WalkReads {
    #[inline(always)]
    fn push(&mut self, addr: u64, val: u64) {
        let at = self.n as usize;
        if at >= WALK_READS {
            self.n = WALK_UNKEPT;
            return;
        }
        self.addr[at] = addr;
        self.val[at] = val;
        self.n += 1;
        if at == 0 || addr < self.lo {
            self.lo = addr;
        }
        if at == 0 || addr + 8 > self.hi {
            self.hi = addr + 8;
        }
    }
}

/// A thread slot's last walk: where it started, what it read, the frames it left.
#[repr(C)]
pub(crate) struct WalkCache {
    /// The process (`tgid` and `task->mm`: an exec has a new one) and the registers.
    tgid: u64,
    mm: u64,
    pc: u64,
    sp: u64,
    bp: u64,
    /// A step used `bp` as it was in the task's registers.
    bp_used: u64,
    n: u64,
    /// Its frame-pointer steps, all counted under `fp_why` (`CNT_FP_*`).
    fp_steps: u64,
    fp_why: u64,
    reads: WalkReads,
    frames: [u64; MAX_STACK],
}

/// The last walk per CPU and thread slot (by thread id; sized by the loader:
/// `capacity::WALK_CACHE` with the CFI unwinder, else 1).
#[map]
static WALK_CACHE: PerCpuArray<WalkCache> = PerCpuArray::with_max_entries(1, 0);

/// At exec, before the new image runs: finds the code mapping at `addr` and asks for its
/// table, so that userspace builds it while the loader starts (and not at the first fault).
#[inline(always)]
pub(crate) fn unwind_ahead(tgid: u32, addr: u64) {
    if conf!(flags) & CFG_UNWIND_CFI == 0 || addr == 0 {
        return;
    }
    let gen = unsafe { EXEC_GEN.get(&tgid) }.map_or(0, |g| *g as u64);
    let _ = unwind_text_vma(addr, tgid as u64, gen);
}

/// A new image (exec) or a process gone (its pid free to reuse): its `TEXT_VMAS` entries are
/// of the past. Run at exec and at the exit of a process's main thread.
#[inline(always)]
pub(crate) fn next_generation(tgid: u32) {
    if conf!(flags) & CFG_UNWIND_CFI == 0 {
        return;
    }
    match EXEC_GEN.get_ptr_mut(&tgid) {
        Some(g) => unsafe { *g += 1 },
        None => {
            let _ = EXEC_GEN.insert(&tgid, &1u32, 0);
        }
    }
}

impl Walk {
    #[inline(always)]
    fn take_vma(&mut self, v: &TextVma) {
        self.start = v.start;
        self.end = v.end;
        self.bias = v.bias;
        self.first = v.table.first;
        self.rows = v.table.rows;
        self.state = v.table.state as u64;
    }
}

/// Unwinds the current task's user stack into the user scratch slot's frames, leaf first;
/// returns the frames walked (0 where the task has no user registers).
#[inline(always)]
pub(crate) fn unwind_user() -> usize {
    let Some(w) = WALK.get_ptr_mut(0) else {
        return 0;
    };
    let w = unsafe { &mut *w };
    w.late = 0;
    let regs = user_regs(current_task());
    if regs == 0 {
        return 0;
    }
    w.pc = btf_u64(regs, conf!(off.regs_ip));
    w.sp = btf_u64(regs, conf!(off.regs_sp));
    w.bp = btf_u64(regs, conf!(off.regs_bp));
    w.n = 0;
    w.bp_own = 1;
    w.bp_used = 0;
    w.end = 0;
    w.exact = 0;
    w.by_fp = 0;
    if w.pc == 0 || w.pc >= USER_END {
        return 0;
    }
    let Some(win) = WINDOW.get_ptr_mut(0) else {
        return 0;
    };
    unsafe { (*win).len = 0 };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    w.tgid = tgid as u64;
    w.slot = pid_tgid as u32 % capacity::WALK_CACHE;
    let Some(c) = WALK_CACHE.get_ptr_mut(w.slot) else {
        return 0;
    };
    let c = unsafe { &mut *c };
    let mm = task_u64(current_task(), conf!(off.task_mm));
    if c.tgid == w.tgid && c.mm == mm && c.pc == w.pc && c.sp == w.sp && (c.bp == w.bp || c.bp_used == 0) {
        let n = replay_walk();
        if n != 0 {
            bump(CNT_UNWIND_FRAMES, n);
            bump(CNT_UNWIND_KEPT, n);
            if c.fp_steps != 0 {
                bump(CNT_UNWIND_FP, c.fp_steps);
                bump(c.fp_why as u32, c.fp_steps);
            }
            return n as usize;
        }
    }
    w.gen = unsafe { EXEC_GEN.get(&tgid) }.map_or(0, |g| *g as u64);
    c.tgid = w.tgid;
    c.mm = mm;
    c.pc = w.pc;
    c.sp = w.sp;
    c.bp = w.bp;
    c.fp_steps = 0;
    c.reads.n = 0;
    walk_frames();
    let n = w.n;
    c.n = n;
    c.bp_used = w.bp_used;
    if c.reads.n <= WALK_READS as u64 {
        if let Some(s) = STACK_SCRATCH.get_ptr(USER_SCRATCH) {
            copy_frames(addr_of_mut!(c.frames), unsafe { addr_of!((*s).frames) }, n);
        }
    }
    bump(CNT_UNWIND_FRAMES, n);
    n as usize
}

/// Whether the user stack just walked (named `ustack`) met code it has no table for yet (see
/// `Walk::late`).
#[inline(always)]
pub(crate) fn walked_late(ustack: u64) -> bool {
    ustack >= STACK_FIRST
        && conf!(flags) & CFG_UNWIND_CFI != 0
        && WALK.get_ptr(0).is_some_and(|w| unsafe { (*w).late } != 0)
}

/// Copies `n` frames (at most `MAX_STACK`) in one helper call.
#[inline(always)]
fn copy_frames(dst: *mut [u64; MAX_STACK], src: *const [u64; MAX_STACK], n: u64) {
    let bytes = (n as u32).min(MAX_STACK as u32) * 8;
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(dst as *mut c_void, bytes, src as *const c_void);
    }
}

/// The thread slot's last walk, which started from this walk's registers, where the stack
/// still holds every word it read: its frames, into the scratch slot. Returns how many, 0
/// where it is not kept or the stack changed. A global function, verified once.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn replay_walk() -> u64 {
    let (Some(w), Some(s), Some(win)) = (
        WALK.get_ptr_mut(0),
        STACK_SCRATCH.get_ptr_mut(USER_SCRATCH),
        WINDOW.get_ptr_mut(0),
    ) else {
        return 0;
    };
    let (w, win) = unsafe { (&mut *w, &mut *win) };
    let Some(c) = WALK_CACHE.get_ptr(w.slot) else {
        return 0;
    };
    let c = unsafe { &*c };
    let (reads, lo, hi) = (c.reads.n, c.reads.lo & !7, c.reads.hi);
    if reads > WALK_READS as u64 || c.n > KEPT_FRAMES as u64 || c.n == 0 {
        return 0;
    }
    // The words in one read: a read costs far more than its bytes. Left in the window, they
    // serve the new walk where a word changed.
    if reads != 0 {
        let len = hi.wrapping_sub(lo);
        if len > WINDOW_BYTES as u64 || !fill_window(win, lo, len) {
            return 0;
        }
    }
    let mut k = 0;
    while k < WALK_READS {
        if k as u64 >= reads {
            break;
        }
        // Kept walks read aligned words only.
        let at = (c.reads.addr[k].wrapping_sub(lo) / 8) as usize;
        if at >= WINDOW_WORDS || win.words[at] != c.reads.val[k] {
            return 0;
        }
        k += 1;
    }
    // A kept walk's frames are few (each but the last read a word): copied in a loop, not by
    // a helper call that costs more.
    let mut k = 0;
    while k < KEPT_FRAMES {
        if k as u64 >= c.n {
            break;
        }
        unsafe { (*s).frames[k] = c.frames[k] };
        k += 1;
    }
    w.n = c.n;
    c.n
}

/// Keeps the current walk from being taken again: its outcome hung on more than the stack
/// words it read.
#[inline(always)]
fn unkept(w: &Walk) {
    if let Some(c) = WALK_CACHE.get_ptr_mut(w.slot) {
        unsafe { (*c).reads.n = WALK_UNKEPT };
    }
}

/// Walks the frames, one [`unwind_frame`] each, until one ends the walk.
#[inline(always)]
fn walk_frames() {
    #[cfg(not(feature = "compat"))]
    unsafe {
        bpf_loop(
            MAX_STACK as u32,
            unwind_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // No bpf_loop: a bounded loop, whose body the verifier walks once per turn, around a
    // global function it checks once.
    #[cfg(feature = "compat")]
    {
        let mut i = 0;
        while i < MAX_STACK as u64 {
            if unwind_step_global(i) != 0 {
                break;
            }
            i += 1;
        }
    }
}

/// `bpf_loop` callback: frame `i`. Not `no_mangle`: the verifier wants a static callback.
#[cfg(not(feature = "compat"))]
#[inline(never)]
extern "C" fn unwind_step(i: u64, _ctx: *mut c_void) -> i64 {
    // A callback returns 0 or 1, and the verifier knows nothing of what a global returns:
    // read back through memory, so that the compiler, which knows, keeps the test.
    let r = unwind_step_global(i);
    (unsafe { read_volatile(&r) } != 0) as i64
}

/// Frame `i`. A global function: the verifier checks it once, on its own, whatever calls it
/// and however often. Inline in the `bpf_loop` callback, it was walked with the state of
/// each program that unwinds, again for each state the callback can be entered with: 44,121
/// instructions for each of stackcount's completion programs on one build of 6.18.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn unwind_step_global(i: u64) -> i64 {
    unwind_frame(i)
}

/// Frame `i`: records `WALK.pc`, then moves the walk to the caller. Returns 1 to end the
/// walk. The verifier checks it once or twice: what one step leaves for the next is in a map
/// value, of which it knows nothing.
#[inline(always)]
fn unwind_frame(i: u64) -> i64 {
    let (Some(w), Some(s)) = (WALK.get_ptr_mut(0), STACK_SCRATCH.get_ptr_mut(USER_SCRATCH)) else {
        return 1;
    };
    let w = unsafe { &mut *w };
    let n = i as usize;
    if n >= MAX_STACK - 1 {
        // No room for this frame and the rest: the marker says there were more.
        if n < MAX_STACK {
            unsafe { (*s).frames[n] = FRAME_MARK | STOP_TRUNCATED };
            w.n = i + 1;
        }
        return 1;
    }
    unsafe { (*s).frames[n] = w.pc | w.by_fp };
    w.n = i + 1;
    w.by_fp = 0;
    // A return address is the instruction after the call, which may already be the next
    // function's: its row is that of the byte before.
    let pc = if n == 0 || w.exact != 0 { w.pc } else { w.pc - 1 };
    w.exact = 0;
    if !(w.start <= pc && pc < w.end) {
        w.end = 0;
        match unwind_text_vma(pc, w.tgid, w.gen) {
            Ok(v) => w.take_vma(unsafe { &*v }),
            // Not for want of a mapping: the mmap lock was busy. No row then, so the step is
            // the frame pointer's.
            Err(e) if e != -ENOENT => w.late = 1,
            Err(_) => {}
        }
    }
    let row = if w.end != 0 && w.state == TABLE_READY as u64 {
        unwind_find_row(w.first, w.rows, pc.wrapping_add(w.bias))
    } else {
        0
    };
    // `UnwindRow` as one little-endian word: off, cfa_off, cfa, rbp.
    let (cfa_off, kind, rbp) = (
        (row >> 32) as u16 as i16,
        (row >> 48) as u8,
        (row >> 56) as u8 as i8,
    );
    // Where the return address lies below the CFA.
    let mut ra_below = 8;
    let (cfa, rbp) = match kind & CFA_KIND {
        CFA_RSP => (w.sp.wrapping_add(cfa_off as i64 as u64), rbp),
        CFA_RSP_RA => {
            ra_below = 8 * (2 + (kind >> 4) as u64);
            (w.sp.wrapping_add(cfa_off as i64 as u64), rbp)
        }
        CFA_REG | CFA_REG_X8 | CFA_DEREF | CFA_DEREF_RSP => {
            let (reg, plus) = if kind & CFA_KIND == CFA_DEREF_RSP {
                (REG_RSP, (kind >> 4) as u64 * 8)
            } else {
                (kind >> 4, 0)
            };
            let base = if reg == REG_RSP {
                w.sp
            } else if reg == REG_RBP {
                rbp_of(w)
            } else if w.n == 1 {
                // The faulting frame's registers are the task's own. (Told by `w.n`, not `n`:
                // keeping `n` live this long has it spilled, and 6.1's verifier then loses its
                // bound where it indexes the frames.)
                unkept(w);
                let regs = user_regs(current_task());
                read(regs, reg as u32 * 8)
            } else {
                // A caller's other registers are not known (no compiler calls out of the
                // code that keeps its CFA in one).
                return stopped(STOP_REGISTER);
            };
            let off = cfa_off as i64 as u64;
            let cfa = match kind & CFA_KIND {
                CFA_REG => base.wrapping_add(off),
                CFA_REG_X8 => base.wrapping_add(off << 3),
                _ => match stack_word(w, base.wrapping_add(off)) {
                    Some(v) => v.wrapping_add(plus),
                    None => return stopped(STOP_UNREADABLE),
                },
            };
            (cfa, rbp)
        }
        CFA_RBP => (rbp_of(w).wrapping_add(cfa_off as i64 as u64), rbp),
        CFA_PLT => {
            let pushed = if (w.pc & 15) >= cfa_off as u64 { 16 } else { 8 };
            (w.sp + pushed, rbp)
        }
        CFA_END => return 1,
        CFA_SIGNAL => {
            // The kernel's signal frame: the interrupted registers, from the ucontext at rsp
            // (on the signal stack, which need not lie above the interrupted one).
            let at = w.sp;
            let (Some(ip), Some(sp), Some(bp)) = (
                stack_word(w, at + SIGFRAME_RIP),
                stack_word(w, at + SIGFRAME_RSP),
                stack_word(w, at + SIGFRAME_RBP),
            ) else {
                return stopped(STOP_UNREADABLE);
            };
            if !(MIN_USER_PC..USER_END).contains(&ip) || sp == 0 || sp >= USER_END {
                return stopped(STOP_BAD_RA);
            }
            w.pc = ip;
            w.sp = sp;
            w.bp = bp;
            w.bp_own = 0;
            w.exact = 1;
            return 0;
        }
        _ => {
            // Code whose table is still loading: whatever the frame pointer says, userspace
            // walks the stack again once the table is in.
            if w.end != 0 && w.state == TABLE_ASKED as u64 {
                w.late = 1;
            }
            // The frame pointer: [rbp] is the caller's rbp, [rbp + 8] the return address.
            // None (as `_start` leaves it) ends the stack.
            if rbp_of(w) == 0 {
                return 1;
            }
            // The walk goes on from the caller, by its CFI where it has some (Parca and the
            // OpenTelemetry profiler stop there): measured on the e2e workloads, node's
            // JavaScript frames lead by frame pointer into node's own code on 89% of its
            // faults, and all of those stacks reach _start; stopping would have cut 14 frames
            // from each and saved no stack a bad step spoils (a marker frame shows those).
            let why = if w.end == 0 {
                CNT_FP_NO_VMA
            } else {
                CNT_FP_TABLE + (w.state as u32 & (TABLE_STATES - 1))
            };
            bump(CNT_UNWIND_FP, 1);
            bump(why, 1);
            kept_fp_step(w, why);
            w.by_fp = FRAME_BY_FP;
            (w.bp + 16, -2)
        }
    };
    // Callers' frames lie above: a CFA at or below the stack pointer is a bad row or a
    // corrupt stack, and would loop.
    if cfa <= w.sp || cfa >= USER_END {
        return stopped(STOP_BAD_CFA);
    }
    let Some(ra) = stack_word(w, cfa - ra_below) else {
        return stopped(STOP_UNREADABLE);
    };
    if rbp != 0 {
        let at = if rbp == RBP_AT_RBP {
            rbp_of(w)
        } else {
            cfa.wrapping_add((rbp as i64 * 8) as u64)
        };
        w.bp = stack_word(w, at).unwrap_or(0);
        w.bp_own = 0;
    }
    if !(MIN_USER_PC..USER_END).contains(&ra) {
        // A null return address ends a stack (as a thread's first frame may leave it).
        return if ra == 0 { 1 } else { stopped(STOP_BAD_RA) };
    }
    w.pc = ra;
    w.sp = cfa;
    0
}

/// The walk's rbp, for a step that uses it: noted where it is still the task's own.
#[inline(always)]
fn rbp_of(w: &mut Walk) -> u64 {
    w.bp_used |= w.bp_own;
    w.bp
}

/// Ends the walk short of the outermost frame: a marker frame says `why` (`STOP_*`) after the
/// frames walked. Returns 1 (the walk's end) for [`unwind_frame`] to return.
#[inline(always)]
fn stopped(why: u64) -> i64 {
    let (Some(w), Some(s)) = (WALK.get_ptr_mut(0), STACK_SCRATCH.get_ptr_mut(USER_SCRATCH)) else {
        return 1;
    };
    let w = unsafe { &mut *w };
    let n = w.n as usize;
    if n < MAX_STACK {
        unsafe { (*s).frames[n] = FRAME_MARK | why };
        w.n += 1;
    }
    1
}

/// Counts a frame-pointer step (`why`, `CNT_FP_*`) in the walk's record, to be counted again
/// when it is replayed. A walk keeps one reason; and a step taken because a mapping was not
/// found (its lock busy) or a table not loaded yet would not be taken later.
#[inline(always)]
fn kept_fp_step(w: &Walk, why: u32) {
    let Some(c) = WALK_CACHE.get_ptr_mut(w.slot) else {
        return;
    };
    let c = unsafe { &mut *c };
    if why == CNT_FP_NO_VMA
        || why == CNT_FP_TABLE + TABLE_ASKED
        || why == CNT_FP_TABLE + TABLE_FILES_FULL
        || (c.fp_steps != 0 && c.fp_why != why as u64)
    {
        c.reads.n = WALK_UNKEPT;
    }
    c.fp_steps += 1;
    c.fp_why = why as u64;
}

/// Reads the stack's `addr..addr + len` into the window (at most `WINDOW_BYTES`, not across
/// an end of its mapping: the caller sees to that). False where the read failed (the window
/// then holds nothing).
#[inline(always)]
fn fill_window(win: &mut Window, addr: u64, len: u64) -> bool {
    let got = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            addr_of_mut!(win.words) as *mut c_void,
            len as u32,
            addr as *const c_void,
        )
    };
    let ok = got == 0;
    win.base = addr;
    win.len = if ok { len } else { 0 };
    ok
}

/// The stack word at `addr`, from `WINDOW`, and kept in the walk's record. `None` where it
/// cannot be read (the walk is then not kept).
#[inline(always)]
fn stack_word(w: &Walk, addr: u64) -> Option<u64> {
    if stack_word_global(addr) == 0 {
        return None;
    }
    Some(unsafe { read_volatile(addr_of!(w.word)) })
}

/// [`stack_word`]'s read: 1 where the word is in `Walk::word`. A global function: inline at
/// each of a step's reads, the record's bounds checks took 2,600 more instructions through the
/// verifier.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn stack_word_global(addr: u64) -> i64 {
    let (Some(w), Some(win)) = (WALK.get_ptr_mut(0), WINDOW.get_ptr_mut(0)) else {
        return 0;
    };
    let (w, win) = unsafe { (&mut *w, &mut *win) };
    let Some(c) = WALK_CACHE.get_ptr_mut(w.slot) else {
        return 0;
    };
    let c = unsafe { &mut *c };
    if addr & 7 != 0 {
        // No aligned word (no compiler leaves one on the stack): read alone, and not kept.
        c.reads.n = WALK_UNKEPT;
        return match unsafe { bpf_probe_read_user(addr as *const u64) } {
            Ok(v) => {
                w.word = v;
                1
            }
            Err(_) => 0,
        };
    }
    if addr < win.base || addr.wrapping_add(8) > win.base.wrapping_add(win.len) {
        // The rest of its page: one user read costs more than copying a page.
        let len = WINDOW_BYTES as u64 - (addr & (WINDOW_BYTES as u64 - 1));
        if !fill_window(win, addr, len) {
            c.reads.n = WALK_UNKEPT;
            return 0;
        }
    }
    let at = (addr.wrapping_sub(win.base) / 8) as usize;
    if at >= WINDOW_WORDS {
        return 0;
    }
    let v = win.words[at];
    w.word = v;
    c.reads.push(addr, v);
    1
}

/// The row covering file offset `off` in the table of `rows` rows at `first`: the last one
/// starting at or below it, as one word (0: none).
#[inline(always)]
fn unwind_find_row(first: u32, rows: u32, off: u64) -> u64 {
    if off > u32::MAX as u64 || rows == 0 || rows > 1 << UNWIND_SEARCH_STEPS {
        return 0;
    }
    let off = off as u32;
    let mut lo = first;
    let mut hi = first.wrapping_add(rows);
    let mut i = 0;
    while i < UNWIND_SEARCH_STEPS {
        if hi.wrapping_sub(lo) <= 1 {
            break;
        }
        let mid = lo + hi.wrapping_sub(lo) / 2;
        let Some(row) = UNWIND_ROWS.get_ptr(mid) else {
            return 0;
        };
        if unsafe { (*row).off } <= off {
            lo = mid;
        } else {
            hi = mid;
        }
        i += 1;
    }
    let Some(row) = UNWIND_ROWS.get_ptr(lo) else {
        return 0;
    };
    let word = unsafe { read_volatile(row as *const u64) };
    if (word as u32) <= off {
        word
    } else {
        0
    }
}

/// The code mapping holding `pc` in process `tgid` (generation `gen`), with its file's
/// table: from `TEXT_VMAS`, else from `bpf_find_vma` (then remembered). Else its error:
/// `-ENOENT` where no VMA holds it.
///
/// Where interrupts are off (the exception tracepoints, the perf overflow path),
/// `bpf_find_vma` works once per program run (its unlock waits in an irq_work), so a stack
/// that spans code mappings not yet met takes a few faults to be walked whole; userspace
/// fills `TEXT_VMAS` ahead for the process it was pointed at (-p).
#[inline(always)]
fn unwind_text_vma(pc: u64, tgid: u64, gen: u64) -> Result<*const TextVma, i64> {
    let key = TextKey {
        tgid: tgid as u32,
        gen: gen as u32,
        granule: (pc >> TEXT_GRANULE_SHIFT) as u32,
        _pad: 0,
    };
    if let Some(v) = TEXT_VMAS.get_ptr_mut(&key) {
        let v = unsafe { &mut *v };
        if v.start <= pc && pc < v.end {
            if v.table.state == TABLE_ASKED {
                // Userspace may have loaded it since.
                if let Some(t) = unsafe { UNWIND_FILES.get(&v.file) } {
                    v.table.first = t.first;
                    v.table.rows = t.rows;
                    v.table.state = t.state;
                }
            }
            return Ok(v);
        }
    }
    let out = VMA_FOUND.get_ptr_mut(0).ok_or(-ENOENT)?;
    // Filled in place by the callback: the stack is short (its callers' frames and this
    // one's count against the same 512 bytes on 6.1).
    unsafe { (*out).file.ino = 0 };
    let ret = find_vma(pc, text_vma_found, core::ptr::null_mut());
    if ret != 0 {
        return Err(ret);
    }
    let (first, rows, state) = unsafe {
        if (*out).file.ino != 0 {
            table_of(tgid as u32, &(*out).file, (*out).start, (*out).end)
        } else {
            (0, 0, TABLE_ANON)
        }
    };
    unsafe {
        (*out).table.first = first;
        (*out).table.rows = rows;
        (*out).table.state = state;
        let _ = TEXT_VMAS.insert(&key, &*out, 0);
    }
    Ok(out)
}

/// The table of `file` (first row, rows, state); asks userspace for it the first time any
/// process meets the file, here mapped at `start..end`.
#[inline(always)]
fn table_of(tgid: u32, file: &FileId, start: u64, end: u64) -> (u32, u32, u32) {
    if let Some(t) = unsafe { UNWIND_FILES.get(file) } {
        return (t.first, t.rows, t.state);
    }
    let asked = UnwindFile {
        first: 0,
        rows: 0,
        state: TABLE_ASKED,
        _pad: 0,
    };
    // Only the first to insert asks (another CPU may race here).
    let inserted = UNWIND_FILES.insert(file, &asked, BPF_NOEXIST as u64);
    if inserted.is_err_and(|e| e != -EEXIST) {
        return (0, 0, TABLE_FILES_FULL);
    }
    if inserted.is_ok() {
        match EVENTS.reserve::<UnwindNeed>(0) {
            Some(mut r) => {
                let need = r.as_mut_ptr();
                unsafe {
                    (*need).rec = REC_UNWIND;
                    (*need).pid = tgid;
                    (*need).vm_start = start;
                    (*need).vm_end = end;
                    (*need).file.ino = file.ino;
                    (*need).file.dev = file.dev;
                    (*need).file._pad = 0;
                }
                // Now, not with the next batch: until the table is in, this file's frames
                // are walked by frame pointer.
                r.submit(BPF_RB_FORCE_WAKEUP);
            }
            None => {
                // Asked again by the next frame in this file.
                let _ = UNWIND_FILES.remove(file);
                bump(CNT_RINGBUF_LOST, 1);
            }
        }
    }
    (0, 0, TABLE_ASKED)
}

/// `bpf_find_vma` callback for [`text_vma`]: the VMA's range and file, without its name.
#[inline(never)]
extern "C" fn text_vma_found(_task: *mut c_void, vma: *mut c_void, _ctx: *mut c_void) -> i64 {
    let Some(out) = VMA_FOUND.get_ptr_mut(0) else {
        return 0;
    };
    let vma = vma as u64;
    let start: u64 = read(vma, conf!(off.vma_vm_start));
    let pgoff: u64 = read(vma, conf!(off.vma_vm_pgoff));
    unsafe {
        (*out).start = start;
        (*out).end = read(vma, conf!(off.vma_vm_end));
        (*out).bias = (pgoff << 12).wrapping_sub(start);
    }
    let file: u64 = read(vma, conf!(off.vma_vm_file));
    if file != 0 {
        let inode: u64 = read(file, conf!(off.file_f_inode));
        let sb: u64 = read(inode, conf!(off.inode_i_sb));
        unsafe {
            (*out).file.ino = read(inode, conf!(off.inode_i_ino));
            (*out).file.dev = read(sb, conf!(off.sb_s_dev));
            (*out).file._pad = 0;
        }
    }
    0
}
