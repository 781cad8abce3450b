//! `pfault stackcount`: fault counts per stack, counted in the kernel (bcc's
//! `stackcount t:exceptions:page_fault_user`, bpftrace's faults.bt), symbolized, folded or
//! drawn as a flame graph.

use std::{collections::HashMap, io::Write, path::PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::{
    args::{DurationArgs, FaultFilterArgs, IntervalArgs, OutputArgs, TargetArgs, UnwindArgs},
    engine::{Engine, Kind},
    output::{escape, flamegraph, folded, json, Format, Reserved},
    records::Record,
    session::{Handler, Session},
    stacks::{self, sorted, Row, StackCounts, Weight, Weights},
    symbolize::Frame,
};

#[derive(clap::Args, Debug)]
pub(crate) struct StackcountArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// User stacks only
    #[arg(short = 'U', long, conflicts_with = "kernel_stacks_only")]
    pub(crate) user_stacks_only: bool,
    /// Kernel stacks only
    #[arg(short = 'K', long)]
    pub(crate) kernel_stacks_only: bool,
    /// One entry per process (pid and comm), as bcc's -P
    #[arg(short = 'P', long)]
    pub(crate) per_pid: bool,
    /// Minor faults only (same as --kind minor)
    #[arg(long, conflicts_with_all = ["major", "kind"])]
    pub(crate) minor: bool,
    /// Major faults only (same as --kind major)
    #[arg(long, conflicts_with = "kind")]
    pub(crate) major: bool,
    #[command(flatten)]
    pub(crate) filter: FaultFilterArgs,
    #[command(flatten)]
    pub(crate) unwind: UnwindArgs,
    #[command(flatten)]
    pub(crate) duration: DurationArgs,
    #[command(flatten)]
    pub(crate) interval: IntervalArgs,
    /// What each stack's faults weigh in text, folded, SVG and JSON output: how many they
    /// are, their time from entry to completion (costs what `stat -L` costs over `stat`), or
    /// the bytes of the pages they mapped. A pprof profile carries all three
    #[arg(long, value_enum, default_value_t)]
    pub(crate) weight: Weight,
    /// Folded output, one `comm;root;...;leaf WEIGHT` line per stack (flamegraph.pl, inferno)
    #[arg(short = 'f', long, conflicts_with = "format")]
    pub(crate) folded: bool,
    /// Also draw a page-fault flame graph to FILE (SVG)
    #[arg(long, value_name = "FILE")]
    pub(crate) svg: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) output: OutputArgs<StackFormat>,
    /// Print each frame's address and offset (as bcc's -v), and mark the user frames reached
    /// by a frame-pointer step ("(by frame pointer)"; "by_fp" in JSON); stacks that differ in
    /// them are then counted apart
    #[arg(short = 'v', long)]
    pub(crate) addresses: bool,
    /// Count-map size: distinct (process, kind, stack) entries kept; entries are allocated as
    /// they are used (120 bytes each)
    #[arg(long, value_name = "N", default_value_t = pfault_common::capacity::STACK_COUNTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) map_entries: u32,
}

/// What stackcount writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StackFormat {
    /// Stacks as bcc's stackcount prints them
    #[default]
    Text,
    /// JSON Lines: one stack per line
    Json,
    /// A gzipped pprof profile of the whole run (go tool pprof, Pyroscope, Parca, speedscope)
    Pprof,
}

#[derive(Serialize)]
struct JsonStack<'a> {
    pid: Option<u32>,
    comm: &'a str,
    kind: &'a str,
    count: u64,
    /// Where measured (`--weight latency`, `--weight bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    ustack: &'a [Frame],
    kstack: &'a [Frame],
}

struct Counter {
    out: Box<dyn Write>,
    svg: Option<Reserved>,
    args: StackcountArgs,
    counts: StackCounts,
}

impl Counter {
    /// `comm;user root..leaf;kernel root..leaf_[k]` as bcc folds them.
    fn fold(&self, r: &Row, with_kind: bool) -> Vec<String> {
        let mut frames = vec![who(r)];
        frames.extend(r.ustack.iter().rev().map(Frame::name));
        frames.extend(r.kstack.iter().rev().map(|f| format!("{}_[k]", f.name())));
        if with_kind {
            // The fault's kind on top, coloured apart: the flame graph shows minor and major.
            let kind = r.kind.name();
            frames.push(if r.kind == Kind::Minor {
                format!("{kind}_fault")
            } else {
                format!("{kind}_fault_[k]")
            });
        }
        frames
    }

    /// Folded lines, one per distinct line (frames that differ only in what folding leaves
    /// out, such as an address, make one line), weighed by `--weight`.
    fn folded(&self, rows: &[(Row, Weights)], with_kind: bool) -> Vec<String> {
        let mut lines: HashMap<Vec<String>, u64> = HashMap::new();
        for (r, n) in rows {
            *lines.entry(self.fold(r, with_kind)).or_default() += n.get(self.args.weight);
        }
        sorted(lines)
            .into_iter()
            .map(|(frames, n)| folded::line(&frames, n))
            .collect()
    }

    fn print(&mut self, rows: &[(Row, Weights)]) -> Result<()> {
        let weight = self.args.weight;
        if self.args.folded {
            let lines = self.folded(rows, false);
            return folded::write(&mut self.out, &lines);
        }
        match self.args.output.format {
            StackFormat::Pprof => {
                let profile = self.counts.pprof(rows);
                self.out.write_all(&profile.gzipped()?)?;
            }
            StackFormat::Json => {
                let measured = |w: Weight, v: u64| (weight == w).then_some(v);
                for (r, n) in weighed(rows, weight) {
                    json::write_line(
                        &mut self.out,
                        &JsonStack {
                            pid: r.pid,
                            comm: &r.comm,
                            kind: r.kind.name(),
                            count: n.faults,
                            latency_ns: measured(Weight::Latency, n.latency_ns),
                            bytes: measured(Weight::Bytes, n.bytes),
                            ustack: &r.ustack,
                            kstack: &r.kstack,
                        },
                    )?;
                }
            }
            StackFormat::Text => {
                // As bcc prints: kernel frames, "--", user frames, who, then the count;
                // least frequent first so the heaviest ends at the bottom of the terminal.
                let addresses = self.args.addresses;
                for (r, n) in weighed(rows, weight) {
                    for f in &r.kstack {
                        writeln!(self.out, "  {}", escape(&f.label(addresses)))?;
                    }
                    if !r.kstack.is_empty() && !r.ustack.is_empty() {
                        writeln!(self.out, "  --")?;
                    }
                    for f in &r.ustack {
                        writeln!(self.out, "  {}", escape(&f.label(addresses)))?;
                    }
                    writeln!(self.out, "    {} ({} faults)", escape(&who(r)), r.kind.name())?;
                    match weight {
                        Weight::Faults => writeln!(self.out, "    {}\n", n.faults)?,
                        w => writeln!(
                            self.out,
                            "    {} {} in {} faults\n",
                            n.get(w),
                            w.short_unit(),
                            n.faults
                        )?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// The rows, least first by `weight` (the kernel's map sorts them by count).
fn weighed(rows: &[(Row, Weights)], weight: Weight) -> Vec<&(Row, Weights)> {
    let mut v: Vec<&(Row, Weights)> = rows.iter().collect();
    v.sort_by(|a, b| a.1.get(weight).cmp(&b.1.get(weight)).then_with(|| a.0.cmp(&b.0)));
    v
}

/// `comm`, or `comm [pid]` with -P.
fn who(r: &Row) -> String {
    match r.pid {
        Some(pid) => format!("{} [{pid}]", r.comm),
        None => r.comm.clone(),
    }
}

impl Handler for Counter {
    fn record(&mut self, record: Record) -> Result<()> {
        self.counts.record(record);
        Ok(())
    }

    fn idle(&mut self, _engine: &mut Engine) {
        self.counts.syms.maps.refresh_young();
    }

    fn tick(&mut self, engine: &mut Engine, last: bool) -> Result<()> {
        let rows = self.counts.rows(engine, !last)?;
        if !last && self.args.output.format == StackFormat::Text && !self.args.folded {
            writeln!(self.out, "[{}]", crate::output::clock())?;
        }
        self.print(&rows)?;
        if last {
            if let Some(svg) = self.svg.take() {
                let w = self.args.weight;
                flamegraph::write_svg(svg, w.title(), w.short_unit(), &self.folded(&rows, true))?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

pub(crate) async fn run(mut args: StackcountArgs) -> Result<Option<i32>> {
    if args.minor {
        args.filter.kind = vec![Kind::Minor];
    }
    if args.major {
        args.filter.kind = vec![Kind::Major];
    }
    // A profile carries every weight; the other outputs the one asked for.
    let weights = match args.output.format {
        StackFormat::Pprof => Weight::ALL.to_vec(),
        _ => vec![args.weight],
    };
    let mut plan = stacks::plan(
        !args.kernel_stacks_only,
        !args.user_stacks_only,
        &args.filter,
        args.map_entries,
        &weights,
    );
    args.unwind.apply(&mut plan);
    if args.output.format == StackFormat::Pprof && args.interval.interval.is_some() {
        anyhow::bail!("-o pprof writes one profile of the whole run: drop -i (or use -o json)");
    }
    if args.output.format == StackFormat::Pprof
        && args.output.file.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        anyhow::bail!(
            "-o pprof writes a gzipped profile, not text for a terminal: give --output FILE or redirect stdout"
        );
    }
    let out = args.output.reserve()?;
    let svg = args
        .svg
        .as_deref()
        .map(|p| Reserved::open(p, "--svg"))
        .transpose()?;
    let mut session = Session::start(&args.target, None, &plan)?;
    let out = out.open()?;
    let mut ring = session.events()?;
    let interval = args.interval.interval;
    let duration = args.duration.clone();
    let format = match args.output.format {
        StackFormat::Json => Format::Json,
        StackFormat::Text | StackFormat::Pprof => Format::Text,
    };
    let mut counter = Counter {
        out,
        svg,
        counts: StackCounts::new(
            session.symbols(args.target.pid),
            session.engine.unwind_tables(),
            args.per_pid,
            args.addresses,
        ),
        args,
    };
    let end = session
        .run(&duration, interval, Some(&mut ring), &mut counter)
        .await?;
    session.finish(end, format, None, "process notices and stacks")
}
