//! `pfault trace`: one line per page fault, with its kind, latency and mapping (systemtap's
//! pfaults.stp, bcc's `trace -U t:exceptions:page_fault_user`, with more in each line).

use std::io::Write;

use anyhow::Result;
use pfault_common::*;
use serde::Serialize;

use crate::{
    agg::task_seen,
    mappings::cstr,
    output::{json, Format, OutputArgs},
    probes::{Engine, Plan, ProbeMode, VmFaultNames},
    session::{event_ring, DurationArgs, Handler, Session, TargetArgs},
    symbolize::{Frame, Symbols},
};

/// Filters every tracing subcommand applies in the kernel.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FaultFilterArgs {
    /// Only faults raised in user mode
    #[arg(long, conflicts_with = "kernel_faults")]
    pub user_faults: bool,
    /// Only faults raised in kernel mode (copy_to_user and the like)
    #[arg(long)]
    pub kernel_faults: bool,
    /// Only these kinds of fault
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub kind: Vec<Kind>,
    /// Only faults that took at least this many microseconds
    #[arg(long, value_name = "US")]
    pub min_latency: Option<f64>,
    /// Probe mode (default: the best this kernel allows, see `pfault probes`)
    #[arg(long, value_enum)]
    pub probe: Option<ProbeMode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Minor,
    Major,
    Error,
}

impl FaultFilterArgs {
    /// A plan with these filters applied.
    pub fn plan(&self, flags: u32) -> Plan {
        let mut plan = Plan::new(flags);
        if !self.kind.is_empty() {
            plan.kinds = self.kind.iter().map(|k| 1 << *k as u32).fold(0, |a, b| a | b);
        }
        if self.user_faults {
            plan.modes = MODE_USER;
        }
        if self.kernel_faults {
            plan.modes = MODE_KERNEL;
        }
        plan.min_latency_ns = self.min_latency.map(|us| (us * 1000.0) as u64).unwrap_or(0);
        plan.probe = self.probe;
        plan
    }
}

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Only this thread
    #[arg(short, long, value_name = "TID")]
    pub tid: Option<u32>,
    /// Show the user stack under each fault
    #[arg(short = 'U', long)]
    pub user_stack: bool,
    /// Show the kernel stack under each fault
    #[arg(short = 'K', long)]
    pub kernel_stack: bool,
    #[command(flatten)]
    pub filter: FaultFilterArgs,
    #[command(flatten)]
    pub duration: DurationArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Ring buffer size in MiB (a power of two)
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub ringbuf_mb: u32,
}

pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_MINOR => "minor",
        KIND_MAJOR => "major",
        _ => "error",
    }
}

fn access(error_code: u32) -> (&'static str, &'static str) {
    if error_code & PF_INSTR != 0 {
        ("exec", "X")
    } else if error_code & PF_WRITE != 0 {
        ("write", "W")
    } else {
        ("read", "R")
    }
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    addr: u64,
    ip: u64,
    access: &'a str,
    mode: &'a str,
    protection: bool,
    kind: &'a str,
    flags: Vec<&'a str>,
    latency_ns: Option<u64>,
    mapping: &'a str,
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ustack: Option<&'a [Frame]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kstack: Option<&'a [Frame]>,
}

struct Printer {
    out: Box<dyn Write>,
    format: Format,
    syms: Symbols,
    names: VmFaultNames,
    started_ns: u64,
    with_flags: bool,
    events: u64,
}

fn stack_of(raw: &[u64], bytes: u16) -> &[u64] {
    &raw[..(bytes as usize / 8).min(raw.len())]
}

impl Printer {
    fn header(&mut self) -> Result<()> {
        if self.format == Format::Text {
            let flags = if self.with_flags {
                format!("{:<16} ", "FLAGS")
            } else {
                String::new()
            };
            writeln!(
                self.out,
                "{:<12} {:>7} {:>7} {:<16} {:>18} {:<3} {:<4} {:<5} {:>9} {flags}MAPPING",
                "TIME(s)", "PID", "TID", "COMM", "ADDRESS", "ACC", "MODE", "KIND", "LAT(us)"
            )?;
        }
        Ok(())
    }
}

impl Handler for Printer {
    fn record(&mut self, data: &[u8]) -> Result<()> {
        if let Some(t) = task_seen(data) {
            self.syms.process_changed(&t);
            return Ok(());
        }
        if data.len() < size_of::<FaultEvent>() {
            return Ok(());
        }
        let ev: FaultEvent = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        let (ustack, kstack) = if data.len() >= size_of::<FaultEventStacks>() {
            let s: FaultEventStacks = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
            (
                Some(self.syms.user(ev.pid, stack_of(&s.ustack, ev.ustack_bytes))),
                Some(self.syms.kernel(stack_of(&s.kstack, ev.kstack_bytes))),
            )
        } else {
            (None, None)
        };
        self.events += 1;
        let mapping = self.syms.maps.describe(ev.pid, ev.addr, &ev.map);
        let (acc_long, acc_short) = access(ev.error_code);
        let mode = if ev.error_code & PF_USER != 0 {
            "user"
        } else {
            "kernel"
        };
        let flags = self.names.decode(ev.vm_fault);
        let latency = (ev.kind != KIND_ERROR).then_some(ev.latency_ns);
        let offset = (ev.map.kind == MAP_FILE).then_some(ev.map.offset);
        match self.format {
            Format::Json => json::write_line(
                &mut self.out,
                &JsonEvent {
                    ts_ns: ev.ts_ns,
                    pid: ev.pid,
                    tid: ev.tid,
                    comm: cstr(&ev.comm),
                    addr: ev.addr,
                    ip: ev.ip,
                    access: acc_long,
                    mode,
                    protection: ev.error_code & PF_PROT != 0,
                    kind: kind_name(ev.kind),
                    flags,
                    latency_ns: latency,
                    mapping: &mapping,
                    offset,
                    ustack: ustack.as_deref(),
                    kstack: kstack.as_deref(),
                },
            )?,
            Format::Text => {
                let t = ev.ts_ns.saturating_sub(self.started_ns) as f64 / 1e9;
                let lat = latency
                    .map(|l| format!("{:.1}", l as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into());
                let flags = if self.with_flags {
                    format!(
                        "{:<16} ",
                        if flags.is_empty() {
                            "-".into()
                        } else {
                            flags.join("|")
                        }
                    )
                } else {
                    String::new()
                };
                let mapping = match offset {
                    Some(o) => format!("{mapping}+{o:#x}"),
                    None => mapping,
                };
                writeln!(
                    self.out,
                    "{t:<12.6} {:>7} {:>7} {:<16} {:>#18x} {acc_short:<3} {:<4} {:<5} {lat:>9} {flags}{mapping}",
                    ev.pid,
                    ev.tid,
                    cstr(&ev.comm),
                    ev.addr,
                    &mode[..4],
                    kind_name(ev.kind),
                )?;
                for f in kstack.iter().flatten().chain(ustack.iter().flatten()) {
                    writeln!(self.out, "        {}", f.text())?;
                }
            }
        }
        Ok(())
    }

    fn idle(&mut self, _engine: &mut Engine) {
        self.syms.maps.refresh_young();
    }
}

pub async fn run(args: TraceArgs) -> Result<Option<i32>> {
    // Processes are noted at their first fault and at exec, so their maps (full paths, and
    // symbols with -U) are read while they live.
    let mut flags = CFG_OUT_EVENTS | CFG_MAPPING | CFG_NOTIFY_TASKS;
    if args.user_stack {
        flags |= CFG_USTACK;
    }
    if args.kernel_stack {
        flags |= CFG_KSTACK;
    }
    let mut plan = args.filter.plan(flags);
    plan.ringbuf_bytes = args.ringbuf_mb.max(1).next_power_of_two() << 20;
    let out = args.output.open()?;
    let mut session = Session::start(&args.target, args.tid, &plan)?;
    let mut ring = event_ring(&mut session.engine)?;
    let with_flags = session.engine.mode != ProbeMode::Tracepoint;
    let mut p = Printer {
        out,
        format: args.output.format,
        syms: Symbols::default(),
        names: session.engine.vm_fault_names.clone(),
        started_ns: session.engine.started_ns,
        with_flags,
        events: 0,
    };
    if let Some(pid) = args.target.pid {
        p.syms.note_process(pid);
    }
    p.header()?;
    let end = session.run(&args.duration, None, Some(&mut ring), &mut p).await?;
    p.out.flush()?;
    let losses = session.engine.losses()?;
    eprintln!(
        "pfault: {} events, {} lost (ring buffer full){}",
        p.events,
        losses.ringbuf,
        losses.others()
    );
    Ok(end.exit_code())
}
