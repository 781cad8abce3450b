//! Small pieces every program uses: loss counters, atomics, probe reads, the task filter.

use crate::*;

pub(crate) const BPF_RB_AVAIL_DATA: u64 = 0;
pub(crate) const BPF_RB_NO_WAKEUP: u64 = 1;
pub(crate) const BPF_RB_FORCE_WAKEUP: u64 = 2;
pub(crate) const PAGE_MASK: u64 = !0xfff;

#[inline(always)]
pub(crate) fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
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

#[inline(always)]
pub(crate) fn read<T: Copy>(base: u64, off: u32) -> T {
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).unwrap_or(core::mem::zeroed()) }
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

#[inline(always)]
pub(crate) fn completing() -> bool {
    COMPLETING.get(0).is_some_and(|c| *c != 0)
}

#[inline(always)]
pub(crate) fn set_completing(on: bool) {
    if let Some(c) = COMPLETING.get_ptr_mut(0) {
        unsafe { *c = on as u32 };
    }
}
