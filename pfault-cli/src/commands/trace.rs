//! `pfault trace`: one line per page fault, with its kind, latency and mapping (systemtap's
//! pfaults.stp, bcc's `trace -U t:exceptions:page_fault_user`, with more in each line).

use std::io::Write;

use anyhow::Result;
use pfault_common::*;

use crate::{
    args::{check_size, DurationArgs, FaultFilterArgs, OutputArgs, TargetArgs, UnwindArgs},
    engine::{Engine, Kind, ProbeMode, Tunable, VmFaultNames},
    output::{columns::Columns, escape, json, Format},
    procfs::cstr,
    records::Record,
    session::{Handler, Session},
    symbolize::Symbols,
};

/// The kernel takes ring buffers of a power-of-two size below 4 GiB.
const MAX_RINGBUF_MB: u32 = 2048;

#[derive(clap::Args, Debug)]
pub(crate) struct TraceArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// Only this thread
    #[arg(short, long, value_name = "TID")]
    pub(crate) tid: Option<u32>,
    /// Show the user stack under each fault
    #[arg(short = 'U', long)]
    pub(crate) user_stack: bool,
    /// Show the kernel stack under each fault
    #[arg(short = 'K', long)]
    pub(crate) kernel_stack: bool,
    #[command(flatten)]
    pub(crate) filter: FaultFilterArgs,
    #[command(flatten)]
    pub(crate) unwind: UnwindArgs,
    #[command(flatten)]
    pub(crate) duration: DurationArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    /// Ring buffer size in MiB (rounded up to a power of two; at most 2048). Default: 1 MiB
    /// per CPU (4 with -U or -K), at least 2: what the consumer keeps up with, without the
    /// memory and start-up of a large buffer on a small host
    #[arg(long, value_name = "MIB")]
    pub(crate) ringbuf_mb: Option<u32>,
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

struct Printer {
    out: Box<dyn Write>,
    format: Format,
    syms: Symbols,
    names: VmFaultNames,
    started_ns: u64,
    with_flags: bool,
    events: u64,
    /// The JSON line being built (reused: no allocation per event).
    line: Vec<u8>,
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
                "{:<12} {:>7} {:>7} {:<16} {:>18} {:<3} {:<4} {:<5} {:>4} {:>9} {flags}MAPPING",
                "TIME(s)", "PID", "TID", "COMM", "ADDRESS", "ACC", "MODE", "KIND", "PAGE", "LAT(us)"
            )?;
        }
        Ok(())
    }
}

impl Handler for Printer {
    fn record(&mut self, record: Record) -> Result<()> {
        let (ev, stacks) = match record {
            Record::Fault(ev, stacks) => (ev, stacks),
            notice => {
                self.syms.notice(&notice);
                return Ok(());
            }
        };
        let (ustack, kstack) = match stacks {
            Some(s) => (
                Some({
                    let taken = self.syms.arrived(ev.pid);
                    self.syms.user(ev.pid, &s.user, taken)
                }),
                Some(self.syms.kernel(&s.kernel)),
            ),
            None => (None, None),
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
        // 0: an error fault mapped nothing, or this kernel's page tables cannot be read.
        let page_size = (ev.page_shift != 0).then(|| 1u64 << (ev.page_shift & 63));
        let offset = (ev.map.kind == MAP_FILE).then_some(ev.map.offset);
        match self.format {
            // Built by hand: serde's generic writer would cost more than the rest of the event.
            Format::Json => {
                self.line.clear();
                let mut o = json::Object::new(&mut self.line);
                o.u64("ts_ns", ev.ts_ns)
                    .u64("pid", ev.pid as u64)
                    .u64("tid", ev.tid as u64)
                    .str("comm", cstr(&ev.comm))
                    .u64("addr", ev.addr)
                    .u64("ip", ev.ip)
                    .str("access", acc_long)
                    .str("mode", mode)
                    .bool("protection", ev.error_code & PF_PROT != 0)
                    .str("kind", Kind::from_raw(ev.kind).name())
                    .strs("flags", &flags)
                    .opt_u64("latency_ns", latency)
                    .opt_u64("page_size", page_size)
                    .str("mapping", &mapping)
                    .opt_u64("offset", offset);
                if let Some(u) = &ustack {
                    o.value("ustack", u)?;
                }
                if let Some(k) = &kstack {
                    o.value("kstack", k)?;
                }
                o.end();
                self.out.write_all(&self.line)?;
            }
            Format::Text => {
                // Rounded to the units printed: microseconds of run time, tenths of a
                // microsecond of latency.
                let t_us = (ev.ts_ns.saturating_sub(self.started_ns) + 500) / 1000;
                let mut c = Columns::new(&mut self.line);
                c.fixed(t_us, 6, 12, true)
                    .uint(ev.pid as u64, 7)
                    .uint(ev.tid as u64, 7)
                    .left(cstr(&ev.comm), 16)
                    .hex(ev.addr, 18)
                    .left(acc_short, 3)
                    .left(&mode[..4], 4)
                    .left(Kind::from_raw(ev.kind).name(), 5)
                    .right(page_size.map_or("-", size_label), 4);
                match latency {
                    Some(l) => c.fixed((l + 50) / 100, 1, 9, false),
                    None => c.right("-", 9),
                };
                if self.with_flags {
                    if flags.is_empty() {
                        c.left("-", 16);
                    } else {
                        c.left(&flags.join("|"), 16);
                    }
                }
                match offset {
                    Some(o) => c.end(&format!("{mapping}+{o:#x}")),
                    None => c.end(&mapping),
                }
                self.out.write_all(&self.line)?;
                for f in kstack.iter().flatten().chain(ustack.iter().flatten()) {
                    writeln!(self.out, "        {}", escape(&f.text()))?;
                }
            }
        }
        Ok(())
    }

    fn idle(&mut self, _engine: &mut Engine) {
        self.syms.maps.refresh_young();
    }

    fn tick(&mut self, _engine: &mut Engine, last: bool) -> Result<()> {
        if last {
            self.out.flush()?;
        }
        Ok(())
    }
}

/// A page size as the PAGE column shows it.
fn size_label(bytes: u64) -> &'static str {
    match bytes {
        4096 => "4K",
        0x20_0000 => "2M",
        0x4000_0000 => "1G",
        _ => "?",
    }
}

/// Decodes `records` and writes them as `trace` does, into `out` (a buffered file): the
/// consumer's whole cost per event, without a kernel side. Returns the events written.
pub fn replay(records: &[Vec<u8>], format: Format, out: Box<dyn Write>) -> Result<u64> {
    let mut p = Printer {
        out: Box::new(crate::output::lines::Lines::new(out, false)),
        format,
        syms: Symbols::default(),
        names: VmFaultNames::default(),
        started_ns: 0,
        with_flags: false,
        events: 0,
        line: Vec::new(),
    };
    for r in records {
        p.record(crate::records::decode(r)?)?;
    }
    p.out.flush()?;
    Ok(p.events)
}

pub(crate) async fn run(args: TraceArgs) -> Result<Option<i32>> {
    let ringbuf_mb = match args.ringbuf_mb {
        Some(mb) => check_size("--ringbuf-mb", mb, 1, MAX_RINGBUF_MB, " MiB")?,
        None => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            let per_cpu = if args.user_stack || args.kernel_stack {
                4
            } else {
                1
            };
            (cpus * per_cpu).clamp(2, MAX_RINGBUF_MB)
        }
    };
    // Processes are noted at their first fault and at exec, so their maps (full paths, and
    // symbols with -U) are read while they live.
    let mut flags = CFG_OUT_EVENTS | CFG_MAPPING | CFG_NOTIFY_TASKS | CFG_NOTIFY_MAPS | CFG_PAGE_SIZE;
    if args.user_stack {
        flags |= CFG_USTACK;
    }
    if args.kernel_stack {
        flags |= CFG_KSTACK;
    }
    let mut plan = args.filter.plan(flags);
    plan.page_sizes_optional = true;
    args.unwind.apply(&mut plan);
    plan.ringbuf_bytes = ringbuf_mb.next_power_of_two() << 20;
    plan.tunables = vec![Tunable::RINGBUF];
    let out = args.output.reserve()?;
    let mut session = Session::start(&args.target, args.tid, &plan)?;
    let out = out.open()?;
    let mut ring = session.events()?;
    let with_flags = session.engine.mode != ProbeMode::Tracepoint;
    let mut p = Printer {
        out,
        format: args.output.format,
        syms: session.symbols(args.target.pid),
        names: session.engine.vm_fault_names.clone(),
        started_ns: session.engine.started_ns,
        with_flags,
        events: 0,
        line: Vec::new(),
    };
    p.header()?;
    let end = session.run(&args.duration, None, Some(&mut ring), &mut p).await?;
    session.finish(end, args.output.format, Some(p.events), "events")
}
