//! Walks of the stacks the kernel side hands over ([`LateStack`]): faults whose walk met code
//! whose table was still being built (a library just loaded, read from a cold disk) or whose
//! mapping it could not look up (the mmap lock busy). The kernel side copies the registers
//! and the stack above the stack pointer, as perf's `--call-graph dwarf` does for every
//! sample; here the copy is walked by the same rows and the same rules as the kernel side's
//! walk (`pfault-ebpf/src/unwind.rs`), frame for frame, once the tables are in.

use std::sync::Arc;

use pfault_common::*;

/// A code mapping a walk is in, and its file's rows (`None`: walked by frame pointer).
#[derive(Clone)]
pub(crate) struct Code {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// File offset of an address = address + `bias` (wrapping).
    pub(crate) bias: u64,
    pub(crate) rows: Option<Arc<[UnwindRow]>>,
}

/// The row covering file offset `off`: the last one starting at or below it.
fn find_row(rows: &[UnwindRow], off: u64) -> Option<UnwindRow> {
    let off = u32::try_from(off).ok()?;
    let at = rows.partition_point(|r| r.off <= off);
    at.checked_sub(1).map(|i| rows[i])
}

/// The stack copy: words from the stack pointer up.
struct Copy<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl Copy<'_> {
    fn word(&self, addr: u64) -> Result<u64, u64> {
        let off = addr.checked_sub(self.base).ok_or(STOP_UNREADABLE)? as usize;
        let b = self.bytes.get(off..off + 8).ok_or(STOP_COPY_END)?;
        Ok(u64::from_ne_bytes(b.try_into().unwrap()))
    }
}

/// A walk's frames, leaf first, as the kernel side would have left them (`FRAME_BY_FP`, a
/// `FRAME_MARK` at a walk cut short).
pub(crate) struct Walked {
    pub(crate) frames: Vec<u64>,
    /// The faulting frame's CFA came from a register besides rsp and rbp (stack-clash
    /// probing): copies of the same stack with other registers may walk otherwise.
    pub(crate) by_register: bool,
}

/// Walks `late`'s user stack: `code` finds the mapping an address is in, or gives up the
/// walk (`E`).
pub(crate) fn walk<E>(
    late: &LateStack,
    mut code: impl FnMut(u64) -> Result<Option<Code>, E>,
) -> Result<Walked, E> {
    let regs = &late.regs;
    let len = (late.stack_len as usize).min(LATE_STACK_BYTES);
    let copy = Copy {
        base: regs[PT_REGS_SP],
        bytes: &late.stack[..len],
    };
    let (mut pc, mut sp, mut bp) = (regs[PT_REGS_IP], regs[PT_REGS_SP], regs[REG_RBP as usize]);
    let mut frames = Vec::new();
    let mut by_register = false;
    let walked = |frames, by_register| Ok(Walked { frames, by_register });
    if pc == 0 || pc >= USER_END {
        return walked(frames, by_register);
    }
    let (mut exact, mut by_fp) = (false, 0);
    let mut here: Option<Code> = None;
    loop {
        let n = frames.len();
        if n >= MAX_STACK - 1 {
            frames.push(FRAME_MARK | STOP_TRUNCATED);
            return walked(frames, by_register);
        }
        frames.push(pc | by_fp);
        by_fp = 0;
        // A return address is the instruction after the call: its row is the byte before's.
        let at = if n == 0 || exact { pc } else { pc - 1 };
        exact = false;
        if !here.as_ref().is_some_and(|c| c.start <= at && at < c.end) {
            here = code(at)?;
        }
        let row = here
            .as_ref()
            .and_then(|c| find_row(c.rows.as_deref()?, at.wrapping_add(c.bias)))
            .unwrap_or_default();
        by_register |= n == 0 && other_register(&row);
        match step(&copy, regs, n, row, pc, sp, bp) {
            Step::Caller { ra, cfa, rbp, fp } => {
                pc = ra;
                sp = cfa;
                bp = rbp;
                if fp {
                    by_fp = FRAME_BY_FP;
                }
            }
            Step::Signal { ip, rsp, rbp } => {
                (pc, sp, bp, exact) = (ip, rsp, rbp, true);
            }
            Step::End => return walked(frames, by_register),
            Step::Stop(why) => {
                frames.push(FRAME_MARK | why);
                return walked(frames, by_register);
            }
        }
    }
}

/// Whether `row` takes the CFA from a register other than rsp and rbp (in `step`, the
/// task's own at the faulting frame).
fn other_register(row: &UnwindRow) -> bool {
    matches!(row.cfa & CFA_KIND, CFA_REG | CFA_REG_X8 | CFA_DEREF)
        && !matches!(row.cfa >> 4, REG_RSP | REG_RBP)
}

enum Step {
    /// The caller: its pc, rsp and rbp; `fp` where found by the frame pointer.
    Caller { ra: u64, cfa: u64, rbp: u64, fp: bool },
    /// A signal frame's interrupted registers.
    Signal { ip: u64, rsp: u64, rbp: u64 },
    /// The outermost frame.
    End,
    /// Cut short (`STOP_*`).
    Stop(u64),
}

/// One frame's step by its row (frame `n`, at `pc` with `sp` and `bp`).
fn step(
    copy: &Copy,
    regs: &[u64; PT_REGS_WORDS],
    n: usize,
    row: UnwindRow,
    pc: u64,
    sp: u64,
    bp: u64,
) -> Step {
    let off = row.cfa_off as i64 as u64;
    let kind = row.cfa;
    let mut ra_below = 8;
    let mut fp = false;
    let (cfa, rbp) = match kind & CFA_KIND {
        CFA_RSP => (sp.wrapping_add(off), row.rbp),
        CFA_RSP_RA => {
            ra_below = 8 * (2 + (kind >> 4) as u64);
            (sp.wrapping_add(off), row.rbp)
        }
        CFA_REG | CFA_REG_X8 | CFA_DEREF | CFA_DEREF_RSP => {
            let (reg, plus) = if kind & CFA_KIND == CFA_DEREF_RSP {
                (REG_RSP, (kind >> 4) as u64 * 8)
            } else {
                (kind >> 4, 0)
            };
            let base = match reg {
                REG_RSP => sp,
                REG_RBP => bp,
                // The faulting frame's registers are the task's own; a caller's are not known.
                r if n == 0 => regs[r as usize],
                _ => return Step::Stop(STOP_REGISTER),
            };
            let cfa = match kind & CFA_KIND {
                CFA_REG => base.wrapping_add(off),
                CFA_REG_X8 => base.wrapping_add(off << 3),
                _ => match copy.word(base.wrapping_add(off)) {
                    Ok(v) => v.wrapping_add(plus),
                    Err(why) => return Step::Stop(why),
                },
            };
            (cfa, row.rbp)
        }
        CFA_RBP => (bp.wrapping_add(off), row.rbp),
        CFA_PLT => {
            let pushed = if (pc & 15) >= off { 16 } else { 8 };
            (sp + pushed, row.rbp)
        }
        CFA_END => return Step::End,
        CFA_SIGNAL => {
            let word = |o| copy.word(sp + o);
            let (ip, rsp, rbp) = match (word(SIGFRAME_RIP), word(SIGFRAME_RSP), word(SIGFRAME_RBP)) {
                (Ok(ip), Ok(rsp), Ok(rbp)) => (ip, rsp, rbp),
                (Err(why), ..) | (_, Err(why), _) | (.., Err(why)) => return Step::Stop(why),
            };
            if !(4096..USER_END).contains(&ip) || rsp == 0 || rsp >= USER_END {
                return Step::Stop(STOP_BAD_RA);
            }
            return Step::Signal { ip, rsp, rbp };
        }
        _ => {
            // No row: the frame pointer, [rbp] the caller's rbp, [rbp + 8] the return
            // address; none ends the stack.
            if bp == 0 {
                return Step::End;
            }
            fp = true;
            (bp.wrapping_add(16), -2)
        }
    };
    if cfa <= sp || cfa >= USER_END {
        return Step::Stop(STOP_BAD_CFA);
    }
    let ra = match copy.word(cfa - ra_below) {
        Ok(ra) => ra,
        Err(why) => return Step::Stop(why),
    };
    let bp = if rbp == 0 {
        bp
    } else {
        let at = if rbp == RBP_AT_RBP {
            bp
        } else {
            cfa.wrapping_add((rbp as i64 * 8) as u64)
        };
        copy.word(at).unwrap_or(0)
    };
    if !(4096..USER_END).contains(&ra) {
        return if ra == 0 {
            Step::End
        } else {
            Step::Stop(STOP_BAD_RA)
        };
    }
    Step::Caller { ra, cfa, rbp: bp, fp }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack at `sp` holding `words`, with the given registers.
    fn late(ip: u64, sp: u64, bp: u64, words: &[u64]) -> Box<LateStack> {
        // SAFETY: all-zero bytes are a valid (Pod) LateStack.
        let mut l: Box<LateStack> = Box::new(unsafe { std::mem::zeroed() });
        l.regs[PT_REGS_IP] = ip;
        l.regs[PT_REGS_SP] = sp;
        l.regs[REG_RBP as usize] = bp;
        for (i, w) in words.iter().enumerate() {
            l.stack[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        l.stack_len = (words.len() * 8) as u32;
        l
    }

    fn row(off: u32, cfa: u8, cfa_off: i16, rbp: i8) -> UnwindRow {
        UnwindRow {
            off,
            cfa_off,
            cfa,
            rbp,
        }
    }

    /// The frames of `l` where one file is mapped at 0x10000 (offset 0), whose rows are
    /// `rows`, and nothing else.
    fn walked(l: &LateStack, rows: Vec<UnwindRow>) -> Vec<u64> {
        walk_in(l, rows).frames
    }

    fn walk_in(l: &LateStack, rows: Vec<UnwindRow>) -> Walked {
        let rows: Arc<[UnwindRow]> = rows.into();
        let code = |pc| {
            Ok::<_, ()>((0x10000..0x20000).contains(&pc).then(|| Code {
                start: 0x10000,
                end: 0x20000,
                bias: 0u64.wrapping_sub(0x10000),
                rows: Some(rows.clone()),
            }))
        };
        walk(l, code).unwrap()
    }

    #[test]
    fn frames_follow_the_rows_and_end_where_the_cfi_says() {
        // leaf at 0x10100 (frameless: CFA = rsp + 8), its caller at 0x10200 (rbp-based
        // frame: CFA = rbp + 16, rbp saved at CFA - 16), whose caller is _start (CFA_END).
        let rows = vec![
            row(0x100, CFA_RSP, 8, 0),
            row(0x180, CFA_NONE, 0, 0),
            row(0x200, CFA_RBP, 16, -2),
            row(0x280, CFA_NONE, 0, 0),
            row(0x300, CFA_END, 0, 0),
        ];
        let sp = 0x7fff_0000;
        // [sp] return into the caller; the caller's frame: saved rbp, return into _start.
        let words = [0x10210, 0, 0, 0, 0x10305];
        let l = late(0x10100, sp, sp + 24, &words);
        // The caller's frame: rbp = sp + 24, so [rbp] = 0 (the caller's rbp), [rbp + 8] its
        // return address.
        assert_eq!(walked(&l, rows), vec![0x10100, 0x10210, 0x10305]);
    }

    #[test]
    fn code_without_rows_takes_a_frame_pointer_step_and_marks_its_caller() {
        let sp = 0x7fff_0000;
        // rbp -> [saved rbp = 0, return address 0x10305 (_start's row)].
        let words = [0, 0, 0x10305];
        let l = late(0x50000, sp, sp + 8, &words);
        let rows = vec![row(0x300, CFA_END, 0, 0)];
        assert_eq!(walked(&l, rows), vec![0x50000, 0x10305 | FRAME_BY_FP]);
    }

    #[test]
    fn a_word_above_the_copy_ends_the_walk_with_a_marker() {
        let rows = vec![row(0x100, CFA_RSP, 64, 0)];
        let l = late(0x10100, 0x7fff_0000, 0, &[0; 4]);
        assert_eq!(walked(&l, rows), vec![0x10100, FRAME_MARK | STOP_COPY_END]);
    }

    #[test]
    fn a_cfa_in_another_register_is_the_tasks_own_at_the_leaf_only() {
        // CFA = r11 + 8 (REG 6 in pt_regs order) at the leaf.
        let rows = vec![
            row(0x100, CFA_REG | 6 << 4, 8, 0),
            row(0x200, CFA_REG | 6 << 4, 8, 0),
        ];
        let sp = 0x7fff_0000;
        let mut l = late(0x10100, sp, 0, &[0, 0, 0x10210, 0]);
        l.regs[6] = sp + 16;
        assert_eq!(
            walked(&l, rows.clone()),
            vec![0x10100, 0x10210, FRAME_MARK | STOP_REGISTER]
        );
        assert!(walk_in(&l, rows).by_register);
        assert!(!walk_in(&l, Vec::new()).by_register, "no rows: by frame pointer");
    }
}
