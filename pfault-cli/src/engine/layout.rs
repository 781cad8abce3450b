//! The running kernel's layout, from its BTF: the struct offsets and enum values the programs
//! need (aya's Rust programs carry no CO-RE relocations, so they get them in `Config`).

use anyhow::{Context, Result};
use pfault_common::Offsets;

use crate::btf::Btf;

/// Names of the kernel's `VM_FAULT_*` bits, from its own BTF.
#[derive(Clone, Debug, Default)]
pub(crate) struct VmFaultNames(Vec<(String, u32)>);

impl VmFaultNames {
    pub(crate) fn decode(&self, bits: u32) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, v)| bits & v != 0)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// The `FAULT_FLAG_*` values of kernels that define them as macros (before 5.11, where they
/// became `enum fault_flag`): macros leave nothing in BTF, and these did not change while
/// they were macros (include/linux/mm.h, 5.4 to 5.10).
fn fault_flag_macros() -> Vec<(String, u64)> {
    [
        ("FAULT_FLAG_WRITE", 0x01),
        ("FAULT_FLAG_USER", 0x40),
        ("FAULT_FLAG_INSTRUCTION", 0x100),
        ("FAULT_FLAG_TRIED", 0x20),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect()
}

/// x86-64's THREAD_SIZE, which BTF does not carry: 16 KiB, doubled under KASAN (whose
/// functions then are in BTF). The user registers lie at its top.
fn thread_size(btf: &Btf) -> u32 {
    if btf.func_id("kasan_report").is_some() {
        32 << 10
    } else {
        16 << 10
    }
}

/// Kernel offsets and enum values the programs need, from the running kernel's BTF.
pub(crate) fn kernel_layout(btf: &Btf) -> Result<(Offsets, VmFaultNames)> {
    let enum_value = |values: &[(String, u64)], name: &str| -> Result<u32> {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v as u32)
            .with_context(|| format!("kernel BTF lacks {name}"))
    };
    let reasons = btf.enum_values("vm_fault_reason")?;
    let flags = btf
        .enum_values("fault_flag")
        .unwrap_or_else(|_| fault_flag_macros());
    let error = [
        "VM_FAULT_OOM",
        "VM_FAULT_SIGBUS",
        "VM_FAULT_SIGSEGV",
        "VM_FAULT_HWPOISON",
        "VM_FAULT_HWPOISON_LARGE",
        "VM_FAULT_FALLBACK",
    ]
    .iter()
    .filter_map(|n| enum_value(&reasons, n).ok())
    .fold(0, |a, b| a | b);
    let off = Offsets {
        vma_vm_start: btf.offset_of("vm_area_struct", "vm_start")?,
        vma_vm_end: btf.offset_of("vm_area_struct", "vm_end")?,
        vma_vm_pgoff: btf.offset_of("vm_area_struct", "vm_pgoff")?,
        vma_vm_file: btf.offset_of("vm_area_struct", "vm_file")?,
        vma_vm_flags: btf.offset_of("vm_area_struct", "vm_flags")?,
        vma_vm_mm: btf.offset_of("vm_area_struct", "vm_mm")?,
        file_f_inode: btf.offset_of("file", "f_inode")?,
        file_dentry: btf.offset_of("file", "f_path.dentry")?,
        dentry_name: btf.offset_of("dentry", "d_name.name")?,
        inode_i_ino: btf.offset_of("inode", "i_ino")?,
        inode_i_sb: btf.offset_of("inode", "i_sb")?,
        sb_s_dev: btf.offset_of("super_block", "s_dev")?,
        mm_start_brk: btf.offset_of("mm_struct", "start_brk")?,
        mm_brk: btf.offset_of("mm_struct", "brk")?,
        mm_start_stack: btf.offset_of("mm_struct", "start_stack")?,
        mm_start_code: btf.offset_of("mm_struct", "start_code")?,
        regs_ip: btf.offset_of("pt_regs", "ip")?,
        regs_sp: btf.offset_of("pt_regs", "sp")?,
        regs_bp: btf.offset_of("pt_regs", "bp")?,
        regs_orig_ax: btf.offset_of("pt_regs", "orig_ax")?,
        task_mm: btf.offset_of("task_struct", "mm")?,
        task_pid: btf.offset_of("task_struct", "pid")?,
        task_tgid: btf.offset_of("task_struct", "tgid")?,
        task_comm: btf.offset_of("task_struct", "comm")?,
        task_group_leader: btf.offset_of("task_struct", "group_leader")?,
        task_min_flt: btf.offset_of("task_struct", "min_flt")?,
        task_maj_flt: btf.offset_of("task_struct", "maj_flt")?,
        mm_lock_seq: btf.offset_of("mm_struct", "mm_lock_seq").unwrap_or(0),
        task_cgroups: btf.offset_of("task_struct", "cgroups")?,
        css_set_dfl_cgrp: btf.offset_of("css_set", "dfl_cgrp")?,
        cgroup_kn: btf.offset_of("cgroup", "kn")?,
        kernfs_node_id: btf.offset_of("kernfs_node", "id")?,
        task_in_execve_bit: btf.bit_offset_of("task_struct", "in_execve").unwrap_or(0),
        vm_fault_major: enum_value(&reasons, "VM_FAULT_MAJOR")?,
        vm_fault_retry: enum_value(&reasons, "VM_FAULT_RETRY")?,
        vm_fault_error: error,
        fault_flag_write: enum_value(&flags, "FAULT_FLAG_WRITE")?,
        fault_flag_user: enum_value(&flags, "FAULT_FLAG_USER")?,
        fault_flag_instruction: enum_value(&flags, "FAULT_FLAG_INSTRUCTION")?,
        fault_flag_tried: enum_value(&flags, "FAULT_FLAG_TRIED")?,
        mm_rb: btf.offset_of("mm_struct", "mm_rb").unwrap_or(0),
        vma_vm_rb: btf.offset_of("vm_area_struct", "vm_rb").unwrap_or(0),
        rb_left: btf.offset_of("rb_node", "rb_left").unwrap_or(0),
        rb_right: btf.offset_of("rb_node", "rb_right").unwrap_or(0),
        task_stack: btf.offset_of("task_struct", "stack").unwrap_or(0),
        user_regs_in_stack: thread_size(btf) - btf.struct_size("pt_regs")?,
    };
    // Single-bit reasons only: the HWPOISON index mask is not a flag.
    let names = reasons
        .into_iter()
        .filter(|(_, v)| v.is_power_of_two())
        .map(|(n, v)| (n.trim_start_matches("VM_FAULT_").to_string(), v as u32))
        .collect();
    Ok((off, VmFaultNames(names)))
}
