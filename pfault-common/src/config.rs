//! What userspace hands the programs at load time: `CONFIG` and its flag bits.

use crate::*;

/// `Config::flags` bits.
pub const CFG_FILTER_COMM: u32 = 1 << 0;
/// Filter by the `TRACED` map of tgids (a command and its children).
pub const CFG_FOLLOW: u32 = 1 << 1;
pub const CFG_MAPPING: u32 = 1 << 2;
pub const CFG_USTACK: u32 = 1 << 3;
pub const CFG_KSTACK: u32 = 1 << 4;
/// One ring-buffer record per fault (`trace`).
pub const CFG_OUT_EVENTS: u32 = 1 << 5;
/// Counts per stack (`stackcount`).
pub const CFG_OUT_STACKS: u32 = 1 << 6;
/// Counts per file (`ffaults`).
pub const CFG_OUT_FILES: u32 = 1 << 7;
/// Counts and latency per process (`stat`, `top`).
pub const CFG_OUT_PROCS: u32 = 1 << 8;
/// Aggregations keyed by thread, not process.
pub const CFG_PER_THREAD: u32 = 1 << 9;

/// Send a [`TaskSeen`] record on a thread's first fault and on exec, so userspace can read
/// its process's mappings while it lives (stacks and paths still resolve after it exits).
pub const CFG_NOTIFY_TASKS: u32 = 1 << 11;

/// Tracepoint path, stack counts only: count at completion alone, with stacks walked from the
/// fault's own registers; no entry probe (so no error faults and no latency).
pub const CFG_COMPLETION_ONLY: u32 = 1 << 12;

/// `stat` without latencies: minor and major counts come from the threads' own fault
/// accounting (`task_struct.min_flt`/`maj_flt`, read when counts are folded), so no probe runs
/// at completion. The exception tracepoints only check that the thread's previous fault was
/// accounted: one that was not is an error.
pub const CFG_ACCOUNTED: u32 = 1 << 13;

/// Send a [`MapSeen`] record for each file a wanted process maps (`mmap`), so that its
/// stacks name their libraries even when it exits before userspace reads its maps.
pub const CFG_NOTIFY_MAPS: u32 = 1 << 14;

/// Only tasks in one cgroup v2 and its descendants (`Config::cgroup_id`).
pub const CFG_FILTER_CGROUP: u32 = 1 << 15;
/// Per-process and per-file rows note their process's cgroup v2 id (`--by-cgroup`).
pub const CFG_BY_CGROUP: u32 = 1 << 16;
/// Walk user stacks with the binaries' CFI (`UNWIND_*` maps), the frame pointer where there is
/// none; else `bpf_get_stack`'s frame-pointer walk.
pub const CFG_UNWIND_CFI: u32 = 1 << 17;
/// Note the size of the page each completed fault mapped (4 KiB, 2 MiB, 1 GiB), from the
/// process's page tables after the fault (`Config::page_offset`).
pub const CFG_PAGE_SIZE: u32 = 1 << 18;
/// With `CFG_ACCOUNTED`: the accounting's moves between two exceptions are the first one's,
/// and count as kernel-mode faults (`ProcStats::kernel`) when it was raised in kernel mode.
/// The exporter's mode label, with neither a completion probe nor a clock read.
pub const CFG_ACCOUNTED_MODES: u32 = 1 << 19;

/// `Config::modes` bits.
pub const MODE_USER: u32 = 1;
pub const MODE_KERNEL: u32 = 2;

/// Kernel struct field offsets and enum values, read from the running kernel's BTF at load
/// time (aya's Rust programs cannot carry CO-RE relocations). Zero means "not found".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Offsets {
    pub vma_vm_start: u32,
    pub vma_vm_end: u32,
    pub vma_vm_pgoff: u32,
    pub vma_vm_file: u32,
    pub vma_vm_flags: u32,
    pub vma_vm_mm: u32,
    pub file_f_inode: u32,
    /// `file.f_path.dentry`
    pub file_dentry: u32,
    /// `dentry.d_name.name`
    pub dentry_name: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub mm_start_brk: u32,
    pub mm_brk: u32,
    pub mm_start_stack: u32,
    pub mm_start_code: u32,
    pub regs_ip: u32,
    pub regs_sp: u32,
    pub regs_bp: u32,
    pub task_mm: u32,
    /// `mm_struct.pgd`: the top page table, a direct-map address.
    pub mm_pgd: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_group_leader: u32,
    /// `task_struct.min_flt`/`maj_flt`: the thread's own fault accounting (getrusage's).
    pub task_min_flt: u32,
    pub task_maj_flt: u32,
    /// `mm_struct.mm_lock_seq`, bumped by every mmap-lock writer; 0 where the kernel has none
    /// (then the per-thread mapping cache is off).
    pub mm_lock_seq: u32,
    /// Bit offset of `task_struct.in_execve`, set while the task is in execve (0: unknown).
    pub task_in_execve_bit: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`: a task's
    /// cgroup v2 id, for tasks other than the current one.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// `enum vm_fault_reason` values.
    pub vm_fault_major: u32,
    pub vm_fault_retry: u32,
    pub vm_fault_error: u32,
    /// `enum fault_flag` values.
    pub fault_flag_write: u32,
    pub fault_flag_user: u32,
    pub fault_flag_instruction: u32,
    pub fault_flag_tried: u32,
    /// The compat object's own (kernels without `bpf_find_vma` and `bpf_task_pt_regs`, which
    /// keep VMAs in a red-black tree): `mm_struct.mm_rb`, `vm_area_struct.vm_rb`,
    /// `rb_node.rb_left`/`rb_right`; `task_struct.stack`, and where the user registers lie
    /// above it (THREAD_SIZE less `sizeof(struct pt_regs)`). Zero where the kernel has none.
    pub mm_rb: u32,
    pub vma_vm_rb: u32,
    pub rb_left: u32,
    pub rb_right: u32,
    pub task_stack: u32,
    pub user_regs_in_stack: u32,
}
pod!(Offsets);

/// Read-only settings handed to the programs at load time (global `CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// 0: any process.
    pub tgid: u32,
    /// 0: any thread.
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
    pub min_latency_ns: u64,
    pub flags: u32,
    /// Bit `1 << KIND_*` set for each kind wanted.
    pub kinds: u32,
    /// `MODE_USER | MODE_KERNEL`.
    pub modes: u32,
    /// Wake the event reader once this many bytes wait in the ring buffer (it also polls).
    pub wakeup_bytes: u32,
    /// pfault's own process: never traced (its faults are the tracer's, not the workload's).
    pub self_tgid: u32,
    /// Depth below the cgroup v2 root of `cgroup_id` (`CFG_FILTER_CGROUP`).
    pub cgroup_level: u32,
    /// Only tasks in this cgroup v2 or below it (`CFG_FILTER_CGROUP`).
    pub cgroup_id: u64,
    /// Where physical memory starts in the kernel's direct map (`page_offset_base`), to read
    /// page tables by the physical addresses they hold (`CFG_PAGE_SIZE`)...
    pub page_offset: u64,
    /// ...or, where the kernel randomizes it, the address of the variable that holds it.
    pub page_offset_at: u64,
    /// Five levels of page tables (x86 `la57`), not four.
    pub pgtable_l5: u32,
    pub _pad: u32,
    pub off: Offsets,
}
pod!(Config);
