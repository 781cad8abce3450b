//! What this kernel allows a tracer, asked the cheapest way that gives a true answer (as
//! bpftrace's bpffeature does): a file that exists, or a two-instruction program loaded once.

use std::path::Path;

use anyhow::{Context, Result};

use crate::{btf::Btf, procfs::ensure_mounted};

pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";
const SECURITYFS: &str = "/sys/kernel/security";

/// Makes sure tracefs is mounted, mounting it as root would.
pub(crate) fn ensure_tracefs() -> Result<()> {
    ensure_mounted("tracefs", TRACEFS, &format!("{TRACEFS}/events")).map(drop)
}

/// Whether tracefs is mounted, and whether this user may look inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tracefs {
    Readable,
    /// Mounted, but its directory is root's alone (mode 700).
    RootOnly,
    NotMounted,
}

pub(crate) fn tracefs() -> Tracefs {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Tracefs::Readable;
    }
    // /proc/self/mounts says what is mounted where to anyone who asks.
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace().skip(1);
            f.next() == Some(TRACEFS) && f.next() == Some("tracefs")
        });
    if mounted {
        Tracefs::RootOnly
    } else {
        Tracefs::NotMounted
    }
}

/// Does this kernel have kprobes? `kprobe_events` exists only with CONFIG_KPROBE_EVENTS.
pub(crate) fn kprobes_available() -> bool {
    Path::new(TRACEFS).join("kprobe_events").exists()
}

pub(crate) fn exception_tracepoints() -> bool {
    Path::new(TRACEFS)
        .join("events/exceptions/page_fault_user")
        .is_dir()
}

/// The kernel lockdown mode (`integrity` leaves kernel reads to BPF allowed, `confidentiality`
/// does not), from securityfs, mounted first where it is not.
pub(crate) fn lockdown() -> Result<String> {
    let file = format!("{SECURITYFS}/lockdown");
    if !Path::new(&file).exists() {
        ensure_mounted("securityfs", SECURITYFS, &file)?;
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    // "none [integrity] confidentiality": the bracketed word is in force.
    Ok(text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .unwrap_or(text.trim())
        .to_string())
}

/// Asks the kernel whether it loads an fentry program on handle_mm_fault, with the smallest
/// such program (`return 0`). aya would first parse the kernel's whole BTF (tens of
/// milliseconds, megabytes) only to be refused where a security policy forbids trampolines.
pub(crate) fn fentry_permitted(hmf_btf_id: Option<u32>) -> Result<()> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    let id = hmf_btf_id.context("kernel BTF has no handle_mm_fault")?;
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    // union bpf_attr, BPF_PROG_LOAD part: the fields up to attach_btf_id (offset 108).
    let mut attr = [0u8; 128];
    let put32 = |a: &mut [u8; 128], off: usize, v: u32| a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 = |a: &mut [u8; 128], off: usize, v: u64| a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut attr, 0, BPF_PROG_TYPE_TRACING);
    put32(&mut attr, 4, insns.len() as u32);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 68, BPF_TRACE_FENTRY);
    put32(&mut attr, 108, id);
    // SAFETY: `attr` is a bpf_attr-sized buffer whose pointers outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len() as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: the kernel just gave us this descriptor.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Whether the kernel has BPF ring buffers (5.8+).
pub(crate) fn ringbuf() -> Result<bool> {
    Ok(aya::sys::is_map_supported(aya::maps::MapType::RingBuf)?)
}

/// What the default object needs that older kernels lack, and what pfault does without it
/// (the compat object).
pub(crate) struct Helper {
    /// A BPF helper's name in `enum bpf_func_id`, less `BPF_FUNC_`; or a kernel struct that
    /// comes with the feature, where no helper does.
    pub(crate) name: Needs,
    pub(crate) what: &'static str,
    pub(crate) without: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    Helper(&'static str),
    Struct(&'static str),
}

pub(crate) const HELPERS: [Helper; 7] = [
    Helper {
        name: Needs::Struct("bpf_mem_alloc"),
        what: "bpf_mem_alloc (6.1)",
        without: "hash maps that perf_event programs use are preallocated",
    },
    Helper {
        name: Needs::Helper("task_storage_get"),
        what: "task storage in tracing (5.11)",
        without: "per-thread state in a hash map keyed by thread id",
    },
    Helper {
        name: Needs::Helper("get_current_task_btf"),
        what: "bpf_get_current_task_btf (5.11)",
        without: "task fields read by bpf_probe_read_kernel",
    },
    Helper {
        name: Needs::Helper("get_attach_cookie"),
        what: "bpf_get_attach_cookie (5.15)",
        without: "a program for minor and one for major faults, not one told by its cookie",
    },
    Helper {
        name: Needs::Helper("task_pt_regs"),
        what: "bpf_task_pt_regs (5.15)",
        without: "user registers from the top of the task's kernel stack",
    },
    Helper {
        name: Needs::Helper("find_vma"),
        what: "bpf_find_vma (5.17)",
        without: "VMAs found by a walk of the mm's red-black tree, without the mmap lock",
    },
    Helper {
        name: Needs::Helper("loop"),
        what: "bpf_loop (5.17)",
        without: "the CFI unwinder's steps in a bounded loop",
    },
];

/// What of [`HELPERS`] this kernel lacks, from its BTF (helpers from its own list, `enum
/// bpf_func_id`): any one missing means the compat object.
pub(crate) fn missing_helpers(btf: &Btf) -> Result<Vec<&'static Helper>> {
    let ids = btf.enum_values("bpf_func_id")?;
    Ok(HELPERS
        .iter()
        .filter(|h| match h.name {
            Needs::Helper(name) => !ids.iter().any(|(n, _)| n.strip_prefix("BPF_FUNC_") == Some(name)),
            Needs::Struct(name) => btf.struct_size(name).is_err(),
        })
        .collect())
}
