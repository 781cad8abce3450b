//! What a faulting address is mapped to: file, inode and offset, or which anonymous memory.

use crate::*;

/// Fills `m` from a `struct vm_area_struct *`: file, inode and offset, or which kind of
/// anonymous memory (heap and stack as /proc/PID/maps tells them apart). Returns the VMA's
/// end and page offset.
#[inline(always)]
pub(crate) fn read_vma(vma: u64, addr: u64, m: &mut Mapping) -> (u64, u64) {
    let start: u64 = read(vma, conf!(off.vma_vm_start));
    let end: u64 = read(vma, conf!(off.vma_vm_end));
    let file: u64 = read(vma, conf!(off.vma_vm_file));
    let pgoff: u64 = read(vma, conf!(off.vma_vm_pgoff));
    m.vm_start = start;
    if file != 0 {
        m.kind = MAP_FILE;
        m.offset = (pgoff << 12) + ((addr & PAGE_MASK) - start);
        let inode: u64 = read(file, conf!(off.file_f_inode));
        m.ino = read(inode, conf!(off.inode_i_ino));
        let sb: u64 = read(inode, conf!(off.inode_i_sb));
        m.dev = read(sb, conf!(off.sb_s_dev));
        let dentry: u64 = read(file, conf!(off.file_dentry));
        let name: u64 = read(dentry, conf!(off.dentry_name));
        unsafe {
            let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut m.name);
        }
    } else {
        let mm: u64 = read(vma, conf!(off.vma_vm_mm));
        let start_brk: u64 = read(mm, conf!(off.mm_start_brk));
        let brk: u64 = read(mm, conf!(off.mm_brk));
        let start_stack: u64 = read(mm, conf!(off.mm_start_stack));
        m.kind = if mm != 0 && start <= brk && end >= start_brk {
            MAP_HEAP
        } else if mm != 0 && start <= start_stack && end >= start_stack {
            MAP_STACK
        } else {
            MAP_ANON
        };
    }
    (end, pgoff)
}

#[repr(C)]
pub(crate) struct VmaCtx {
    pub(crate) addr: u64,
    pub(crate) end: u64,
    pub(crate) pgoff: u64,
    pub(crate) vm_flags: u64,
    pub(crate) map: Mapping,
}

/// `bpf_find_vma` callback. Not `no_mangle`: the verifier wants a static function.
#[inline(never)]
pub(crate) extern "C" fn vma_found(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    let ctx = unsafe { &mut *(ctx as *mut VmaCtx) };
    (ctx.end, ctx.pgoff) = read_vma(vma as u64, ctx.addr, &mut ctx.map);
    0
}

/// [`vma_found`], and the VMA's flags: for [`notify_map`] alone. One more unknown value in
/// the fault paths' lookups multiplies the states the verifier walks in each of their
/// programs.
#[inline(never)]
pub(crate) extern "C" fn vma_found_with_flags(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut VmaCtx) };
    (c.end, c.pgoff) = read_vma(vma as u64, c.addr, &mut c.map);
    c.vm_flags = read(vma as u64, conf!(off.vma_vm_flags));
    0
}

/// [`kernel::find_vma`] on the current task, into `v` (whose `addr` says where): its result (0, or
/// -ENOENT where no VMA holds `addr`). `v` is filled in place: a struct this size returned by
/// value is copied byte by byte, and the verifier walks every byte.
#[inline(always)]
fn find_vma(v: &mut VmaCtx, with_flags: bool) -> i64 {
    let found: VmaCallback = if with_flags {
        vma_found_with_flags
    } else {
        vma_found
    };
    kernel::find_vma(v.addr, found, v as *mut VmaCtx as *mut c_void)
}

/// A `VmaCtx` to look `addr` up with.
#[inline(always)]
fn vma_ctx(addr: u64) -> VmaCtx {
    VmaCtx {
        addr,
        end: 0,
        pgoff: 0,
        vm_flags: 0,
        map: unsafe { core::mem::zeroed() },
    }
}

/// The mapping of the parked fault `p`, from the thread's cache or `bpf_find_vma`.
///
/// `bpf_find_vma` costs more than the fault itself where interrupts are off (the exception
/// tracepoints, the perf overflow path): it defers its unlock to an irq_work, a
/// self-interrupt. Hence the lookup at completion, and the cache.
#[inline(always)]
pub(crate) fn mapping_of(p: *mut Pending) {
    let out = unsafe { &mut (*p).map };
    let addr = unsafe { (*p).addr };
    let task = unsafe { bpf_get_current_task() };
    let mm: u64 = read(task, conf!(off.task_mm));
    let seq_off = conf!(off.mm_lock_seq);
    // Odd: a writer holds the mmap lock (or the kernel has no sequence): do not cache.
    let seq: u32 = if seq_off != 0 { read(mm, seq_off) } else { 1 };
    unsafe {
        let c = &(*p).cache;
        if seq & 1 == 0
            && (*p).cache_mm == mm
            && (*p).cache_seq == seq
            && c.vm_start <= addr
            && addr < (*p).cache_end
        {
            copy_mapping(out, c);
            if out.kind == MAP_FILE {
                out.offset = ((*p).cache_pgoff << 12) + ((addr & PAGE_MASK) - c.vm_start);
            }
            return;
        }
    }
    let mut v = vma_ctx(addr);
    let ret = find_vma(&mut v, false);
    if ret == 0 {
        if seq & 1 == 0 {
            unsafe {
                (*p).cache_mm = mm;
                (*p).cache_seq = seq;
                (*p).cache_end = v.end;
                (*p).cache_pgoff = v.pgoff;
                copy_mapping(addr_of_mut!((*p).cache), &v.map);
            }
        }
    } else if ret == -2 {
        v.map.kind = MAP_NONE;
    } else {
        count(CNT_VMA_BUSY);
    }
    copy_mapping(out, &v.map);
}

/// `VM_EXEC` in `vm_area_struct.vm_flags`.
const VM_EXEC: u64 = 0x4;

/// Sends the file mapping that holds `addr` (`CFG_NOTIFY_MAPS`); anonymous memory is left out
/// but for code (a JIT's), which may land where a file was mapped before and must not be
/// taken for it. A global function: the verifier checks it once, not at each of exec's two
/// calls.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn notify_map(tgid: u32, addr: u64) -> i64 {
    let mut v = vma_ctx(addr);
    let ret = find_vma(&mut v, true);
    if ret != 0 || (v.map.kind != MAP_FILE && v.vm_flags & VM_EXEC == 0) {
        return 0;
    }
    // The VMA may start below `addr` (merged with its neighbour): name its own start.
    v.map.offset = v.pgoff << 12;
    // Written in place in the ring buffer: a MapSeen on the stack beside `v` put the exec
    // program, with a comm filter, past the 512 bytes a call chain may use.
    let Some(mut seen) = EVENTS.reserve::<MapSeen>(0) else {
        count(CNT_RINGBUF_LOST);
        return 0;
    };
    let s = seen.as_mut_ptr();
    unsafe {
        (*s).rec = REC_MAP;
        (*s).pid = tgid;
        (*s).vm_end = v.end;
        copy_mapping(addr_of_mut!((*s).map), &v.map);
        (*s).exec = (v.vm_flags & VM_EXEC != 0) as u8;
    }
    // Code is mapped rarely, and its table is wanted before its first faults: the reader is
    // woken now, not at its next poll.
    let code = v.vm_flags & VM_EXEC != 0;
    seen.submit(if code { BPF_RB_FORCE_WAKEUP } else { wakeup_flag() });
    // A global function must return a scalar; nothing reads it.
    0
}
