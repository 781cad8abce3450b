//! `pfault stackcount`: fault counts per stack, counted in the kernel (bcc's
//! `stackcount t:exceptions:page_fault_user`, bpftrace's faults.bt), symbolized, folded or
//! drawn as a flame graph.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use pfault_common::*;
use serde::Serialize;

use crate::{
    args::{DurationArgs, FaultFilterArgs, IntervalArgs, Kind, OutputArgs, TargetArgs},
    engine::{Engine, Plan, Tunable},
    output::{flamegraph, folded, json, Format, LateFile},
    procfs::cstr,
    records::Record,
    session::{Handler, Session},
    symbolize::{Frame, Symbols},
};

#[derive(clap::Args, Debug)]
pub struct StackcountArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// User stacks only
    #[arg(short = 'U', long, conflicts_with = "kernel_stacks_only")]
    pub user_stacks_only: bool,
    /// Kernel stacks only
    #[arg(short = 'K', long)]
    pub kernel_stacks_only: bool,
    /// One entry per process (pid and comm), as bcc's -P
    #[arg(short = 'P', long)]
    pub per_pid: bool,
    /// Minor faults only (same as --kind minor)
    #[arg(long, conflicts_with_all = ["major", "kind"])]
    pub minor: bool,
    /// Major faults only (same as --kind major)
    #[arg(long, conflicts_with = "kind")]
    pub major: bool,
    #[command(flatten)]
    pub filter: FaultFilterArgs,
    #[command(flatten)]
    pub duration: DurationArgs,
    #[command(flatten)]
    pub interval: IntervalArgs,
    /// Folded output, one `comm;root;...;leaf COUNT` line per stack (flamegraph.pl, inferno)
    #[arg(short = 'f', long, conflicts_with = "format")]
    pub folded: bool,
    /// Also draw a page-fault flame graph to FILE (SVG)
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Stack-map size: distinct stacks kept
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub stack_entries: u32,
    /// Count-map size: distinct (process, stack, kind) entries kept
    #[arg(long, value_name = "N", default_value_t = 40960)]
    pub map_entries: u32,
}

#[derive(Serialize)]
struct JsonStack<'a> {
    pid: Option<u32>,
    comm: &'a str,
    kind: &'a str,
    count: u64,
    ustack: &'a [Frame],
    kstack: &'a [Frame],
}

/// One counted stack, symbolized.
struct Row {
    key: StackKey,
    count: u64,
    ustack: Vec<Frame>,
    kstack: Vec<Frame>,
}

struct Counter {
    out: Box<dyn Write>,
    svg: Option<LateFile>,
    args: StackcountArgs,
    syms: Symbols,
    completion_only: bool,
    last_scan: Instant,
}

const SCAN_EVERY: Duration = Duration::from_millis(500);

/// Every stack count, from `STACK_COUNTS` and the `STACK_SLOTS` array (whose ids are user
/// stacks if `user`), one entry per key.
fn stack_counts(engine: &mut Engine, reset: bool, user: bool) -> Result<Vec<(StackKey, u64)>> {
    let mut counts: std::collections::HashMap<StackKey, u64> =
        engine.stack_counts(reset)?.into_iter().collect();
    for (id, slot) in engine.stack_slots(reset)? {
        for (kind, &n) in slot.counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            let key = StackKey {
                tgid: slot.tgid as u32,
                kind: kind as u32,
                ustack_id: if user { id as i32 } else { -1 },
                kstack_id: if user { -1 } else { id as i32 },
                comm: slot.comm,
            };
            *counts.entry(key).or_default() += n;
        }
    }
    Ok(counts.into_iter().collect())
}

impl Counter {
    fn frames(&mut self, engine: &Engine, id: i32, pid: u32, user: bool) -> Vec<Frame> {
        let Some(ips) = u32::try_from(id).ok().and_then(|id| engine.stack_frames(id).ok()) else {
            return Vec::new();
        };
        if user {
            self.syms.user(pid, &ips)
        } else {
            self.syms.kernel(&ips)
        }
    }

    fn collect(&mut self, engine: &mut Engine, reset: bool) -> Result<Vec<Row>> {
        let counts = stack_counts(engine, reset, !self.args.kernel_stacks_only)?;
        let mut rows = Vec::with_capacity(counts.len());
        for (key, count) in counts {
            let ustack = self.frames(engine, key.ustack_id, key.tgid, true);
            let kstack = self.frames(engine, key.kstack_id, 0, false);
            rows.push(Row {
                key,
                count,
                ustack,
                kstack,
            });
        }
        if !self.args.per_pid {
            rows = merge_processes(rows);
        }
        if reset {
            engine.clear_stacks()?;
        }
        rows.sort_by_key(|r| r.count);
        Ok(rows)
    }

    /// `comm;user root..leaf;kernel root..leaf_[k]` as bcc folds them.
    fn fold(&self, r: &Row, with_kind: bool) -> String {
        let mut frames = vec![cstr(&r.key.comm).to_string()];
        if self.args.per_pid {
            frames[0] = format!("{} [{}]", frames[0], r.key.tgid);
        }
        frames.extend(r.ustack.iter().rev().map(Frame::name));
        frames.extend(r.kstack.iter().rev().map(|f| format!("{}_[k]", f.name())));
        if with_kind {
            // The fault's kind on top, coloured apart: the flame graph shows minor and major.
            let kind = Kind::from_raw(r.key.kind as u8).name();
            frames.push(if r.key.kind as u8 == KIND_MINOR {
                format!("{kind}_fault")
            } else {
                format!("{kind}_fault_[k]")
            });
        }
        folded::line(&frames, r.count)
    }

    fn print(&mut self, rows: &[Row]) -> Result<()> {
        if self.args.folded {
            let lines: Vec<String> = rows.iter().map(|r| self.fold(r, false)).collect();
            return folded::write(&mut self.out, &lines);
        }
        match self.args.output.format {
            Format::Json => {
                for r in rows {
                    json::write_line(
                        &mut self.out,
                        &JsonStack {
                            pid: self.args.per_pid.then_some(r.key.tgid),
                            comm: cstr(&r.key.comm),
                            kind: Kind::from_raw(r.key.kind as u8).name(),
                            count: r.count,
                            ustack: &r.ustack,
                            kstack: &r.kstack,
                        },
                    )?;
                }
            }
            Format::Text => {
                // As bcc prints: kernel frames, "--", user frames, who, then the count;
                // least frequent first so the heaviest ends at the bottom of the terminal.
                for r in rows {
                    for f in &r.kstack {
                        writeln!(self.out, "  {}", f.text())?;
                    }
                    if !r.kstack.is_empty() && !r.ustack.is_empty() {
                        writeln!(self.out, "  --")?;
                    }
                    for f in &r.ustack {
                        writeln!(self.out, "  {}", f.text())?;
                    }
                    let who = if self.args.per_pid {
                        format!("{} [{}]", cstr(&r.key.comm), r.key.tgid)
                    } else {
                        cstr(&r.key.comm).to_string()
                    };
                    writeln!(
                        self.out,
                        "    {who} ({} faults)",
                        Kind::from_raw(r.key.kind as u8).name()
                    )?;
                    writeln!(self.out, "    {}\n", r.count)?;
                }
            }
        }
        Ok(())
    }
}

/// Without -P, one row per (comm, kind, symbolized stack) across processes: the kernel keys
/// by process because user addresses only mean something within one.
fn merge_processes(rows: Vec<Row>) -> Vec<Row> {
    let mut merged: std::collections::HashMap<(String, u32, Vec<String>, Vec<String>), Row> =
        Default::default();
    for mut r in rows {
        let texts = |fs: &[Frame]| fs.iter().map(Frame::text).collect::<Vec<_>>();
        let key = (
            cstr(&r.key.comm).to_string(),
            r.key.kind,
            texts(&r.ustack),
            texts(&r.kstack),
        );
        match merged.get_mut(&key) {
            Some(m) => m.count += r.count,
            None => {
                r.key.tgid = 0;
                merged.insert(key, r);
            }
        }
    }
    merged.into_values().collect()
}

impl Handler for Counter {
    fn record(&mut self, record: Record) -> Result<()> {
        if let Record::Task(t) = record {
            self.syms.process_changed(&t);
        }
        Ok(())
    }

    fn idle(&mut self, engine: &mut Engine) {
        // Counting at completion alone sends no notice of new processes: find them in the
        // count maps, while they live.
        if self.completion_only && self.last_scan.elapsed() >= SCAN_EVERY {
            self.last_scan = Instant::now();
            for tgid in engine.stack_count_tgids().unwrap_or_default() {
                self.syms.note_process(tgid);
            }
            for (_, slot) in engine.stack_slots(false).unwrap_or_default() {
                self.syms.note_process(slot.tgid as u32);
            }
        }
        self.syms.maps.refresh_young();
    }

    fn tick(&mut self, engine: &mut Engine, last: bool) -> Result<()> {
        let rows = self.collect(engine, !last)?;
        if !last && self.args.output.format == Format::Text && !self.args.folded {
            writeln!(self.out, "[{}]", crate::output::clock())?;
        }
        self.print(&rows)?;
        if last {
            if let Some(svg) = &self.svg {
                let lines: Vec<String> = rows.iter().map(|r| self.fold(r, true)).collect();
                flamegraph::write_svg(svg, "Page faults", &lines)?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

pub async fn run(mut args: StackcountArgs) -> Result<Option<i32>> {
    let mut flags = CFG_OUT_STACKS | CFG_NOTIFY_TASKS;
    if !args.kernel_stacks_only {
        flags |= CFG_USTACK;
    }
    if !args.user_stacks_only {
        flags |= CFG_KSTACK;
    }
    if args.minor {
        args.filter.kind = vec![Kind::Minor];
    }
    if args.major {
        args.filter.kind = vec![Kind::Major];
    }
    // Errors and the filters that need each fault's entry take the entry probe; minor and
    // major alone are counted at completion with one probe per fault (tracepoint path).
    if args.filter.kind.is_empty() {
        args.filter.kind = vec![Kind::Minor, Kind::Major];
    }
    let completion_only = !args.filter.kind.contains(&Kind::Error) && !args.filter.needs_fault_entry();
    if completion_only {
        flags |= CFG_COMPLETION_ONLY;
    }
    // One kind of stack: its id alone is the slot (see STACK_SLOTS).
    if args.user_stacks_only || args.kernel_stacks_only {
        flags |= CFG_STACK_SLOTS;
    }
    let mut plan = Plan::filtered(flags, &args.filter);
    plan.stack_entries = args.stack_entries;
    plan.agg_entries = args.map_entries;
    plan.tunables = vec![Tunable::STACKS, Tunable::STACK_COUNTS];
    // Only process notices go through the ring buffer here.
    plan.ringbuf_bytes = 256 << 10;
    let out = args.output.open()?;
    let svg = args
        .svg
        .as_deref()
        .map(|p| LateFile::create(p, "--svg"))
        .transpose()?;
    let mut session = Session::start(&args.target, None, &plan)?;
    let mut ring = session.events()?;
    let interval = args.interval.interval;
    let duration = args.duration.clone();
    let format = args.output.format;
    let mut counter = Counter {
        completion_only,
        last_scan: Instant::now(),
        out,
        svg,
        syms: Symbols::default(),
        args,
    };
    if let Some(pid) = counter.args.target.pid {
        counter.syms.note_process(pid);
    }
    let end = session
        .run(&duration, interval, Some(&mut ring), &mut counter)
        .await?;
    session.finish(end, format, None, "process notices")
}
