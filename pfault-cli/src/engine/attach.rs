//! Choosing a probe mode, then loading and attaching the probes [`probes::select`] picks
//! for it, and only those.

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        FEntry, FExit, KProbe, PerfEvent, Program, RawTracePoint, TracePoint,
    },
    util::online_cpus,
    Btf as AyaBtf, Ebpf,
};
use aya_obj::btf::{BtfType, Func, FuncLinkage};
use pfault_common::*;

use super::{
    features::{fentry_permitted, kprobes_available},
    linger::{open_fds, Linger},
    plan::{Plan, ProbeMode},
    probes::{self, Accounted, Choice, Hook, Probe},
};

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .with_context(|| format!("pfault's eBPF object has no program {name}"))?;
    Ok(p.try_into()?)
}

/// aya's `Iter::load` looks `bpf_iter_task` up by name in an aya `Btf`; rather than have aya
/// parse the kernel's whole BTF for one id (see `fentry_permitted`), it gets a stand-in
/// holding only that function, at the id pfault's own index found.
fn task_iter_btf(id: u32) -> AyaBtf {
    let mut btf = AyaBtf::new();
    let name = btf.add_string("bpf_iter_task");
    for _ in 1..id {
        btf.add_type(BtfType::Unknown);
    }
    btf.add_type(BtfType::Func(Func::new(name, 0, FuncLinkage::Global)));
    btf
}

/// Loads one program for its hook (once: a loaded one is left as it is). `btf` is what the
/// hooks that need kernel types resolve against.
fn load(program: &mut Program, probe: &Probe, btf: Option<&AyaBtf>) -> Result<()> {
    if program.fd().is_ok() {
        return Ok(());
    }
    let btf = || btf.ok_or_else(|| anyhow!("no kernel BTF to load {} with", probe.program));
    match (program, probe.hook) {
        (Program::RawTracePoint(p), Hook::RawTracepoint(_)) => p.load()?,
        (Program::TracePoint(p), Hook::Tracepoint(..)) => p.load()?,
        (Program::PerfEvent(p), Hook::Accounting(_)) => p.load()?,
        (Program::KProbe(p), Hook::KProbe(_) | Hook::KRetProbe(_)) => p.load()?,
        (Program::FEntry(p), Hook::FEntry(f)) => p.load(f, btf()?)?,
        (Program::FExit(p), Hook::FExit(f)) => p.load(f, btf()?)?,
        (Program::Iter(p), Hook::TaskIter) => {
            p.load("task", btf()?).context("BPF task iterators: Linux 5.8+")?
        }
        (_, hook) => bail!(
            "pfault's program {} is not of the type {hook:?} needs",
            probe.program
        ),
    }
    Ok(())
}

/// Attaches a loaded program to its hook.
fn attach_one(ebpf: &mut Ebpf, probe: &Probe, linger: &mut Linger) -> Result<()> {
    let name = probe.program;
    match probe.hook {
        Hook::RawTracepoint(event) => {
            program::<RawTracePoint>(ebpf, name)?
                .attach(event)
                .with_context(|| format!("attaching to raw tracepoint {event}"))?;
        }
        Hook::Tracepoint(category, event) => {
            let before = open_fds();
            program::<TracePoint>(ebpf, name)?
                .attach(category, event)
                .with_context(|| format!("attaching to tracepoint {category}:{event}"))?;
            linger.note_since(&before);
        }
        Hook::Accounting(which) => {
            let event = match which {
                Accounted::Minor => SoftwareEvent::PageFaultsMin,
                Accounted::Major => SoftwareEvent::PageFaultsMaj,
            };
            let cpus = online_cpus().map_err(|(_, e)| e).context("reading online CPUs")?;
            // The shared program learns the kind from its cookie.
            let cookie = (name == probes::FAULT_DONE).then_some(match which {
                Accounted::Minor => KIND_MINOR,
                Accounted::Major => KIND_MAJOR,
            } as u64);
            let pe: &mut PerfEvent = program(ebpf, name)?;
            for &cpu in &cpus {
                pe.attach_with_cookie(
                    PerfEventConfig::Software(event),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Period(1),
                    false,
                    cookie,
                )
                .with_context(|| format!("attaching {name} to the page-fault perf event on CPU {cpu}"))?;
            }
        }
        Hook::KProbe(f) | Hook::KRetProbe(f) => {
            program::<KProbe>(ebpf, name)?.attach(f, 0)?;
        }
        Hook::FEntry(_) => {
            program::<FEntry>(ebpf, name)?.attach()?;
        }
        Hook::FExit(_) => {
            program::<FExit>(ebpf, name)?.attach()?;
        }
        // Run on demand, not attached.
        Hook::TaskIter => {}
    }
    Ok(())
}

fn load_and_attach(ebpf: &mut Ebpf, probe: &Probe, btf: Option<&AyaBtf>) -> Result<()> {
    let p = ebpf
        .program_mut(probe.program)
        .with_context(|| format!("pfault's eBPF object has no program {}", probe.program))?;
    load(p, probe, btf).with_context(|| format!("loading {}", probe.program))?;
    // The handle_mm_fault hooks: none is a classic tracepoint.
    attach_one(ebpf, probe, &mut Linger::default())
}

/// Attaches the `handle_mm_fault` hooks of `mode`, having asked the kernel the cheapest way
/// whether it allows them.
fn attach_mode(ebpf: &mut Ebpf, mode: ProbeMode, hmf_btf_id: Option<u32>) -> Result<()> {
    let btf = match mode {
        ProbeMode::Fentry => {
            fentry_permitted(hmf_btf_id).context("the kernel refused a test fentry program")?;
            Some(AyaBtf::from_sys_fs()?)
        }
        ProbeMode::Kprobe if !kprobes_available() => bail!("this kernel has no kprobes (CONFIG_KPROBES)"),
        _ => None,
    };
    for probe in probes::mode_probes(mode) {
        load_and_attach(ebpf, probe, btf.as_ref())?;
    }
    Ok(())
}

/// Loads the programs of `chosen` side by side, a thread each (a program two probes share,
/// once): the verifier checks one program per call, and most of pfault's start-up is its
/// time. Returns each probe's result, in order.
fn load_together(ebpf: &mut Ebpf, chosen: &[&Probe], btf: Option<&AyaBtf>) -> Vec<Result<()>> {
    let mut programs: Vec<(&Probe, Option<&mut Program>)> = Vec::new();
    for p in chosen {
        if !programs.iter().any(|(q, _)| q.program == p.program) {
            programs.push((p, None));
        }
    }
    for (name, program) in ebpf.programs_mut() {
        if let Some(slot) = programs.iter_mut().find(|(p, _)| p.program == name) {
            slot.1 = Some(program);
        }
    }
    let names: Vec<&str> = programs.iter().map(|(p, _)| p.program).collect();
    let loaded: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = programs
            .into_iter()
            .map(|(probe, program)| {
                s.spawn(move || match program {
                    Some(p) => load(p, probe, btf).with_context(|| format!("loading {}", probe.program)),
                    None => Err(anyhow!("pfault's eBPF object has no program {}", probe.program)),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("loading a program panicked")))
            })
            .collect()
    });
    // A shared program's result, for each probe that needs it.
    let ok: Vec<bool> = loaded.iter().map(Result::is_ok).collect();
    let mut loaded: Vec<Option<Result<()>>> = loaded.into_iter().map(Some).collect();
    chosen
        .iter()
        .map(|p| {
            let i = names.iter().position(|n| *n == p.program).unwrap_or(0);
            loaded[i].take().unwrap_or_else(|| {
                if ok[i] {
                    Ok(())
                } else {
                    Err(anyhow!("loading {} failed", p.program))
                }
            })
        })
        .collect()
}

/// The innermost cause of an error, e.g. "Operation not permitted (os error 1)".
pub(crate) fn short_error(e: &anyhow::Error) -> String {
    e.chain().last().map(|c| c.to_string()).unwrap_or_default()
}

/// The probe mode asked for, or the best this kernel allows, with its `handle_mm_fault`
/// hooks attached; why better modes were refused goes to `refused`.
fn choose_mode(
    ebpf: &mut Ebpf,
    plan: &Plan,
    flags: u32,
    hmf_btf_id: Option<u32>,
    refused: &mut Vec<String>,
) -> Result<ProbeMode> {
    if let Some(mode) = plan.probe {
        attach_mode(ebpf, mode, hmf_btf_id).with_context(|| {
            format!(
                "--probe {}: the kernel refused it (try --probe tracepoint)",
                mode.name()
            )
        })?;
        return Ok(mode);
    }
    // Nothing to learn at completion: the exception tracepoints are all it needs.
    if flags & CFG_ACCOUNTED != 0 {
        return Ok(ProbeMode::Tracepoint);
    }
    for mode in [ProbeMode::Fentry, ProbeMode::Kprobe] {
        match attach_mode(ebpf, mode, hmf_btf_id) {
            Ok(()) => return Ok(mode),
            Err(e) => refused.push(format!("{}: {}", mode.name(), short_error(&e))),
        }
    }
    Ok(ProbeMode::Tracepoint)
}

/// Chooses and attaches a probe mode, then the rest of the probes the plan needs. Returns the
/// mode with the reasons better modes (or optional probes) were refused, what `ready`
/// made, and the classic tracepoints' descriptors to hand off at the end: `ready` runs once
/// the programs are loaded, before the others attach, so what they need in place (the
/// unwinder's tables) is built while the verifier works. `compat`: the compat object is
/// loaded (its kernels attach no cookies).
pub(crate) fn attach<T>(
    ebpf: &mut Ebpf,
    plan: &Plan,
    flags: u32,
    hmf_btf_id: Option<u32>,
    iter_btf_id: Option<u32>,
    compat: bool,
    ready: impl FnOnce() -> Result<T>,
) -> Result<(ProbeMode, Vec<String>, T, Linger)> {
    let mut refused = Vec::new();
    let mut linger = Linger::default();
    let mode = choose_mode(ebpf, plan, flags, hmf_btf_id, &mut refused)?;
    let choice = Choice {
        mode,
        flags,
        kinds: plan.kinds,
        modes: plan.modes,
        cookies: !compat,
    };
    let rest: Vec<&Probe> = probes::select(&choice)
        .into_iter()
        .filter(|p| p.mode_probe.is_none())
        .collect();
    let iter_btf = iter_btf_id.map(task_iter_btf);
    let loaded = load_together(ebpf, &rest, iter_btf.as_ref());
    let ready = ready()?;
    for (probe, loaded) in rest.into_iter().zip(loaded) {
        match (
            loaded.and_then(|()| attach_one(ebpf, probe, &mut linger)),
            probe.optional,
        ) {
            (Ok(()), _) => {}
            (Err(e), Some(what)) => refused.push(format!("{what}: {}", short_error(&e))),
            (Err(e), None) => return Err(e),
        }
    }
    Ok((mode, refused, ready, linger))
}
