//! What the kernel side counts in maps, and its loss counters.

use crate::*;

/// Indexes of the per-CPU `COUNTERS` array: everything the kernel side could not record.
pub const CNT_RINGBUF_LOST: u32 = 0;
pub const CNT_PENDING_FULL: u32 = 1;
/// A new stack's frames did not fit in the ring buffer: its faults count as `STACK_LOST`.
pub const CNT_STACK_LOST: u32 = 2;
pub const CNT_AGG_FULL: u32 = 4;
pub const CNT_VMA_BUSY: u32 = 5;
/// Not losses: user frames the CFI unwinder had no row for (anonymous or JIT code, a binary
/// without CFI, a table still loading), unwound by the frame pointer instead.
pub const CNT_UNWIND_FP: u32 = 6;
/// User frames the CFI unwinder walked.
pub const CNT_UNWIND_FRAMES: u32 = 7;
/// Of `CNT_UNWIND_FP`, by why: `CNT_FP_TABLE + ` the state of the frame's table (`TABLE_*`;
/// `TABLE_READY`: its table has no row for the frame, or one with a rule pfault cannot
/// express), or `CNT_FP_NO_VMA` where its code mapping was not found (the mmap lock busy).
pub const CNT_FP_TABLE: u32 = 8;
pub const CNT_FP_NO_VMA: u32 = CNT_FP_TABLE + TABLE_STATES;
/// Of `CNT_UNWIND_FRAMES`, those of a thread's last walk taken again: the walk started from
/// the same registers and found the same stack words.
pub const CNT_UNWIND_KEPT: u32 = CNT_FP_NO_VMA + 1;
/// User stacks sent to userspace to be walked there (`LateStack`): the walk met code whose
/// table was still loading, or whose mapping it could not look up.
pub const CNT_UNWIND_LATE: u32 = CNT_UNWIND_KEPT + 1;
/// Stacks that would have been sent so, but the ring buffer was three quarters full: counted
/// as the kernel side walked them.
pub const CNT_UNWIND_LATE_LOST: u32 = CNT_UNWIND_LATE + 1;
pub const CNT_MAX: u32 = CNT_UNWIND_LATE_LOST + 1;

/// Stack hashes that stand for no stack: none taken (not asked for, or not walkable).
pub const STACK_NONE: u64 = 0;
/// A new stack whose frames the ring buffer had no room for.
pub const STACK_LOST: u64 = 1;
/// A fault the kernel takes while it writes a new program image during execve (bss, the
/// argument and auxv tables): the user registers are still the old program's.
pub const STACK_EXEC: u64 = 2;
/// Real stacks hash to this or above.
pub const STACK_FIRST: u64 = 3;

/// A stack's name: FxHash steps over its frames, leaf first (a bijection of the state for
/// each frame, so stacks of one depth that differ in any frame never collide), then the depth
/// and murmur3's finalizer. The kernel side names the stacks it walks so, and userspace the
/// stacks it walks from a copy ([`LateStack`]): the same frames are one stack either way.
#[inline(always)]
pub fn stack_hash_start(user: bool) -> u64 {
    if user {
        0x9e37_79b9_7f4a_7c15
    } else {
        0xc2b2_ae3d_27d4_eb4f
    }
}

#[inline(always)]
pub fn stack_hash_step(h: u64, frame: u64) -> u64 {
    (h.rotate_left(5) ^ frame).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// The hash of `n` frames whose steps left `h`: never one of the `STACK_*` values below
/// `STACK_FIRST`.
#[inline(always)]
pub fn stack_hash_end(mut h: u64, n: u64) -> u64 {
    h ^= n;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    if h < STACK_FIRST {
        h += STACK_FIRST;
    }
    h
}

/// What `stackcount` counts faults by. Stacks are named by a 64-bit hash of their frames; the
/// frames go to userspace once per process and stack ([`StackFrames`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackKey {
    /// Always kept: a user stack is symbolized against its process's mappings.
    pub tgid: u32,
    pub kind: u32,
    pub ustack: u64,
    pub kstack: u64,
    pub comm: [u8; COMM_LEN],
}
pod!(StackKey);

/// A `STACK_COUNTS` value, under a 64-bit hash of its key ([`stack_key_hash`]): an 8-byte
/// key hashes and compares faster than the whole [`StackKey`] on every fault.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackCount {
    pub key: StackKey,
    pub count: u64,
    /// Entry-to-completion time of the faults counted, summed (faults timed at entry only).
    pub latency_ns: u64,
    /// Bytes of the pages they mapped (`CFG_PAGE_SIZE`).
    pub bytes: u64,
}
pod!(StackCount);

/// The `STACK_COUNTS` key of `k`. Each step is a bijection of the state, so keys that differ
/// in one field never collide; any two collide with probability 2^-64.
#[inline(always)]
pub fn stack_key_hash(k: &StackKey, comm: [u64; 2]) -> u64 {
    #[inline(always)]
    fn mix(h: u64, v: u64) -> u64 {
        let h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    let h = mix(k.ustack, k.kstack.rotate_left(17));
    let h = mix(h, (k.tgid as u64) << 32 | k.kind as u64);
    mix(mix(h, comm[0]), comm[1])
}

/// A comm as the two words [`stack_key_hash`] takes.
#[inline(always)]
pub fn comm_words(comm: &[u8; COMM_LEN]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&comm[..8]);
    hi.copy_from_slice(&comm[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

/// Key of `STACKS_SENT`: a (process, stack) whose frames userspace has been sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SentKey {
    pub tgid: u32,
    pub _pad: u32,
    pub hash: u64,
}
pod!(SentKey);

/// Key of the `FILE_COUNTS` map (`ffaults`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub tgid: u32,
    pub dev: u32,
    pub ino: u64,
    /// `MAP_*`
    pub map_kind: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}
pod!(FileKey);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileCounts {
    /// Indexed by `KIND_*`.
    pub counts: [u64; 3],
    /// Bytes of the pages the faults of `counts` mapped, by kind (`CFG_PAGE_SIZE`).
    pub bytes: [u64; 3],
    /// The process's cgroup v2 id when the file was first counted (`CFG_BY_CGROUP`).
    pub cgroup: u64,
    pub name: [u8; NAME_LEN],
}
pod!(FileCounts);

/// Key of the `PROC_STATS` map (`stat`, `top`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcKey {
    pub tgid: u32,
    /// 0 unless counting per thread.
    pub tid: u32,
}
pod!(ProcKey);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    /// Indexed by `KIND_*`.
    pub counts: [u64; 3],
    /// Of `counts`, the faults raised in kernel mode (timed faults, or `CFG_ACCOUNTED_MODES`).
    pub kernel: [u64; 3],
    pub latency_sum_ns: u64,
    /// Updated without atomics: two CPUs racing may keep the smaller of two new maxima.
    pub latency_max_ns: u64,
    /// Bytes of the pages the minor and major faults mapped (`CFG_PAGE_SIZE`).
    pub bytes: u64,
    /// The process's name (its main thread's) when its threads' counts were last folded in;
    /// the thread's own name in a per-thread row.
    pub comm: [u8; COMM_LEN],
    /// The process's (or thread's) cgroup v2 id when last folded (`CFG_BY_CGROUP`).
    pub cgroup: u64,
    /// Latency of completed faults, log-linear buckets (see [`hist_bucket`]).
    pub hist: [u64; HIST_BUCKETS],
}
pod!(ProcStats);

/// Bucket of a latency in the log-linear histogram: exact below `HIST_SUB`, then `HIST_SUB`
/// buckets per power of two. Written without `leading_zeros` (no BPF instruction for it).
#[inline(always)]
pub fn hist_bucket(v: u64) -> usize {
    const SUB: u64 = HIST_SUB as u64;
    const BITS: u64 = HIST_SUB_BITS as u64;
    if v < SUB {
        return v as usize;
    }
    // floor(log2(v)) by binary search: six bounded steps the verifier accepts.
    let mut lg = 0u64;
    let mut x = v;
    if x >= 1 << 32 {
        x >>= 32;
        lg += 32;
    }
    if x >= 1 << 16 {
        x >>= 16;
        lg += 16;
    }
    if x >= 1 << 8 {
        x >>= 8;
        lg += 8;
    }
    if x >= 1 << 4 {
        x >>= 4;
        lg += 4;
    }
    if x >= 1 << 2 {
        x >>= 2;
        lg += 2;
    }
    if x >= 1 << 1 {
        lg += 1;
    }
    // The power of two picks the group, the HIST_SUB_BITS bits below the top one the bucket.
    let idx = SUB * (lg + 1 - BITS) + ((v >> (lg - BITS)) & (SUB - 1));
    if idx >= HIST_BUCKETS as u64 {
        HIST_BUCKETS - 1
    } else {
        idx as usize
    }
}

/// Smallest latency that falls in bucket `idx`.
pub fn hist_bucket_floor(idx: usize) -> u64 {
    if idx < HIST_SUB {
        return idx as u64;
    }
    let lg = (idx / HIST_SUB) as u32 + HIST_SUB_BITS - 1;
    let sub = (idx % HIST_SUB) as u64;
    (HIST_SUB as u64 + sub) << (lg - HIST_SUB_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_buckets_are_monotonic_and_floors_match() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let b = hist_bucket(v);
            assert!(b >= last, "bucket went down at {v}");
            assert!(hist_bucket_floor(b) <= v, "floor above value at {v}");
            assert_eq!(hist_bucket(hist_bucket_floor(b)), b);
            last = b;
        }
        assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
    }
}
