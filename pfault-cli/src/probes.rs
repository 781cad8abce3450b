//! Probe selection and attach: what this kernel allows, which probe mode to use, and loading
//! the embedded eBPF object with the configuration a subcommand asks for.

use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        FEntry, FExit, Iter, KProbe, PerfEvent, RawTracePoint, TracePoint,
    },
    util::online_cpus,
    Btf as AyaBtf, Ebpf, EbpfLoader,
};
use aya_obj::btf::{BtfType, Func, FuncLinkage};
use pfault_common::*;

use crate::btf::Btf;

/// The compiled kernel side, committed so that stable Rust alone can build pfault
/// (`cargo xtask build-ebpf` refreshes it; `cargo xtask test` fails when it is stale).
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/pfault.bpf.o");

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// How a fault's completion (and with it minor/major/error and latency) is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeMode {
    /// fentry/fexit on handle_mm_fault: VM_FAULT_* flags, cheapest hook.
    Fentry,
    /// kprobe/kretprobe on handle_mm_fault: VM_FAULT_* flags.
    Kprobe,
    /// exceptions:page_fault_* tracepoints + PAGE_FAULTS_MIN/MAJ perf events: works everywhere.
    Tracepoint,
}

impl ProbeMode {
    pub fn name(self) -> &'static str {
        match self {
            ProbeMode::Fentry => "fentry",
            ProbeMode::Kprobe => "kprobe",
            ProbeMode::Tracepoint => "tracepoint",
        }
    }
}

/// What a subcommand wants from the kernel side.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `CFG_OUT_*` and the other `CFG_*` bits.
    pub flags: u32,
    pub kinds: u32,
    pub modes: u32,
    pub min_latency_ns: u64,
    pub probe: Option<ProbeMode>,
    pub ringbuf_bytes: u32,
    pub stack_entries: u32,
    pub agg_entries: u32,
}

impl Plan {
    pub fn new(flags: u32) -> Self {
        Plan {
            flags,
            kinds: (1 << KIND_MINOR) | (1 << KIND_MAJOR) | (1 << KIND_ERROR),
            modes: MODE_USER | MODE_KERNEL,
            min_latency_ns: 0,
            probe: None,
            ringbuf_bytes: 16 << 20,
            stack_entries: 16384,
            agg_entries: 40960,
        }
    }
}

/// Which tasks to trace.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub tgid: u32,
    pub tid: u32,
    pub comm: Option<String>,
    /// Trace the tgids in the `TRACED` map (a command and its children).
    pub follow: bool,
}

/// Names of the kernel's `VM_FAULT_*` bits, from its own BTF.
#[derive(Clone, Debug, Default)]
pub struct VmFaultNames(Vec<(String, u32)>);

impl VmFaultNames {
    pub fn decode(&self, bits: u32) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, v)| bits & v != 0)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// The loaded, attached kernel side.
pub struct Engine {
    pub ebpf: Ebpf,
    pub mode: ProbeMode,
    pub vm_fault_names: VmFaultNames,
    /// Why better modes were not used, when the mode was chosen automatically.
    pub refused: Vec<String>,
    /// Counts come from the kernel's own fault accounting (`CFG_ACCOUNTED`).
    pub accounted: bool,
    /// CLOCK_MONOTONIC when the probes were attached.
    pub started_ns: u64,
}

/// Everything the kernel could not record, summed over CPUs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Losses {
    pub ringbuf: u64,
    pub pending_full: u64,
    pub stack_collisions: u64,
    pub stack_missing: u64,
    pub map_full: u64,
    pub vma_busy: u64,
}

impl Losses {
    /// The losses besides the ring buffer's, for the end-of-run line ("" when none).
    pub fn others(&self) -> String {
        [
            (
                self.pending_full,
                "faults not tracked (the kernel gave no per-thread storage: out of memory, or a nested probe)",
            ),
            (
                self.stack_collisions,
                "stacks lost to stack-map hash collisions (raise --stack-entries)",
            ),
            (self.stack_missing, "stacks not walkable or stack map full"),
            (
                self.map_full,
                "counts dropped because a count map was full (raise --map-entries)",
            ),
            (self.vma_busy, "mappings unknown (mmap lock contended)"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!(", {n} {what}"))
        .collect()
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Effective capabilities, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let caps = effective_caps();
    let has = |c: u64| caps & (1 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || has(CAP_BPF) && has(CAP_PERFMON)) {
        bail!("pfault needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo");
    }
    Ok(())
}

/// Makes sure tracefs is mounted, mounting it as root would.
pub fn ensure_tracefs() -> Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let ret = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 || !Path::new(TRACEFS).join("events").is_dir() {
        bail!(
            "tracefs is not mounted and mounting it failed ({}): run `mount -t tracefs nodev {TRACEFS}`",
            std::io::Error::last_os_error()
        );
    }
    eprintln!("pfault: mounted tracefs at {TRACEFS}");
    Ok(())
}

/// Does this kernel have kprobes? `kprobe_events` exists only with CONFIG_KPROBE_EVENTS.
pub fn kprobes_available() -> bool {
    Path::new(TRACEFS).join("kprobe_events").exists()
}

/// Kernel offsets and enum values the programs need, from the running kernel's BTF.
fn kernel_layout(btf: &Btf) -> Result<(Offsets, VmFaultNames)> {
    let enum_value = |values: &[(String, u64)], name: &str| -> Result<u32> {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v as u32)
            .with_context(|| format!("kernel BTF lacks {name}"))
    };
    let reasons = btf.enum_values("vm_fault_reason")?;
    let flags = btf.enum_values("fault_flag")?;
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
        regs_ip: btf.offset_of("pt_regs", "ip")?,
        task_mm: btf.offset_of("task_struct", "mm")?,
        task_pid: btf.offset_of("task_struct", "pid")?,
        task_tgid: btf.offset_of("task_struct", "tgid")?,
        task_comm: btf.offset_of("task_struct", "comm")?,
        task_group_leader: btf.offset_of("task_struct", "group_leader")?,
        task_min_flt: btf.offset_of("task_struct", "min_flt")?,
        task_maj_flt: btf.offset_of("task_struct", "maj_flt")?,
        mm_lock_seq: btf.offset_of("mm_struct", "mm_lock_seq").unwrap_or(0),
        vm_fault_major: enum_value(&reasons, "VM_FAULT_MAJOR")?,
        vm_fault_retry: enum_value(&reasons, "VM_FAULT_RETRY")?,
        vm_fault_error: error,
        fault_flag_write: enum_value(&flags, "FAULT_FLAG_WRITE")?,
        fault_flag_user: enum_value(&flags, "FAULT_FLAG_USER")?,
        fault_flag_instruction: enum_value(&flags, "FAULT_FLAG_INSTRUCTION")?,
        fault_flag_tried: enum_value(&flags, "FAULT_FLAG_TRIED")?,
    };
    // Single-bit reasons only: the HWPOISON index mask is not a flag.
    let names = reasons
        .into_iter()
        .filter(|(_, v)| v.is_power_of_two())
        .map(|(n, v)| (n.trim_start_matches("VM_FAULT_").to_string(), v as u32))
        .collect();
    Ok((off, VmFaultNames(names)))
}

fn comm_bytes(comm: &str) -> [u8; COMM_LEN] {
    let mut out = [0u8; COMM_LEN];
    for (o, b) in out.iter_mut().zip(comm.bytes().take(COMM_LEN - 1)) {
        *o = b;
    }
    out
}

impl Engine {
    /// Checks privileges and kernel features, loads the object configured for `plan`, and
    /// attaches the probes of the chosen mode (and only those).
    pub fn start(plan: &Plan, filter: &TaskFilter) -> Result<Engine> {
        check_privileges()?;
        ensure_tracefs()?;
        // The kernel's BTF (megabytes) is freed before attaching: the fentry attempt parses its
        // own copy, and the two need not coexist.
        let btf = Btf::from_sys_fs()?;
        let (off, vm_fault_names) = kernel_layout(&btf)?;
        let hmf_btf_id = btf.func_id("handle_mm_fault");
        let iter_btf_id = if plan.flags & CFG_OUT_PROCS != 0 {
            Some(
                btf.func_id("bpf_iter_task")
                    .context("kernel BTF has no bpf_iter_task (Linux 5.8+)")?,
            )
        } else {
            None
        };
        drop(btf);
        let mut flags = plan.flags;
        if filter.comm.is_some() {
            flags |= CFG_FILTER_COMM;
        }
        if filter.follow {
            flags |= CFG_FOLLOW;
        }
        let config = Config {
            tgid: filter.tgid,
            tid: filter.tid,
            comm: comm_bytes(filter.comm.as_deref().unwrap_or("")),
            min_latency_ns: plan.min_latency_ns,
            flags,
            kinds: plan.kinds,
            modes: plan.modes,
            wakeup_bytes: plan.ringbuf_bytes / 16,
            self_tgid: std::process::id(),
            _pad: 0,
            off,
        };
        // Maps an output does not use shrink to one entry: they are preallocated.
        let size = |bit: u32, n: u32| if flags & bit != 0 { n } else { 1 };
        let stacks = flags & CFG_OUT_STACKS != 0 && flags & (CFG_USTACK | CFG_KSTACK) != 0;
        let mut loader = EbpfLoader::new();
        // The programs carry no CO-RE relocations (offsets come in CONFIG): aya need not parse
        // the kernel's BTF for them, which costs start-up time and about 14 MiB.
        loader.btf(None);
        // PENDING is task storage, which aya creates but has no userspace type for.
        loader.allow_unsupported_maps();
        loader
            .override_global("CONFIG", &config, true)
            .map_max_entries(
                "EVENTS",
                if flags & CFG_OUT_EVENTS != 0 {
                    plan.ringbuf_bytes
                } else {
                    4096
                },
            )
            .map_max_entries("STACKS", if stacks { plan.stack_entries } else { 1 })
            .map_max_entries("STACK_COUNTS", size(CFG_OUT_STACKS, plan.agg_entries))
            // One slot per bucket of STACKS, whose ids index it.
            .map_max_entries(
                "STACK_SLOTS",
                size(CFG_STACK_SLOTS, plan.stack_entries.next_power_of_two()),
            )
            .map_max_entries("FILE_COUNTS", size(CFG_OUT_FILES, plan.agg_entries))
            .map_max_entries("PROC_STATS", size(CFG_OUT_PROCS, 8192));
        let mut ebpf = loader.load(BPF_OBJECT).context("loading pfault's eBPF object")?;
        let (mode, refused) = attach(&mut ebpf, plan, flags, hmf_btf_id)?;
        if let Some(id) = iter_btf_id {
            load_thread_folder(&mut ebpf, id)?;
        }
        Ok(Engine {
            ebpf,
            mode,
            vm_fault_names,
            refused,
            accounted: flags & CFG_ACCOUNTED != 0,
            started_ns: monotonic_ns(),
        })
    }

    /// "probe mode tracepoint (fentry: ...; kprobe: ...)", for stderr.
    pub fn describe(&self) -> String {
        if self.accounted {
            return format!(
                "probe mode {}, counts from the kernel's fault accounting (-L times each fault)",
                self.mode.name()
            );
        }
        if self.refused.is_empty() {
            format!("probe mode {}", self.mode.name())
        } else {
            format!("probe mode {} ({})", self.mode.name(), self.refused.join("; "))
        }
    }

    /// Marks a tgid as traced (a command started by pfault).
    pub fn trace_tgid(&mut self, tgid: u32) -> Result<()> {
        let mut traced: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(self.ebpf.map_mut("TRACED").context("no TRACED map")?)?;
        traced.insert(tgid, 1, 0)?;
        Ok(())
    }

    /// Moves the counts the live threads hold into `PROC_STATS` (the counting tools read it
    /// after this). Runs `fold_threads` over every task.
    pub fn fold_threads(&mut self) -> Result<()> {
        let it: &mut Iter = self
            .ebpf
            .program_mut("fold_threads")
            .context("missing program")?
            .try_into()?;
        let id = it.attach().context("attaching the thread iterator")?;
        let mut file = it
            .take_link(id)?
            .into_file()
            .context("creating the thread iterator")?;
        std::io::copy(&mut file, &mut std::io::sink()).context("running the thread iterator")?;
        Ok(())
    }

    pub fn losses(&self) -> Result<Losses> {
        let counters: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").context("no COUNTERS map")?)?;
        let sum = |i: u32| -> u64 { counters.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        Ok(Losses {
            ringbuf: sum(CNT_RINGBUF_LOST),
            pending_full: sum(CNT_PENDING_FULL),
            stack_collisions: sum(CNT_STACK_COLLISION),
            stack_missing: sum(CNT_STACK_MISSING),
            map_full: sum(CNT_AGG_FULL),
            vma_busy: sum(CNT_VMA_BUSY),
        })
    }
}

fn tracepoint(ebpf: &mut Ebpf, prog: &str, category: &str, name: &str) -> Result<()> {
    let tp: &mut TracePoint = ebpf.program_mut(prog).context("missing program")?.try_into()?;
    tp.load().with_context(|| format!("loading {prog}"))?;
    tp.attach(category, name)
        .with_context(|| format!("attaching to tracepoint {category}:{name}"))?;
    Ok(())
}

/// Asks the kernel whether it loads an fentry program on handle_mm_fault, with the smallest
/// such program (`return 0`). aya would first parse the kernel's whole BTF (tens of
/// milliseconds, megabytes) only to be refused where a security policy forbids trampolines.
fn fentry_permitted(hmf_btf_id: Option<u32>) -> Result<()> {
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
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len() as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// A raw tracepoint: the kernel's arguments as they are, without a trace record built first.
fn raw_tracepoint(ebpf: &mut Ebpf, prog: &str, name: &str) -> Result<()> {
    let tp: &mut RawTracePoint = ebpf.program_mut(prog).context("missing program")?.try_into()?;
    tp.load().with_context(|| format!("loading {prog}"))?;
    tp.attach(name)
        .with_context(|| format!("attaching to raw tracepoint {name}"))?;
    Ok(())
}

/// Loads `fold_threads`, the task iterator behind [`Engine::fold_threads`]. aya's `Iter::load`
/// looks `bpf_iter_task` up by name in an aya `Btf`; rather than have aya parse the kernel's
/// whole BTF for one id (see `fentry_permitted`), it gets a stand-in holding only that function,
/// at the id pfault's own index found.
fn load_thread_folder(ebpf: &mut Ebpf, id: u32) -> Result<()> {
    let mut btf = AyaBtf::new();
    let name = btf.add_string("bpf_iter_task");
    for _ in 1..id {
        btf.add_type(BtfType::Unknown);
    }
    btf.add_type(BtfType::Func(Func::new(name, 0, FuncLinkage::Global)));
    let it: &mut Iter = ebpf
        .program_mut("fold_threads")
        .context("missing program")?
        .try_into()?;
    it.load("task", &btf)
        .context("loading the thread iterator (BPF task iterators: Linux 5.8+)")?;
    Ok(())
}

fn attach_fentry(ebpf: &mut Ebpf) -> Result<()> {
    let btf = AyaBtf::from_sys_fs()?;
    let fe: &mut FEntry = ebpf
        .program_mut("hmf_fentry")
        .context("missing program")?
        .try_into()?;
    fe.load("handle_mm_fault", &btf)?;
    fe.attach()?;
    let fx: &mut FExit = ebpf
        .program_mut("hmf_fexit")
        .context("missing program")?
        .try_into()?;
    fx.load("handle_mm_fault", &btf)?;
    fx.attach()?;
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<()> {
    if !kprobes_available() {
        bail!("this kernel has no kprobes (CONFIG_KPROBES)");
    }
    for prog in ["hmf_kprobe", "hmf_kretprobe"] {
        let kp: &mut KProbe = ebpf.program_mut(prog).context("missing program")?.try_into()?;
        kp.load()?;
        kp.attach("handle_mm_fault", 0)?;
    }
    Ok(())
}

fn attach_accounting_events(ebpf: &mut Ebpf) -> Result<()> {
    let cpus = online_cpus().map_err(|(_, e)| e).context("reading online CPUs")?;
    for (prog, event) in [
        ("fault_minor", SoftwareEvent::PageFaultsMin),
        ("fault_major", SoftwareEvent::PageFaultsMaj),
    ] {
        let pe: &mut PerfEvent = ebpf.program_mut(prog).context("missing program")?.try_into()?;
        pe.load().with_context(|| format!("loading {prog}"))?;
        for &cpu in &cpus {
            pe.attach(
                PerfEventConfig::Software(event),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Period(1),
                false,
            )
            .with_context(|| format!("attaching {prog} to the page-fault perf event on CPU {cpu}"))?;
        }
    }
    Ok(())
}

/// Chooses and attaches a probe mode: the one asked for, or the best this kernel allows.
fn attach(
    ebpf: &mut Ebpf,
    plan: &Plan,
    flags: u32,
    hmf_btf_id: Option<u32>,
) -> Result<(ProbeMode, Vec<String>)> {
    let mut refused = Vec::new();
    let mode = match plan.probe {
        Some(ProbeMode::Fentry) => {
            attach_fentry(ebpf).context("fentry on handle_mm_fault refused (try --probe tracepoint)")?;
            ProbeMode::Fentry
        }
        Some(ProbeMode::Kprobe) => {
            attach_kprobe(ebpf).context("kprobe on handle_mm_fault failed (try --probe tracepoint)")?;
            ProbeMode::Kprobe
        }
        Some(ProbeMode::Tracepoint) => ProbeMode::Tracepoint,
        // Nothing to learn at completion: the exception tracepoints are all it needs.
        None if flags & CFG_ACCOUNTED != 0 => ProbeMode::Tracepoint,
        None => match fentry_permitted(hmf_btf_id).and_then(|()| attach_fentry(ebpf)) {
            Ok(()) => ProbeMode::Fentry,
            Err(e) => {
                refused.push(format!("fentry: {}", short_error(&e)));
                match attach_kprobe(ebpf) {
                    Ok(()) => ProbeMode::Kprobe,
                    Err(e) => {
                        refused.push(format!("kprobe: {}", short_error(&e)));
                        ProbeMode::Tracepoint
                    }
                }
            }
        },
    };
    let errors_wanted = plan.kinds & (1 << KIND_ERROR) != 0;
    // The exception tracepoints are the entry on the tracepoint path; on the handle_mm_fault
    // paths they only catch faults that never reach it (bad address, bad access).
    let completion_only = mode == ProbeMode::Tracepoint && flags & CFG_COMPLETION_ONLY != 0;
    if (mode == ProbeMode::Tracepoint || errors_wanted) && !completion_only {
        if plan.modes & MODE_USER != 0 {
            raw_tracepoint(ebpf, "page_fault_user", "page_fault_user")?;
        }
        if plan.modes & MODE_KERNEL != 0 {
            raw_tracepoint(ebpf, "page_fault_kernel", "page_fault_kernel")?;
        }
    }
    if mode == ProbeMode::Tracepoint && flags & CFG_ACCOUNTED == 0 {
        attach_accounting_events(ebpf)?;
    }
    if !completion_only {
        // Reports the faults that killed threads, and folds the counts of exiting ones.
        tracepoint(ebpf, "task_exit", "sched", "sched_process_exit")?;
    }
    if flags & (CFG_FOLLOW | CFG_NOTIFY_TASKS) != 0 {
        raw_tracepoint(ebpf, "task_fork", "sched_process_fork")?;
    }
    if flags & CFG_NOTIFY_TASKS != 0 {
        tracepoint(ebpf, "task_exec", "sched", "sched_process_exec")?;
    }
    Ok((mode, refused))
}

/// The innermost cause of an error, e.g. "Operation not permitted (os error 1)".
pub fn short_error(e: &anyhow::Error) -> String {
    e.chain().last().map(|c| c.to_string()).unwrap_or_default()
}

/// What `pfault probes` reports.
pub struct Report {
    pub lines: Vec<(String, String)>,
}

/// Probes this kernel's features without attaching anything for long.
pub fn report() -> Report {
    let mut lines = Vec::new();
    let mut add = |k: &str, v: String| lines.push((k.to_string(), v));
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    add("kernel", uname.trim().to_string());
    let privileged = check_privileges();
    add(
        "privileges",
        match &privileged {
            Ok(()) => "ok (CAP_BPF and CAP_PERFMON, or root)".into(),
            Err(e) => format!("missing: {e}"),
        },
    );
    let btf = Btf::from_sys_fs();
    add(
        "BTF",
        match &btf {
            Ok(_) => "yes (/sys/kernel/btf/vmlinux)".into(),
            Err(e) => format!("no: {}", short_error(e)),
        },
    );
    // Mounted first: the kernel layout includes a tracepoint format read from tracefs.
    let tracefs = if privileged.is_ok() {
        ensure_tracefs()
    } else {
        Ok(())
    };
    add(
        "tracefs",
        match tracefs {
            Ok(()) if Path::new(TRACEFS).join("events").is_dir() => format!("mounted at {TRACEFS}"),
            Ok(()) => "not mounted (needs root to mount)".into(),
            Err(e) => format!("no: {e}"),
        },
    );
    if let Ok(btf) = &btf {
        add(
            "kernel layout",
            match kernel_layout(btf) {
                Ok(_) => "all struct offsets and VM_FAULT_* values found in BTF".into(),
                Err(e) => format!("incomplete: {e:#}"),
            },
        );
    }
    add(
        "exceptions tracepoints",
        yes_no(
            Path::new(TRACEFS)
                .join("events/exceptions/page_fault_user")
                .is_dir(),
        ),
    );
    add(
        "kprobes",
        if kprobes_available() {
            "yes".into()
        } else {
            "no (CONFIG_KPROBES not set, or tracefs not mounted)".into()
        },
    );
    let ringbuf = aya::sys::is_map_supported(aya::maps::MapType::RingBuf);
    add(
        "ring buffer",
        match ringbuf {
            Ok(b) => yes_no(b),
            Err(e) => format!("unknown ({e})"),
        },
    );
    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown (securityfs not mounted)".into());
    add("lockdown", lockdown);
    if privileged.is_ok() && btf.is_ok() {
        // Load for real: fentry permission is a policy question only the kernel answers.
        let mut plan = Plan::new(CFG_OUT_PROCS);
        let filter = TaskFilter {
            tgid: u32::MAX,
            ..Default::default()
        };
        let mut best = None;
        for mode in [ProbeMode::Fentry, ProbeMode::Kprobe, ProbeMode::Tracepoint] {
            plan.probe = Some(mode);
            let verdict = match Engine::start(&plan, &filter) {
                Ok(_) => {
                    best.get_or_insert(mode);
                    "available".to_string()
                }
                Err(e) => format!("unavailable: {}", short_error(&e)),
            };
            add(&format!("mode {}", mode.name()), verdict);
        }
        add(
            "tools",
            match best {
                Some(m) => format!(
                    "trace, stackcount, ffaults, stat and top use {} (the first available of fentry, kprobe, tracepoint; --probe overrides)",
                    m.name()
                ),
                None => "no probe mode works on this kernel".into(),
            },
        );
    }
    Report { lines }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}
