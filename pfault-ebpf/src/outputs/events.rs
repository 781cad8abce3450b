//! Ring-buffer records: one per fault (`trace`) and process notices.

use crate::*;

/// Tells userspace of a process to note the maps of. Woken at once: it must read them while
/// the process lives.
#[inline(always)]
pub(crate) fn announce(seen: TaskSeen) {
    if EVENTS.output::<TaskSeen>(&seen, BPF_RB_FORCE_WAKEUP).is_err() {
        count(CNT_RINGBUF_LOST);
    }
}

/// Wakes the reader only when a batch waits: a wakeup per record is an irq_work per fault.
/// The reader also polls, so a quiet trickle is still printed promptly.
#[inline(always)]
pub(crate) fn wakeup_flag() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= conf!(wakeup_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
pub(crate) fn fill_event(e: *mut FaultEvent, p: *const Pending, d: &Done) {
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
        (*e).page_shift = d.page_shift;
        (*e)._pad2 = [0; 5];
        (*e).rec = REC_FAULT;
        (*e).comm = d.comm;
        copy_mapping(addr_of_mut!((*e).map), addr_of!((*p).map));
    }
}

#[inline(always)]
pub(crate) fn emit_event(ctx: *mut c_void, p: *const Pending, d: &Done) {
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
                let n = if flags & CFG_UNWIND_CFI != 0 {
                    copy_unwound(addr_of_mut!((*s).ustack) as *mut c_void)
                } else {
                    bpf_get_stack(
                        ctx,
                        addr_of_mut!((*s).ustack) as *mut c_void,
                        BYTES,
                        BPF_F_USER_STACK as u64,
                    )
                };
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

/// Unwinds the user stack from its CFI and copies its frames to `dst` (room for
/// `MAX_STACK`); returns their bytes.
#[inline(always)]
fn copy_unwound(dst: *mut c_void) -> i64 {
    let mut n = unwind_user();
    if n > MAX_STACK {
        n = MAX_STACK;
    }
    let Some(src) = STACK_SCRATCH.get_ptr(USER_SCRATCH) else {
        return 0;
    };
    let bytes = (n * 8) as u32;
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst,
            bytes,
            addr_of!((*src).frames) as *const c_void,
        )
    };
    if ret == 0 {
        bytes as i64
    } else {
        0
    }
}
