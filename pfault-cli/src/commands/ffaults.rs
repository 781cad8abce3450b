//! `pfault ffaults`: faults per file, minor and major apart, counted in the kernel
//! (bpftrace's ffaults.bt, on every probe path and with anonymous memory named).

use std::io::Write;

use anyhow::Result;
use pfault_common::*;
use serde::Serialize;

use crate::{
    args::{CgroupColumnArgs, DurationArgs, FaultFilterArgs, IntervalArgs, OutputArgs, TargetArgs},
    cgroup,
    engine::{Engine, Tunable},
    mappings::Mappings,
    output::table,
    procfs::{cstr, page_size},
    records::Record,
    session::{Handler, Session},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SortKey {
    Total,
    Major,
    Minor,
}

#[derive(clap::Args, Debug)]
pub(crate) struct FfaultsArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    #[command(flatten)]
    pub(crate) filter: FaultFilterArgs,
    #[command(flatten)]
    pub(crate) duration: DurationArgs,
    #[command(flatten)]
    pub(crate) interval: IntervalArgs,
    /// Only the N rows with the most faults
    #[arg(long, value_name = "N")]
    pub(crate) top: Option<usize>,
    /// Sort rows by this count
    #[arg(long, value_enum, default_value_t = SortKey::Total)]
    pub(crate) sort: SortKey,
    /// Largest first (default: largest last, at the bottom of the terminal)
    #[arg(long)]
    pub(crate) largest_first: bool,
    #[command(flatten)]
    pub(crate) cgroups: CgroupColumnArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    /// Count-map size: distinct (process, file) entries kept
    #[arg(long, value_name = "N", default_value_t = pfault_common::capacity::FILE_COUNTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) map_entries: u32,
}

#[derive(Serialize)]
struct Row {
    pid: u32,
    comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<String>,
    file: String,
    minor: u64,
    major: u64,
    errors: u64,
    total: u64,
    /// Bytes of the pages the minor and major faults mapped: as measured where this kernel's
    /// page tables can be read, else a page each.
    bytes: u64,
    /// Of `bytes`, the minor and the major faults' (measured only).
    #[serde(skip_serializing_if = "Option::is_none")]
    minor_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    major_bytes: Option<u64>,
}

struct Counter {
    out: Box<dyn Write>,
    args: FfaultsArgs,
    maps: Mappings,
    cgroups: cgroup::Names,
}

impl Counter {
    fn rows(&mut self, engine: &mut Engine, reset: bool) -> Result<Vec<Row>> {
        let page = page_size();
        let sized = engine.page_sizes;
        let mut rows: Vec<Row> = engine
            .file_counts(reset)?
            .into_iter()
            .map(|(k, v)| {
                let file = self
                    .maps
                    .counted_name(k.tgid, k.map_kind as u8, k.dev, k.ino, &v.name);
                let [minor, major, errors] = v.counts;
                let total = minor + major + errors;
                Row {
                    pid: k.tgid,
                    comm: cstr(&k.comm).to_string(),
                    cgroup: self.args.cgroups.by_cgroup.then(|| self.cgroups.name(v.cgroup)),
                    file,
                    minor,
                    major,
                    errors,
                    total,
                    bytes: if sized {
                        v.bytes[0] + v.bytes[1]
                    } else {
                        (minor + major) * page
                    },
                    minor_bytes: sized.then_some(v.bytes[0]),
                    major_bytes: sized.then_some(v.bytes[1]),
                }
            })
            .collect();
        let key = |r: &Row| match self.args.sort {
            SortKey::Total => r.total,
            SortKey::Major => r.major,
            SortKey::Minor => r.minor,
        };
        rows.sort_by_key(|r| std::cmp::Reverse(key(r)));
        if let Some(n) = self.args.top {
            rows.truncate(n);
        }
        if !self.args.largest_first {
            rows.reverse();
        }
        Ok(rows)
    }
}

impl Handler for Counter {
    fn record(&mut self, record: Record) -> Result<()> {
        self.maps.notice(&record);
        Ok(())
    }

    fn idle(&mut self, _engine: &mut Engine) {
        self.maps.refresh_young();
    }

    fn tick(&mut self, engine: &mut Engine, last: bool) -> Result<()> {
        let rows = self.rows(engine, !last)?;
        let by_cgroup = self.args.cgroups.by_cgroup;
        crate::output::write_rows(&mut self.out, self.args.output.format, last, &rows, |rows| {
            let mut cols = vec![("PID", true), ("COMM", false)];
            if by_cgroup {
                cols.push(("CGROUP", false));
            }
            cols.extend([
                ("MINOR", true),
                ("MAJOR", true),
                ("ERRORS", true),
                ("PAGES", true),
                ("BYTES", true),
                ("FILE", false),
            ]);
            let mut t = table::Table::new(&cols);
            for r in rows {
                let mut cells = vec![r.pid.to_string(), r.comm.clone()];
                cells.extend(r.cgroup.clone());
                cells.extend([
                    r.minor.to_string(),
                    r.major.to_string(),
                    r.errors.to_string(),
                    r.total.to_string(),
                    table::bytes(r.bytes),
                    r.file.clone(),
                ]);
                t.push(cells);
            }
            t
        })?;
        self.out.flush()?;
        Ok(())
    }
}

pub(crate) async fn run(args: FfaultsArgs) -> Result<Option<i32>> {
    let mut flags = CFG_OUT_FILES | CFG_NOTIFY_TASKS | CFG_NOTIFY_MAPS | CFG_PAGE_SIZE;
    if args.cgroups.by_cgroup {
        flags |= CFG_BY_CGROUP;
    }
    let mut plan = args.filter.plan(flags);
    plan.page_sizes_optional = true;
    plan.file_count_entries = args.map_entries;
    plan.tunables = vec![Tunable::FILE_COUNTS];
    // Only process notices go through the ring buffer here.
    plan.ringbuf_bytes = 256 << 10;
    let out = args.output.reserve()?;
    let mut session = Session::start(&args.target, None, &plan)?;
    let out = out.open()?;
    let mut ring = session.events()?;
    let (duration, interval, format) = (args.duration.clone(), args.interval.interval, args.output.format);
    let mut counter = Counter {
        out,
        maps: Mappings::default(),
        cgroups: cgroup::Names::default(),
        args,
    };
    if let Some(pid) = counter.args.target.pid {
        counter.maps.note_process(pid);
    }
    let end = session
        .run(&duration, interval, Some(&mut ring), &mut counter)
        .await?;
    session.finish(end, format, None, "process notices")
}
