//! Fault counts per stack, from the kernel's hashed counts and the frames it sends once per
//! process and stack: symbolized, and merged into one row per printed stack. Shared by
//! `stackcount` and the exporter's pprof endpoint.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use anyhow::Result;
use pfault_common::*;

use crate::{
    args::FaultFilterArgs,
    engine::{plan::STACK_RINGBUF_BYTES, Engine, Kind, Plan, Tunable},
    output::{
        pprof::{self, LabelValue},
        prometheus::OTHER,
    },
    perfmap::Taken,
    procfs::cstr,
    records::Record,
    symbolize::{Frame, Placed, Symbols},
};

/// A stack the kernel sent. User frames are placed in their files (by the process's maps)
/// when they are named, or earlier when the process execs: its maps are then another
/// program's. Placing every stack as it arrives would slow the ring's reader. A user stack
/// keeps what the process's perf map said when it arrived, to name the JIT code it ran.
enum Sent {
    User(Vec<u64>, Taken),
    Placed(Vec<Placed>),
    Kernel(Vec<u64>),
}

/// One printed stack: faults on stacks that print the same (within a function, or across
/// processes when they are not kept apart) are added into one row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Row {
    /// When processes are kept apart.
    pub(crate) pid: Option<u32>,
    pub(crate) comm: String,
    pub(crate) kind: Kind,
    pub(crate) ustack: Vec<Frame>,
    pub(crate) kstack: Vec<Frame>,
}

/// What a stack's faults are weighed by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Weight {
    /// How many faults
    #[default]
    Faults,
    /// Their time from entry to completion, summed (ns)
    Latency,
    /// The bytes of the pages they mapped: 4 KiB, 2 MiB for a transparent huge page, the
    /// hugetlb page's size
    Bytes,
}

impl Weight {
    pub(crate) const ALL: [Weight; 3] = [Weight::Faults, Weight::Latency, Weight::Bytes];

    /// As `--weight` and pprof's sample types name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Weight::Faults => "faults",
            Weight::Latency => "latency",
            Weight::Bytes => "bytes",
        }
    }

    /// Its unit, as pprof names it.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Weight::Faults => "count",
            Weight::Latency => "nanoseconds",
            Weight::Bytes => "bytes",
        }
    }

    /// Its unit where a number is printed (text, a flame graph's tooltips).
    pub(crate) fn short_unit(self) -> &'static str {
        match self {
            Weight::Faults => "faults",
            Weight::Latency => "ns",
            Weight::Bytes => "bytes",
        }
    }

    /// A flame graph's title.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Weight::Faults => "Page faults",
            Weight::Latency => "Page-fault latency",
            Weight::Bytes => "Memory mapped by page faults",
        }
    }
}

/// What the faults of a stack weigh, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Weights {
    pub(crate) faults: u64,
    pub(crate) latency_ns: u64,
    pub(crate) bytes: u64,
}

impl Weights {
    pub(crate) fn of(c: &StackCount) -> Weights {
        Weights {
            faults: c.count,
            latency_ns: c.latency_ns,
            bytes: c.bytes,
        }
    }

    pub(crate) fn get(self, w: Weight) -> u64 {
        match w {
            Weight::Faults => self.faults,
            Weight::Latency => self.latency_ns,
            Weight::Bytes => self.bytes,
        }
    }
}

impl std::ops::AddAssign for Weights {
    fn add_assign(&mut self, o: Weights) {
        self.faults += o.faults;
        self.latency_ns += o.latency_ns;
        self.bytes += o.bytes;
    }
}

/// What the kernel side is asked for to count faults per user and/or kernel stack, and weigh
/// them by each of `weights`. Minor and major faults alone are counted at completion with one
/// probe per fault (tracepoint path), which also finds the size of the page each mapped;
/// latency, errors and the filters that need each fault's entry take the entry probe too.
pub(crate) fn plan(
    user: bool,
    kernel: bool,
    filter: &FaultFilterArgs,
    map_entries: u32,
    weights: &[Weight],
) -> Plan {
    let mut flags = CFG_OUT_STACKS | CFG_NOTIFY_TASKS | CFG_NOTIFY_MAPS;
    if weights.contains(&Weight::Bytes) {
        flags |= CFG_PAGE_SIZE;
    }
    if user {
        flags |= CFG_USTACK;
    }
    if kernel {
        flags |= CFG_KSTACK;
    }
    let mut filter = filter.clone();
    if filter.kind.is_empty() {
        filter.kind = vec![Kind::Minor, Kind::Major];
    }
    if !filter.kind.contains(&Kind::Error)
        && !filter.needs_fault_entry()
        && !weights.contains(&Weight::Latency)
    {
        flags |= CFG_COMPLETION_ONLY;
    }
    let mut plan = filter.plan(flags);
    plan.stack_count_entries = map_entries;
    plan.tunables = vec![Tunable::STACK_COUNTS];
    plan.ringbuf_bytes = STACK_RINGBUF_BYTES;
    plan
}

/// Frames standing for what the kernel could not or need not walk.
fn pseudo(what: &str) -> Vec<Frame> {
    vec![Frame::named(what)]
}

/// What [`StackCounts::gone`] found.
pub(crate) struct Gone {
    counts: Vec<StackCount>,
    pids: HashSet<u32>,
}

pub(crate) struct StackCounts {
    pub(crate) syms: Symbols,
    /// Every stack the kernel sent, by process and hash, leaf first: the kernel sends a
    /// stack once per process, and its user frames are placed by that process's maps.
    stacks: HashMap<(u32, u64), Sent>,
    /// The hashes each process was sent, to drop its stacks when it is folded.
    sent_to: HashMap<u32, Vec<u64>>,
    /// The hashes of each process's user stacks not placed yet.
    unplaced: HashMap<u32, Vec<u64>>,
    /// Rows of processes that are gone, whose counts were moved out of the kernel's map.
    kept: HashMap<Row, Weights>,
    /// The most rows kept apart, and the frame that stands for the stacks past it.
    cap: Option<(usize, String)>,
    /// Rows per process (-P).
    per_pid: bool,
    /// Frames keep their addresses, offsets and lines (-v).
    addresses: bool,
    started: Instant,
}

impl StackCounts {
    pub(crate) fn new(syms: Symbols, per_pid: bool, addresses: bool) -> StackCounts {
        StackCounts {
            syms,
            stacks: HashMap::new(),
            sent_to: HashMap::new(),
            unplaced: HashMap::new(),
            kept: HashMap::new(),
            cap: None,
            per_pid,
            addresses,
            started: Instant::now(),
        }
    }

    /// Keeps at most `rows` rows apart; past that, a new row's faults add to one row per kind
    /// whose only frame is `past`, so a profile's size does not follow the stacks it meets.
    pub(crate) fn capped(self, rows: usize, past: String) -> StackCounts {
        StackCounts {
            cap: Some((rows, past)),
            ..self
        }
    }

    /// Takes in a ring-buffer record: a stack's frames, or a notice about a process's maps.
    pub(crate) fn record(&mut self, record: Record) {
        match record {
            Record::Stack { hash, tgid, frames } => {
                // Counting at completion sends no notice of a process that was running before
                // pfault: its first stack is one, while it lives.
                self.syms.note_process(tgid);
                let sent = match frames.first() {
                    Some(&leaf) if leaf < USER_END => {
                        self.unplaced.entry(tgid).or_default().push(hash);
                        Sent::User(frames, self.syms.arrived(tgid))
                    }
                    _ => Sent::Kernel(frames),
                };
                // Sent once per process: placed by that process's maps.
                self.sent_to.entry(tgid).or_default().push(hash);
                self.stacks.insert((tgid, hash), sent);
            }
            Record::Task(t) => {
                // An exec (or a new thread, or a fork): the maps it ran with are read again.
                self.place(t.pid);
                self.syms.notice(&Record::Task(t));
            }
            notice => self.syms.notice(&notice),
        }
    }

    /// Places the stacks `pid` was sent, by its maps now.
    fn place(&mut self, pid: u32) {
        for h in self.unplaced.remove(&pid).unwrap_or_default() {
            if let Some(sent) = self.stacks.get_mut(&(pid, h)) {
                if let Sent::User(ips, taken) = sent {
                    *sent = Sent::Placed(self.syms.place(pid, ips, *taken));
                }
            }
        }
    }

    fn frames(&mut self, hash: u64, pid: u32) -> Vec<Frame> {
        let frames = match hash {
            STACK_NONE => Vec::new(),
            STACK_LOST => pseudo("[stack lost: ring buffer full]"),
            STACK_EXEC => pseudo("[execve: the kernel writing the new image]"),
            h => match self.stacks.get(&(pid, h)) {
                Some(Sent::User(ips, taken)) => self.syms.user(pid, ips, *taken),
                Some(Sent::Placed(placed)) => self.syms.name(pid, placed),
                Some(Sent::Kernel(ips)) => self.syms.kernel(ips),
                None => pseudo("[stack not received]"),
            },
        };
        let addresses = self.addresses;
        frames.into_iter().map(|f| f.printed(addresses)).collect()
    }

    /// The counts so far (with `reset`, of the interval), one per printed stack, least first.
    pub(crate) fn rows(&mut self, engine: &mut Engine, reset: bool) -> Result<Vec<(Row, Weights)>> {
        let mut rows = if reset {
            std::mem::take(&mut self.kept)
        } else {
            self.kept.clone()
        };
        for c in engine.stack_counts(reset)? {
            self.add(&mut rows, &c);
        }
        Ok(sorted(rows))
    }

    /// Adds a count of the kernel's to its printed row, or past the cap to the row saying so.
    fn add(&mut self, rows: &mut HashMap<Row, Weights>, c: &StackCount) {
        let (key, count) = (&c.key, Weights::of(c));
        let row = Row {
            pid: self.per_pid.then_some(key.tgid),
            comm: cstr(&key.comm).to_string(),
            kind: Kind::from_raw(key.kind as u8),
            ustack: self.frames(key.ustack, key.tgid),
            kstack: self.frames(key.kstack, key.tgid),
        };
        if let Some(n) = rows.get_mut(&row) {
            *n += count;
            return;
        }
        let row = match &self.cap {
            Some((max, past)) if rows.len() >= *max => Row {
                pid: None,
                comm: OTHER.into(),
                kind: row.kind,
                ustack: pseudo(past),
                kstack: Vec::new(),
            },
            _ => row,
        };
        *rows.entry(row).or_default() += count;
    }

    /// The processes that are gone, and their final counts in the kernel: to [`Self::fold`]
    /// once the ring has been drained, so that their last stacks have arrived.
    pub(crate) fn gone(&self, engine: &mut Engine, alive: impl Fn(u32) -> bool) -> Result<Gone> {
        let mut seen: HashMap<u32, bool> = HashMap::new();
        let mut is_gone = |pid| !*seen.entry(pid).or_insert_with(|| alive(pid));
        let counts: Vec<StackCount> = engine
            .stack_counts(false)?
            .into_iter()
            .filter(|c| is_gone(c.key.tgid))
            .collect();
        let mut pids: HashSet<u32> = counts.iter().map(|c| c.key.tgid).collect();
        pids.extend(self.sent_to.keys().copied().filter(|&pid| is_gone(pid)));
        Ok(Gone { counts, pids })
    }

    /// Moves the counts of processes that are gone into rows, and drops their counts in the
    /// kernel, their stacks and their maps: a long profile's memory then follows the
    /// processes alive and the rows kept, not every process it met.
    pub(crate) fn fold(&mut self, engine: &mut Engine, gone: Gone) -> Result<()> {
        let mut rows = std::mem::take(&mut self.kept);
        for c in &gone.counts {
            self.add(&mut rows, c);
        }
        self.kept = rows;
        let keys: Vec<StackKey> = gone.counts.iter().map(|c| c.key).collect();
        engine.forget_stacks(&keys)?;
        for pid in gone.pids {
            for h in self.sent_to.remove(&pid).unwrap_or_default() {
                self.stacks.remove(&(pid, h));
            }
            self.unplaced.remove(&pid);
            self.syms.forget(pid);
        }
        Ok(())
    }

    /// The rows as a pprof profile of the time since this counter started: a sample per
    /// row, with each of its weights, labelled with comm, kind and (per process) pid.
    pub(crate) fn pprof(&self, rows: &[(Row, Weights)]) -> pprof::Builder {
        let types: Vec<(&str, &str)> = Weight::ALL.iter().map(|w| (w.name(), w.unit())).collect();
        let mut b = pprof::Builder::new(self.started.elapsed().as_nanos() as i64, &types);
        // Heaviest first: pprof names a profile after its first mapping, the program's own.
        for (r, n) in rows.iter().rev() {
            let mut labels = vec![
                ("comm", LabelValue::Str(&r.comm)),
                ("kind", LabelValue::Str(r.kind.name())),
            ];
            if let Some(pid) = r.pid {
                labels.push(("pid", LabelValue::Num(pid as i64)));
            }
            let values: Vec<u64> = Weight::ALL.iter().map(|&w| n.get(w)).collect();
            b.add(&r.kstack, &r.ustack, &values, &labels);
        }
        b
    }
}

/// Counted entries, least first (ties in a stable order, so runs compare line by line).
pub(crate) fn sorted<K: Ord, V: Ord>(counts: HashMap<K, V>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = counts.into_iter().collect();
    v.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    v
}
