//! `pfault stat`: fault counts, rates and latency distributions per process (or thread),
//! counted in the kernel. `perf stat -e minor-faults,major-faults`, with more.

use std::{io::Write, time::Instant};

use anyhow::Result;
use pfault_common::*;
use serde::Serialize;

use crate::{
    args::{CgroupColumnArgs, DurationArgs, FaultFilterArgs, IntervalArgs, OutputArgs, TargetArgs},
    cgroup,
    engine::Engine,
    output::{escape, hist, table, Format},
    procfs::cstr,
    session::{Handler, Session},
};

#[derive(clap::Args, Debug)]
pub(crate) struct StatArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    /// One row per thread
    #[arg(short = 't', long)]
    pub(crate) per_thread: bool,
    /// Time every fault: latency p50/p90/p99/max per row. Costs a second probe and two clock
    /// reads per fault; without it, counts come from the kernel's own per-thread accounting
    #[arg(short = 'L', long)]
    pub(crate) latency: bool,
    /// Draw each process's latency histogram (log2 buckets, as bpftrace's hist()); implies -L
    #[arg(long)]
    pub(crate) hist: bool,
    #[command(flatten)]
    pub(crate) filter: FaultFilterArgs,
    #[command(flatten)]
    pub(crate) duration: DurationArgs,
    #[command(flatten)]
    pub(crate) interval: IntervalArgs,
    #[command(flatten)]
    pub(crate) cgroups: CgroupColumnArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Serialize)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    mean: u64,
}

#[derive(Serialize)]
struct Row {
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<u32>,
    comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<String>,
    minor: u64,
    major: u64,
    errors: u64,
    faults_per_sec: f64,
    /// Bytes of the pages the minor and major faults mapped (timed faults in JSON only).
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ns: Option<Percentiles>,
    #[serde(skip)]
    hist: [u64; HIST_BUCKETS],
}

struct Stats {
    out: Box<dyn Write>,
    args: StatArgs,
    since: Instant,
    /// Faults are timed (the per-fault probes are attached).
    timed: bool,
    cgroups: cgroup::Names,
}

impl Stats {
    fn rows(&mut self, engine: &mut Engine, reset: bool) -> Result<Vec<Row>> {
        let secs = self.since.elapsed().as_secs_f64().max(1e-9);
        let timed = self.timed;
        let sized = engine.page_sizes;
        let by_cgroup = self.args.cgroups.by_cgroup;
        let cgroups = &mut self.cgroups;
        let mut rows: Vec<Row> = engine
            .proc_stats(reset)?
            .into_iter()
            .map(|(k, v)| {
                let [minor, major, errors] = v.counts;
                let done = minor + major;
                Row {
                    pid: k.tgid,
                    tid: self.args.per_thread.then_some(k.tid),
                    comm: cstr(&v.comm).to_string(),
                    cgroup: by_cgroup.then(|| cgroups.name(v.cgroup)),
                    minor,
                    major,
                    errors,
                    faults_per_sec: (done + errors) as f64 / secs,
                    bytes: sized.then_some(v.bytes),
                    latency_ns: timed.then(|| {
                        let p = |q| hist::percentile(&v.hist, v.latency_max_ns, q);
                        Percentiles {
                            p50: p(0.50),
                            p90: p(0.90),
                            p99: p(0.99),
                            max: v.latency_max_ns,
                            mean: v.latency_sum_ns.checked_div(done).unwrap_or(0),
                        }
                    }),
                    hist: v.hist,
                }
            })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.minor + r.major + r.errors));
        if reset {
            self.since = Instant::now();
        }
        Ok(rows)
    }
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

impl Handler for Stats {
    fn tick(&mut self, engine: &mut Engine, last: bool) -> Result<()> {
        let rows = self.rows(engine, !last)?;
        let per_thread = self.args.per_thread;
        let timed = self.timed;
        let by_cgroup = self.args.cgroups.by_cgroup;
        crate::output::write_rows(&mut self.out, self.args.output.format, last, &rows, |rows| {
            let mut cols = vec![("PID", true)];
            if per_thread {
                cols.push(("TID", true));
            }
            cols.push(("COMM", false));
            if by_cgroup {
                cols.push(("CGROUP", false));
            }
            cols.extend([
                ("MINOR", true),
                ("MAJOR", true),
                ("ERRORS", true),
                ("FAULTS/s", true),
            ]);
            if timed {
                cols.extend([("P50us", true), ("P90us", true), ("P99us", true), ("MAXus", true)]);
            }
            let mut t = table::Table::new(&cols);
            for r in rows {
                let mut cells = vec![r.pid.to_string()];
                cells.extend(r.tid.map(|t| t.to_string()));
                cells.push(r.comm.clone());
                cells.extend(r.cgroup.clone());
                cells.extend([
                    r.minor.to_string(),
                    r.major.to_string(),
                    r.errors.to_string(),
                    format!("{:.0}", r.faults_per_sec),
                ]);
                if let Some(l) = &r.latency_ns {
                    cells.extend([us(l.p50), us(l.p90), us(l.p99), us(l.max)]);
                }
                t.push(cells);
            }
            t
        })?;
        if self.args.hist && self.args.output.format == Format::Text {
            for r in &rows {
                writeln!(self.out, "\n@latency_us[{}, {}]:", r.pid, escape(&r.comm))?;
                hist::write_log2_us(&mut self.out, &r.hist)?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

pub(crate) async fn run(args: StatArgs) -> Result<Option<i32>> {
    let mut flags = CFG_OUT_PROCS;
    if args.per_thread {
        flags |= CFG_PER_THREAD;
    }
    if args.cgroups.by_cgroup {
        flags |= CFG_BY_CGROUP;
    }
    // Only timing, and filters that must see each fault, need the per-fault probes.
    let timed = args.latency || args.hist || args.filter.needs_fault_entry();
    if !timed {
        flags |= CFG_ACCOUNTED;
    }
    // What the timed faults mapped, where JSON has a field for it.
    if timed && args.output.format == Format::Json {
        flags |= CFG_PAGE_SIZE;
    }
    let mut plan = args.filter.plan(flags);
    plan.page_sizes_optional = true;
    let out = args.output.reserve()?;
    let mut session = Session::start(&args.target, None, &plan)?;
    let out = out.open()?;
    let (duration, interval, format) = (args.duration.clone(), args.interval.interval, args.output.format);
    let mut stats = Stats {
        out,
        args,
        since: Instant::now(),
        timed,
        cgroups: cgroup::Names::default(),
    };
    let end = session.run(&duration, interval, None, &mut stats).await?;
    session.finish(end, format, None, "events")
}
