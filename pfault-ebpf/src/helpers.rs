//! Small pieces every program uses: loss counters, atomics, probe reads, the task filter.

use crate::*;

pub(crate) const BPF_RB_AVAIL_DATA: u64 = 0;
pub(crate) const BPF_RB_RING_SIZE: u64 = 1;
pub(crate) const BPF_RB_NO_WAKEUP: u64 = 1;
pub(crate) const BPF_RB_FORCE_WAKEUP: u64 = 2;
pub(crate) const PAGE_MASK: u64 = !0xfff;

/// Counts one loss of kind `idx`; the first on each CPU is also logged (`--bpf-log`).
#[inline(always)]
pub(crate) fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        let first = unsafe { *p } == 0;
        unsafe { *p += 1 };
        if first {
            log_first_loss(idx);
        }
    }
}

/// Says what went wrong the first time it does on a CPU. Off (a load of `AYA_LOG_LEVEL` on
/// a loss path, nothing per fault) unless userspace asked for the kernel side's log.
#[inline(never)]
fn log_first_loss(idx: u32) {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    match idx {
        CNT_RINGBUF_LOST => warn!(&(), "cpu {}: ring buffer full, records dropped", cpu),
        CNT_PENDING_FULL => warn!(
            &(),
            "cpu {}: no per-thread storage (out of memory, or a probe nested in another): faults not tracked",
            cpu
        ),
        CNT_STACK_LOST => warn!(
            &(),
            "cpu {}: ring buffer full, a new stack's frames dropped (the next fault on it retries)", cpu
        ),
        CNT_AGG_FULL => warn!(&(), "cpu {}: a count map is full, counts dropped", cpu),
        CNT_VMA_BUSY => warn!(&(), "cpu {}: mmap lock contended, a mapping left unknown", cpu),
        _ => {}
    }
}

/// `*dst = *src` for a `Mapping`, a word at a time. A plain assignment becomes a call to
/// `memmove`, which copies byte by byte: the verifier walks each of the 96 bytes, in every
/// state that reaches it.
#[inline(always)]
pub(crate) fn copy_mapping(dst: *mut Mapping, src: *const Mapping) {
    const WORDS: usize = size_of::<Mapping>() / 8;
    let (d, s) = (dst as *mut u64, src as *const u64);
    let mut i = 0;
    while i < WORDS {
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
        i += 1;
    }
}

/// `map[key]`, inserted as `init` if absent. `None` (counted) when the map is full.
#[inline(always)]
pub(crate) fn get_or_insert<K, V>(map: &HashMap<K, V>, key: &K, init: &V) -> Option<*mut V> {
    if let Some(v) = map.get_ptr_mut(key) {
        return Some(v);
    }
    // Another CPU may insert it first: BPF_NOEXIST then fails, and the lookup finds theirs.
    let _ = map.insert(key, init, BPF_NOEXIST as u64);
    let v = map.get_ptr_mut(key);
    if v.is_none() {
        count(CNT_AGG_FULL);
    }
    v
}

#[inline(always)]
pub(crate) fn atomic_add(p: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// A kernel value at `base + off`; zero where the read faults. The helper zeroes its
/// destination itself on a fault, so nothing branches on its result: a branch per read
/// doubled the paths the verifier walks after it (half of start-up was verification).
#[inline(always)]
pub(crate) fn read<T: Copy>(base: u64, off: u32) -> T {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            v.as_mut_ptr() as *mut c_void,
            size_of::<T>() as u32,
            (base + off as u64) as *const c_void,
        );
        v.assume_init()
    }
}

/// The cgroup v2 id of `task` (any task, not only the current one).
#[inline(always)]
pub(crate) fn cgroup_of(task: u64) -> u64 {
    let css: u64 = read(task, conf!(off.task_cgroups));
    let cgrp: u64 = read(css, conf!(off.css_set_dfl_cgrp));
    let kn: u64 = read(cgrp, conf!(off.cgroup_kn));
    read(kn, conf!(off.kernfs_node_id))
}

/// The current task's (tgid, tid), if it is one the user asked for.
#[inline(always)]
pub(crate) fn wanted_current() -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    wanted_task(tgid, tid).then_some((tgid, tid))
}

/// Is this task one the user asked for?
#[inline(always)]
pub(crate) fn wanted_task(tgid: u32, tid: u32) -> bool {
    if tgid == conf!(self_tgid) {
        return false;
    }
    let want_tgid = conf!(tgid);
    if want_tgid != 0 && want_tgid != tgid {
        return false;
    }
    let want_tid = conf!(tid);
    if want_tid != 0 && want_tid != tid {
        return false;
    }
    let flags = conf!(flags);
    if flags & CFG_FOLLOW != 0 && TRACED.get_ptr(tgid).is_none() {
        return false;
    }
    if flags & CFG_FILTER_CGROUP != 0
        && unsafe { bpf_get_current_ancestor_cgroup_id(conf!(cgroup_level) as i32) } != conf!(cgroup_id)
    {
        return false;
    }
    if flags & CFG_FILTER_COMM != 0 {
        let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        let want = conf!(comm);
        let mut i = 0;
        while i < COMM_LEN {
            if comm[i] != want[i] {
                return false;
            }
            if comm[i] == 0 {
                break;
            }
            i += 1;
        }
    }
    true
}
