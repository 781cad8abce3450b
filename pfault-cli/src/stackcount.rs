//! `pfault stackcount`: fault counts per stack, counted in the kernel (bcc's
//! `stackcount t:exceptions:page_fault_user`, bpftrace's faults.bt), symbolized, folded or
//! drawn as a flame graph.

use std::{
    io::Write,
    os::fd::{AsFd, AsRawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use aya::maps::{MapData, StackTraceMap};
use pfault_common::*;
use serde::Serialize;

use crate::{
    agg::{comm, read_counts, task_seen},
    output::{flamegraph, folded, json, Format, OutputArgs},
    probes::Engine,
    session::{event_ring, DurationArgs, Handler, IntervalArgs, Session, TargetArgs},
    symbolize::{Frame, Symbols},
    trace::{kind_name, FaultFilterArgs, Kind},
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
    args: StackcountArgs,
    syms: Symbols,
    completion_only: bool,
    last_scan: Instant,
}

const SCAN_EVERY: Duration = Duration::from_millis(500);

/// The taken `STACK_SLOTS` entries as `(slot, entry)`; with `reset`, they are freed. The
/// array is mapped into memory (`BPF_F_MMAPABLE`): a syscall per slot would cost tens of
/// milliseconds for its tens of thousands of slots.
fn stack_slots(engine: &Engine, reset: bool) -> Result<Vec<(u32, StackSlot)>> {
    let Some(aya::maps::Map::Array(data)) = engine.ebpf.map("STACK_SLOTS") else {
        return Ok(Vec::new());
    };
    let n = data.info()?.max_entries() as usize;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let len = (n * size_of::<StackSlot>()).next_multiple_of(page);
    let fd = data.fd().as_fd().as_raw_fd();
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        bail!("mapping STACK_SLOTS: {}", std::io::Error::last_os_error());
    }
    let slots = p as *mut StackSlot;
    let mut taken = Vec::new();
    for i in 0..n {
        // The programs write these slots meanwhile: read each one once, as it is now.
        let s = unsafe { std::ptr::read_volatile(slots.add(i)) };
        if s.tgid != 0 {
            taken.push((i as u32, s));
            if reset {
                unsafe { std::ptr::write_volatile(slots.add(i), std::mem::zeroed()) };
            }
        }
    }
    unsafe { libc::munmap(p, len) };
    Ok(taken)
}

/// Every stack count, from `STACK_COUNTS` and the `STACK_SLOTS` array (whose ids are user
/// stacks if `user`), one entry per key.
fn stack_counts(engine: &mut Engine, reset: bool, user: bool) -> Result<Vec<(StackKey, u64)>> {
    let mut counts: std::collections::HashMap<StackKey, u64> =
        read_counts::<StackKey, u64>(engine, "STACK_COUNTS", reset)?
            .into_iter()
            .collect();
    for (id, slot) in stack_slots(engine, reset)? {
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
    fn frames(&mut self, stacks: &StackTraceMap<&MapData>, id: i32, pid: u32, user: bool) -> Vec<Frame> {
        if id < 0 {
            return Vec::new();
        }
        let Ok(trace) = stacks.get(&(id as u32), 0) else {
            return Vec::new();
        };
        let ips: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
        if user {
            self.syms.user(pid, &ips)
        } else {
            self.syms.kernel(&ips)
        }
    }

    fn collect(&mut self, engine: &mut Engine, reset: bool) -> Result<Vec<Row>> {
        let counts = stack_counts(engine, reset, !self.args.kernel_stacks_only)?;
        let mut rows = Vec::with_capacity(counts.len());
        {
            let stacks: StackTraceMap<&MapData> =
                StackTraceMap::try_from(engine.ebpf.map("STACKS").unwrap())?;
            for (key, count) in counts {
                let ustack = self.frames(&stacks, key.ustack_id, key.tgid, true);
                let kstack = self.frames(&stacks, key.kstack_id, 0, false);
                rows.push(Row {
                    key,
                    count,
                    ustack,
                    kstack,
                });
            }
        }
        if !self.args.per_pid {
            rows = merge_processes(rows);
        }
        if reset {
            let mut stacks: StackTraceMap<&mut MapData> =
                StackTraceMap::try_from(engine.ebpf.map_mut("STACKS").unwrap())?;
            let ids: Vec<u32> = stacks.stack_ids().filter_map(|r| r.ok()).collect();
            for id in ids {
                let _ = stacks.remove(&id);
            }
        }
        rows.sort_by_key(|r| r.count);
        Ok(rows)
    }

    /// `comm;user root..leaf;kernel root..leaf_[k]` as bcc folds them.
    fn fold(&self, r: &Row, with_kind: bool) -> String {
        let mut frames = vec![comm(&r.key.comm)];
        if self.args.per_pid {
            frames[0] = format!("{} [{}]", frames[0], r.key.tgid);
        }
        frames.extend(r.ustack.iter().rev().map(Frame::name));
        frames.extend(r.kstack.iter().rev().map(|f| format!("{}_[k]", f.name())));
        if with_kind {
            // The fault's kind on top, coloured apart: the flame graph shows minor and major.
            let kind = kind_name(r.key.kind as u8);
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
                            comm: &comm(&r.key.comm),
                            kind: kind_name(r.key.kind as u8),
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
                        format!("{} [{}]", comm(&r.key.comm), r.key.tgid)
                    } else {
                        comm(&r.key.comm)
                    };
                    writeln!(self.out, "    {who} ({} faults)", kind_name(r.key.kind as u8))?;
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
        let key = (comm(&r.key.comm), r.key.kind, texts(&r.ustack), texts(&r.kstack));
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
    fn record(&mut self, data: &[u8]) -> Result<()> {
        if let Some(t) = task_seen(data) {
            self.syms.process_changed(&t);
        }
        Ok(())
    }

    fn idle(&mut self, engine: &mut Engine) {
        // Counting at completion alone sends no notice of new processes: find them in the
        // count map's keys, while they live.
        if self.completion_only && self.last_scan.elapsed() >= SCAN_EVERY {
            self.last_scan = Instant::now();
            let map = engine
                .ebpf
                .map("STACK_COUNTS")
                .map(aya::maps::HashMap::<_, StackKey, u64>::try_from);
            if let Some(Ok(map)) = map {
                for key in map.keys().filter_map(|k| k.ok()) {
                    self.syms.note_process(key.tgid);
                }
            }
            for (_, slot) in stack_slots(engine, false).unwrap_or_default() {
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
            if let Some(svg) = &self.args.svg {
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
    // Errors and latency need the entry probe; minor and major alone are counted at
    // completion with one probe per fault (on the tracepoint path).
    if args.filter.kind.is_empty() {
        args.filter.kind = vec![Kind::Minor, Kind::Major];
    }
    let completion_only = !args.filter.kind.contains(&Kind::Error)
        && args.filter.min_latency.is_none()
        && !args.filter.user_faults
        && !args.filter.kernel_faults;
    if completion_only {
        flags |= CFG_COMPLETION_ONLY;
    }
    // One kind of stack: its id alone is the slot (see STACK_SLOTS).
    if args.user_stacks_only || args.kernel_stacks_only {
        flags |= CFG_STACK_SLOTS;
    }
    let mut plan = args.filter.plan(flags);
    plan.stack_entries = args.stack_entries;
    plan.agg_entries = args.map_entries;
    // Only TaskSeen records go through the ring buffer here.
    plan.ringbuf_bytes = 256 << 10;
    let out = args.output.open()?;
    let mut session = Session::start(&args.target, None, &plan)?;
    let mut ring = event_ring(&mut session.engine)?;
    let interval = args.interval.interval;
    let duration = args.duration.clone();
    let mut counter = Counter {
        completion_only,
        last_scan: Instant::now(),
        out,
        syms: Symbols::default(),
        args,
    };
    if let Some(pid) = counter.args.target.pid {
        counter.syms.note_process(pid);
    }
    session
        .run_counting(
            &duration,
            interval,
            Some(&mut ring),
            &mut counter,
            "process notices",
        )
        .await
}
