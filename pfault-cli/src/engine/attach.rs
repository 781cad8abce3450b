//! Choosing a probe mode and attaching its programs, and only those a plan needs.

use anyhow::{bail, Context, Result};
use aya::{
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        FEntry, FExit, Iter, KProbe, PerfEvent, Program, RawTracePoint,
    },
    util::online_cpus,
    Btf as AyaBtf, Ebpf,
};
use aya_obj::btf::{BtfType, Func, FuncLinkage};
use pfault_common::*;

use super::{
    features::{fentry_permitted, kprobes_available},
    objects::programs as prog,
    plan::{Plan, ProbeMode},
};

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .with_context(|| format!("pfault's eBPF object has no program {name}"))?;
    Ok(p.try_into()?)
}

/// A raw tracepoint: the kernel's arguments as they are, without a trace record built first.
fn raw_tracepoint(ebpf: &mut Ebpf, name: &str, event: &str) -> Result<()> {
    let tp: &mut RawTracePoint = program(ebpf, name)?;
    if tp.fd().is_err() {
        tp.load().with_context(|| format!("loading {name}"))?;
    }
    tp.attach(event)
        .with_context(|| format!("attaching to raw tracepoint {event}"))?;
    Ok(())
}

/// Loads `fold_threads`, the task iterator behind `Engine::fold_threads`. aya's `Iter::load`
/// looks `bpf_iter_task` up by name in an aya `Btf`; rather than have aya parse the kernel's
/// whole BTF for one id (see `fentry_permitted`), it gets a stand-in holding only that
/// function, at the id pfault's own index found.
pub fn load_thread_folder(ebpf: &mut Ebpf, id: u32) -> Result<()> {
    let mut btf = AyaBtf::new();
    let name = btf.add_string("bpf_iter_task");
    for _ in 1..id {
        btf.add_type(BtfType::Unknown);
    }
    btf.add_type(BtfType::Func(Func::new(name, 0, FuncLinkage::Global)));
    let it: &mut Iter = program(ebpf, prog::FOLD_THREADS)?;
    it.load("task", &btf)
        .context("loading the thread iterator (BPF task iterators: Linux 5.8+)")?;
    Ok(())
}

/// Asked first with the smallest program, so a refusal is the kernel's one word for it
/// (EPERM where a security policy forbids trampolines), not a verifier log that ends in it.
fn attach_fentry(ebpf: &mut Ebpf, hmf_btf_id: Option<u32>) -> Result<()> {
    fentry_permitted(hmf_btf_id)?;
    let btf = AyaBtf::from_sys_fs()?;
    let fe: &mut FEntry = program(ebpf, prog::HMF_FENTRY)?;
    fe.load("handle_mm_fault", &btf)?;
    fe.attach()?;
    let fx: &mut FExit = program(ebpf, prog::HMF_FEXIT)?;
    fx.load("handle_mm_fault", &btf)?;
    fx.attach()?;
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<()> {
    if !kprobes_available() {
        bail!("this kernel has no kprobes (CONFIG_KPROBES)");
    }
    for name in [prog::HMF_KPROBE, prog::HMF_KRETPROBE] {
        let kp: &mut KProbe = program(ebpf, name)?;
        kp.load()?;
        kp.attach("handle_mm_fault", 0)?;
    }
    Ok(())
}

/// A perf software event on every CPU (`PAGE_FAULTS_MIN`/`MAJ`): the fault's completion.
fn attach_accounting_event(ebpf: &mut Ebpf, name: &str, event: SoftwareEvent) -> Result<()> {
    let cpus = online_cpus().map_err(|(_, e)| e).context("reading online CPUs")?;
    let pe: &mut PerfEvent = program(ebpf, name)?;
    if pe.fd().is_err() {
        pe.load().with_context(|| format!("loading {name}"))?;
    }
    for &cpu in &cpus {
        pe.attach(
            PerfEventConfig::Software(event),
            PerfEventScope::AllProcessesOneCpu { cpu },
            SamplePolicy::Period(1),
            false,
        )
        .with_context(|| format!("attaching {name} to the page-fault perf event on CPU {cpu}"))?;
    }
    Ok(())
}

/// Loads `names` side by side, a thread each: the verifier checks one program per call, and
/// most of pfault's start-up is its time. A program that fails is loaded again where it is
/// attached, which reports the error.
fn load_together(ebpf: &mut Ebpf, names: &[&str]) {
    let programs: Vec<&mut Program> = ebpf
        .programs_mut()
        .filter(|(n, _)| names.contains(n))
        .map(|(_, p)| p)
        .collect();
    std::thread::scope(|s| {
        for p in programs {
            s.spawn(move || {
                let _ = match p {
                    Program::RawTracePoint(p) => p.load(),
                    Program::PerfEvent(p) => p.load(),
                    _ => Ok(()),
                };
            });
        }
    });
}

/// The innermost cause of an error, e.g. "Operation not permitted (os error 1)".
pub fn short_error(e: &anyhow::Error) -> String {
    e.chain().last().map(|c| c.to_string()).unwrap_or_default()
}

/// Chooses and attaches a probe mode: the one asked for, or the best this kernel allows.
/// Returns it with the reasons better modes were refused, and what `ready` made: it runs
/// once the programs are loaded, before the tracepoint and perf-event programs attach, so
/// what they need in place (the unwinder's tables) is built while the verifier works.
pub fn attach<T>(
    ebpf: &mut Ebpf,
    plan: &Plan,
    flags: u32,
    hmf_btf_id: Option<u32>,
    ready: impl FnOnce() -> Result<T>,
) -> Result<(ProbeMode, Vec<String>, T)> {
    let mut refused = Vec::new();
    let mode = match plan.probe {
        Some(ProbeMode::Fentry) => {
            attach_fentry(ebpf, hmf_btf_id).context(
                "fentry on handle_mm_fault refused by this kernel or its security policy (try --probe tracepoint)",
            )?;
            ProbeMode::Fentry
        }
        Some(ProbeMode::Kprobe) => {
            attach_kprobe(ebpf).context("kprobe on handle_mm_fault failed (try --probe tracepoint)")?;
            ProbeMode::Kprobe
        }
        Some(ProbeMode::Tracepoint) => ProbeMode::Tracepoint,
        // Nothing to learn at completion: the exception tracepoints are all it needs.
        None if flags & CFG_ACCOUNTED != 0 => ProbeMode::Tracepoint,
        None => match attach_fentry(ebpf, hmf_btf_id) {
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
    let mut wanted = Vec::new();
    if (mode == ProbeMode::Tracepoint || errors_wanted) && !completion_only {
        if plan.modes & MODE_USER != 0 {
            wanted.push(prog::PAGE_FAULT_USER);
        }
        if plan.modes & MODE_KERNEL != 0 {
            wanted.push(prog::PAGE_FAULT_KERNEL);
        }
    }
    if mode == ProbeMode::Tracepoint && flags & CFG_ACCOUNTED == 0 {
        wanted.extend([prog::FAULT_MINOR, prog::FAULT_MAJOR]);
    }
    if !completion_only || flags & CFG_UNWIND_CFI != 0 {
        // Reports the faults that killed threads, folds the counts of exiting ones, and ends
        // a process's unwinder cache.
        wanted.push(prog::TASK_EXIT);
    }
    if flags & (CFG_FOLLOW | CFG_NOTIFY_TASKS) != 0 {
        wanted.push(prog::TASK_FORK);
    }
    if flags & (CFG_NOTIFY_TASKS | CFG_UNWIND_CFI) != 0 {
        wanted.push(prog::TASK_EXEC);
    }
    if flags & CFG_NOTIFY_MAPS != 0 {
        wanted.push(prog::TASK_MMAP);
    }
    load_together(ebpf, &wanted);
    let ready = ready()?;
    for name in wanted {
        match name {
            prog::PAGE_FAULT_USER => raw_tracepoint(ebpf, name, "page_fault_user")?,
            prog::PAGE_FAULT_KERNEL => raw_tracepoint(ebpf, name, "page_fault_kernel")?,
            prog::FAULT_MINOR => attach_accounting_event(ebpf, name, SoftwareEvent::PageFaultsMin)?,
            prog::FAULT_MAJOR => attach_accounting_event(ebpf, name, SoftwareEvent::PageFaultsMaj)?,
            prog::TASK_EXIT => raw_tracepoint(ebpf, name, "sched_process_exit")?,
            prog::TASK_FORK => raw_tracepoint(ebpf, name, "sched_process_fork")?,
            prog::TASK_EXEC => raw_tracepoint(ebpf, name, "sched_process_exec")?,
            // A kernel without syscall tracepoints still traces: the maps of processes that
            // exit at once are then read from /proc alone, and may come too late.
            prog::TASK_MMAP => {
                if let Err(e) = raw_tracepoint(ebpf, name, "sys_exit") {
                    refused.push(format!("mmap notices: {}", short_error(&e)));
                }
            }
            _ => unreachable!("every wanted program has its attachment above"),
        }
    }
    Ok((mode, refused, ready))
}
