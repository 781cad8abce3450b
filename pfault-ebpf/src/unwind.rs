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
//! fails) ends in a `FRAME_MARK` frame saying why.

use crate::*;

/// The lowest address user code can run at; a return address below it ends the walk.
const MIN_USER_PC: u64 = 4096;

/// `UNWIND_FILES.insert`'s error where another CPU inserted the file first.
const EEXIST: i32 = 17;

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
}

#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

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
    let regs = user_regs(current_task());
    if regs == 0 {
        return 0;
    }
    let Some(w) = WALK.get_ptr_mut(0) else {
        return 0;
    };
    let w = unsafe { &mut *w };
    w.pc = read(regs, conf!(off.regs_ip));
    w.sp = read(regs, conf!(off.regs_sp));
    w.bp = read(regs, conf!(off.regs_bp));
    w.n = 0;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    w.tgid = tgid as u64;
    w.gen = unsafe { EXEC_GEN.get(&tgid) }.map_or(0, |g| *g as u64);
    w.end = 0;
    w.exact = 0;
    w.by_fp = 0;
    if w.pc == 0 || w.pc >= USER_END {
        return 0;
    }
    walk_frames();
    bump(CNT_UNWIND_FRAMES, w.n);
    w.n as usize
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
        if let Some(v) = unwind_text_vma(pc, w.tgid, w.gen) {
            w.take_vma(unsafe { &*v });
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
                w.bp
            } else if w.n == 1 {
                // The faulting frame's registers are the task's own. (Told by `w.n`, not `n`:
                // keeping `n` live this long has it spilled, and 6.1's verifier then loses its
                // bound where it indexes the frames.)
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
                _ => match unsafe { bpf_probe_read_user(base.wrapping_add(off) as *const u64) } {
                    Ok(v) => v.wrapping_add(plus),
                    Err(_) => return stopped(STOP_UNREADABLE),
                },
            };
            (cfa, rbp)
        }
        CFA_RBP => (w.bp.wrapping_add(cfa_off as i64 as u64), rbp),
        CFA_PLT => {
            let pushed = if (w.pc & 15) >= cfa_off as u64 { 16 } else { 8 };
            (w.sp + pushed, rbp)
        }
        CFA_END => return 1,
        CFA_SIGNAL => {
            // The kernel's signal frame: the interrupted registers, from the ucontext at rsp
            // (on the signal stack, which need not lie above the interrupted one).
            let at = |off: u64| unsafe { bpf_probe_read_user((w.sp + off) as *const u64) };
            let (Ok(ip), Ok(sp), Ok(bp)) = (at(SIGFRAME_RIP), at(SIGFRAME_RSP), at(SIGFRAME_RBP)) else {
                return stopped(STOP_UNREADABLE);
            };
            if !(MIN_USER_PC..USER_END).contains(&ip) || sp == 0 || sp >= USER_END {
                return stopped(STOP_BAD_RA);
            }
            w.pc = ip;
            w.sp = sp;
            w.bp = bp;
            w.exact = 1;
            return 0;
        }
        _ => {
            // The frame pointer: [rbp] is the caller's rbp, [rbp + 8] the return address.
            // None (as `_start` leaves it) ends the stack.
            if w.bp == 0 {
                return 1;
            }
            // The walk goes on from the caller, by its CFI where it has some (Parca and the
            // OpenTelemetry profiler stop there): measured on the e2e workloads, node's
            // JavaScript frames lead by frame pointer into node's own code on 89% of its
            // faults, and all of those stacks reach _start; stopping would have cut 14 frames
            // from each and saved no stack a bad step spoils (a marker frame shows those).
            bump(CNT_UNWIND_FP, 1);
            bump(
                if w.end == 0 {
                    CNT_FP_NO_VMA
                } else {
                    CNT_FP_TABLE + (w.state as u32 & (TABLE_STATES - 1))
                },
                1,
            );
            w.by_fp = FRAME_BY_FP;
            (w.bp + 16, -2)
        }
    };
    // Callers' frames lie above: a CFA at or below the stack pointer is a bad row or a
    // corrupt stack, and would loop.
    if cfa <= w.sp || cfa >= USER_END {
        return stopped(STOP_BAD_CFA);
    }
    let Ok(ra) = (unsafe { bpf_probe_read_user((cfa - ra_below) as *const u64) }) else {
        return stopped(STOP_UNREADABLE);
    };
    if rbp != 0 {
        let at = if rbp == RBP_AT_RBP {
            w.bp
        } else {
            cfa.wrapping_add((rbp as i64 * 8) as u64)
        };
        w.bp = unsafe { bpf_probe_read_user(at as *const u64) }.unwrap_or(0);
    }
    if !(MIN_USER_PC..USER_END).contains(&ra) {
        // A null return address ends a stack (as a thread's first frame may leave it).
        return if ra == 0 { 1 } else { stopped(STOP_BAD_RA) };
    }
    w.pc = ra;
    w.sp = cfa;
    0
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
/// table: from `TEXT_VMAS`, else from `bpf_find_vma` (then remembered). `None` where no VMA
/// holds it.
///
/// Where interrupts are off (the exception tracepoints, the perf overflow path),
/// `bpf_find_vma` works once per program run (its unlock waits in an irq_work), so a stack
/// that spans code mappings not yet met takes a few faults to be walked whole; userspace
/// fills `TEXT_VMAS` ahead for the process it was pointed at (-p).
#[inline(always)]
fn unwind_text_vma(pc: u64, tgid: u64, gen: u64) -> Option<*const TextVma> {
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
            return Some(v);
        }
    }
    let out = VMA_FOUND.get_ptr_mut(0)?;
    // Filled in place by the callback: the stack is short (its callers' frames and this
    // one's count against the same 512 bytes on 6.1).
    unsafe { (*out).file.ino = 0 };
    let ret = find_vma(pc, text_vma_found, core::ptr::null_mut());
    if ret != 0 {
        return None;
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
    Some(out)
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
