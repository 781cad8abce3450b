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

/// Where the user registers lie above `task_struct.stack`, for the compat object alone: at
/// the top of x86-64's THREAD_SIZE, which BTF does not carry: 16 KiB, doubled under KASAN
/// (whose functions then are in BTF). Asked only when compat is chosen: finding a function
/// scans every type, time every start would pay.
pub(crate) fn user_regs_in_stack(btf: &Btf) -> Result<u32> {
    let thread_size = if btf.func_id("kasan_report").is_some() {
        32 << 10
    } else {
        16 << 10
    };
    Ok(thread_size - btf.struct_size("pt_regs")?)
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
        task_mm: btf.offset_of("task_struct", "mm")?,
        mm_pgd: btf.offset_of("mm_struct", "pgd")?,
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
        user_regs_in_stack: 0,
    };
    // Single-bit reasons only: the HWPOISON index mask is not a flag.
    let names = reasons
        .into_iter()
        .filter(|(_, v)| v.is_power_of_two())
        .map(|(n, v)| (n.trim_start_matches("VM_FAULT_").to_string(), v as u32))
        .collect();
    Ok((off, VmFaultNames(names)))
}

/// Where the kernel's direct map of physical memory lies, for the kernel side to read page
/// tables by the physical addresses their entries hold (`Config::page_offset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DirectMap {
    /// The base itself, where it is fixed...
    pub(crate) base: u64,
    /// ...or the address of `page_offset_base`, the variable that holds it.
    pub(crate) base_at: u64,
    pub(crate) five_levels: bool,
}

/// x86-64's direct-map bases when not randomized (`__PAGE_OFFSET_BASE_L4`/`_L5`).
const DIRECT_MAP_L4: u64 = 0xffff_8880_0000_0000;
const DIRECT_MAP_L5: u64 = 0xff11_0000_0000_0000;
/// `_text` where the kernel image is not randomized (`__START_KERNEL`): nor is its direct map
/// then, as both are randomized by KASLR alone.
const TEXT_NOT_RANDOMIZED: u64 = 0xffff_ffff_8100_0000;

impl DirectMap {
    /// From `/proc/kallsyms` and `/proc/cpuinfo`. kallsyms is read only as far as needed: all
    /// of it (5 MB, 47 ms of a start on 6.18) only where the kernel is randomized.
    pub(crate) fn of_running_kernel() -> Result<DirectMap, String> {
        use std::io::BufRead;
        let kallsyms =
            std::fs::File::open("/proc/kallsyms").map_err(|e| format!("cannot read /proc/kallsyms: {e}"))?;
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let lines = std::io::BufReader::with_capacity(64 << 10, kallsyms).lines();
        DirectMap::from(lines.map_while(Result::ok), &cpuinfo)
    }

    fn from(kallsyms: impl Iterator<Item = impl AsRef<str>>, cpuinfo: &str) -> Result<DirectMap, String> {
        // `_text` comes first: where it is not randomized, neither is the direct map, and
        // the rest need not be read. Else `page_offset_base` (a data symbol, listed only with
        // CONFIG_KALLSYMS_ALL) says where the base is kept.
        let mut text = None;
        let mut base_at = None;
        for line in kallsyms {
            let mut f = line.as_ref().split_whitespace();
            let (Some(addr), Some(name)) = (f.next().and_then(|a| u64::from_str_radix(a, 16).ok()), f.nth(1))
            else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            if name == "_text" {
                text = Some(addr);
                if addr == TEXT_NOT_RANDOMIZED {
                    break;
                }
            } else if name == "page_offset_base" {
                base_at = Some(addr);
                break;
            }
        }
        // The kernel clears `la57` where it runs with four levels on a CPU that has five.
        let five_levels = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "la57"));
        if let Some(at) = base_at {
            return Ok(DirectMap {
                base: 0,
                base_at: at,
                five_levels,
            });
        }
        match text {
            Some(TEXT_NOT_RANDOMIZED) => Ok(DirectMap {
                base: if five_levels { DIRECT_MAP_L5 } else { DIRECT_MAP_L4 },
                base_at: 0,
                five_levels,
            }),
            Some(_) => Err("page sizes need the kernel's direct-map base: this kernel randomizes it (KASLR) and /proc/kallsyms does not list page_offset_base (CONFIG_KALLSYMS_ALL); boot with nokaslr to have them".into()),
            None => Err("page sizes need /proc/kallsyms to show addresses (run as root; kernel.kptr_restrict below 2)".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS_L5: &str = "processor\t: 0\nflags\t\t: fpu vme la57 pku\n";
    const FLAGS_L4: &str = "processor\t: 0\nflags\t\t: fpu vme pku\n";

    #[test]
    fn a_listed_page_offset_base_is_read_where_it_lies() {
        let k = "ffffffff9a000000 T _text\nffffffff9b812340 D page_offset_base\n";
        assert_eq!(
            DirectMap::from(k.lines(), FLAGS_L5),
            Ok(DirectMap {
                base: 0,
                base_at: 0xffff_ffff_9b81_2340,
                five_levels: true
            })
        );
    }

    #[test]
    fn an_unrandomized_kernel_has_the_fixed_base_of_its_paging_mode() {
        let k = "ffffffff81000000 T _text\nffffffff81000000 T _stext\n";
        assert_eq!(
            DirectMap::from(k.lines(), FLAGS_L4).map(|d| d.base),
            Ok(DIRECT_MAP_L4)
        );
        assert_eq!(
            DirectMap::from(k.lines(), FLAGS_L5).map(|d| d.base),
            Ok(DIRECT_MAP_L5)
        );
    }

    #[test]
    fn a_randomized_base_that_is_not_listed_or_hidden_addresses_are_refused() {
        let randomized = DirectMap::from("ffffffff9a000000 T _text\n".lines(), FLAGS_L4).unwrap_err();
        assert!(randomized.contains("KALLSYMS_ALL"), "{randomized}");
        let hidden = DirectMap::from(
            "0000000000000000 T _text\n0000000000000000 D page_offset_base\n".lines(),
            FLAGS_L4,
        )
        .unwrap_err();
        assert!(hidden.contains("kptr_restrict"), "{hidden}");
    }
}
