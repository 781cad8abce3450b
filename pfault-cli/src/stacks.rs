//! Fault counts per stack, from the kernel's hashed counts and the frames it sends once per
//! process and stack: symbolized, and merged into one row per printed stack. Shared by
//! `stackcount` and the exporter's pprof endpoint.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
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
    unwind::{
        self,
        late::{self, Code},
        Tables, Unhandled, Wanted,
    },
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

/// Late stacks arrive 8 KiB each: at most this many different copies (8.5 MiB) are held
/// waiting for tables. A cold disk holds a table back a few ms, and a loop faults a few
/// hundred times meanwhile, mostly with the same stack.
const LATE_HELD: usize = 1024;

/// And at most this many faults (168 bytes of registers each, 11 MiB) on them.
const LATE_FAULTS_HELD: usize = 65536;

/// Whether `copies` holding `faults` are past what is held.
fn past_held(copies: usize, faults: usize) -> bool {
    copies > LATE_HELD || faults > LATE_FAULTS_HELD
}

/// A stack copy held until the tables it needs are in, with every fault that sent the same
/// copy (the same stack bytes, stack pointer, frame pointer and pc): a loop faulting in one
/// function sends the same copy fault after fault, and its faults walk alike.
struct Held {
    copy: Box<LateStack>,
    /// What the process's perf map said when the first arrived.
    taken: Taken,
    /// Each fault's registers (the faulting frame's CFA may be in one besides rsp and rbp)
    /// and weights.
    faults: Vec<([u64; PT_REGS_WORDS], Weights)>,
}

impl Held {
    /// Where the next copy of a storm goes: its process and stack pointer.
    fn at(&self) -> (u32, u64) {
        (self.copy.key.tgid, self.copy.regs[PT_REGS_SP])
    }

    fn new(copy: Box<LateStack>, taken: Taken) -> Held {
        let faults = vec![(copy.regs, late_weights(&copy))];
        Held { copy, taken, faults }
    }

    /// Takes `l`'s fault in where it sent the same copy.
    fn merge(&mut self, l: &LateStack) -> bool {
        let same = same_copy(&self.copy, l);
        if same {
            self.faults.push((l.regs, late_weights(l)));
        }
        same
    }
}

/// Whether two stacks handed over walk alike but for the registers a faulting frame's CFA
/// may be in: the same key, pc, stack and frame pointers, and stack bytes.
fn same_copy(a: &LateStack, b: &LateStack) -> bool {
    let len = |l: &LateStack| (l.stack_len as usize).min(LATE_STACK_BYTES);
    a.key == b.key
        && [PT_REGS_IP, PT_REGS_SP, REG_RBP as usize]
            .iter()
            .all(|&r| a.regs[r] == b.regs[r])
        && a.stack_len == b.stack_len
        && a.stack[..len(a)] == b.stack[..len(b)]
}

fn late_weights(l: &LateStack) -> Weights {
    Weights {
        faults: 1,
        latency_ns: l.latency_ns,
        bytes: l.bytes,
    }
}

/// What a late walk does with a table the loader has not handled yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unready {
    Wait,
    Build,
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
    /// Stacks the kernel side handed over to walk (`LateStack`), oldest first; walked once
    /// the tables they need are in.
    late: Vec<Held>,
    /// The last of `late` by process and stack pointer, where the next copy of a storm goes.
    late_last: HashMap<(u32, u64), usize>,
    /// The faults of `late`.
    late_faults: usize,
    /// `Tables::handled` when they were last tried.
    late_handled: usize,
    /// Their counts, as the kernel's map would hold them.
    late_counts: HashMap<StackKey, Weights>,
    /// The CFI unwinder's tables, and those late walks read, by file (`None`: it has none).
    tables: Option<Tables>,
    late_rows: HashMap<FileId, Option<Arc<[UnwindRow]>>>,
    /// The most rows kept apart, and the frame that stands for the stacks past it.
    cap: Option<(usize, String)>,
    /// Rows per process (-P).
    per_pid: bool,
    /// Frames keep their addresses, offsets and lines (-v).
    addresses: bool,
    started: Instant,
}

impl StackCounts {
    /// Counts named by `syms`; `tables` walks the stacks the kernel side hands over.
    pub(crate) fn new(syms: Symbols, tables: Option<Tables>, per_pid: bool, addresses: bool) -> StackCounts {
        StackCounts {
            syms,
            stacks: HashMap::new(),
            sent_to: HashMap::new(),
            unplaced: HashMap::new(),
            kept: HashMap::new(),
            late: Vec::new(),
            late_last: HashMap::new(),
            late_faults: 0,
            late_handled: 0,
            late_counts: HashMap::new(),
            tables,
            late_rows: HashMap::new(),
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
                let taken = self.syms.arrived(tgid);
                self.sent(tgid, hash, frames, taken);
            }
            Record::Late(l) => {
                self.hold(l);
                // Tried when the loader has handled another file, or past the bounds.
                let handled = self.tables.as_ref().map_or(0, Tables::handled);
                if handled != self.late_handled || past_held(self.late.len(), self.late_faults) {
                    self.late_handled = handled;
                    self.walk_late(Unready::Wait);
                }
            }
            Record::Task(t) => {
                // An exec (or a new thread, or a fork): the maps it ran with are read again.
                self.place(t.pid);
                self.syms.notice(&Record::Task(t));
            }
            notice => self.syms.notice(&notice),
        }
    }

    /// Keeps a stack's frames, named `hash` in process `tgid`.
    fn sent(&mut self, tgid: u32, hash: u64, frames: Vec<u64>, taken: Taken) {
        let sent = match frames.first() {
            Some(&leaf) if leaf < USER_END => {
                self.unplaced.entry(tgid).or_default().push(hash);
                Sent::User(frames, taken)
            }
            _ => Sent::Kernel(frames),
        };
        // Sent once per process: placed by that process's maps.
        if self.stacks.insert((tgid, hash), sent).is_none() {
            self.sent_to.entry(tgid).or_default().push(hash);
        }
    }

    /// Holds a stack handed over, with the last one its thread sent where it is the same.
    fn hold(&mut self, l: Box<LateStack>) {
        let at = (l.key.tgid, l.regs[PT_REGS_SP]);
        if let Some(&i) = self.late_last.get(&at) {
            if self.late[i].merge(&l) {
                self.late_faults += 1;
                return;
            }
        }
        // Its maps as they are now, while it lives: the code it ran may be newly mapped, and
        // it may be gone by the time its stack is walked.
        self.syms.maps.lookup(at.0, l.regs[PT_REGS_IP], None);
        let taken = self.syms.arrived(at.0);
        self.keep(Held::new(l, taken));
    }

    /// Keeps `held` waiting, the last of its thread's copies.
    fn keep(&mut self, held: Held) {
        self.late_last.insert(held.at(), self.late.len());
        self.late_faults += held.faults.len();
        self.late.push(held);
    }

    /// Walks the stacks handed over so far and counts them. A stack that needs a table the
    /// loader has not handled yet waits for it (`Unready::Wait`), but for the oldest past
    /// the bounds, and where the counts are read, the table is built here from the file the
    /// process mapped (`Unready::Build`: the loader may never build it, its process gone).
    fn walk_late(&mut self, unready: Unready) {
        if self.late.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.late);
        self.late_last.clear();
        let (mut copies, mut faults) = (pending.len(), self.late_faults);
        self.late_faults = 0;
        for mut held in pending {
            let unready = if past_held(copies, faults) {
                Unready::Build
            } else {
                unready
            };
            copies -= 1;
            faults -= held.faults.len();
            if self.walk_held(&mut held, unready).is_err() {
                self.keep(held);
            }
        }
    }

    /// Walks and counts `held`'s faults: one walk for all, but where the faulting frame's CFA
    /// is in another register, one each.
    fn walk_held(&mut self, held: &mut Held, unready: Unready) -> Result<(), Unhandled> {
        let first = self.walk_one(&held.copy, unready)?;
        if !first.by_register {
            let mut w = Weights::default();
            for (_, f) in &held.faults {
                w += *f;
            }
            self.count_late(&held.copy.key, first.frames, w, held.taken);
            return Ok(());
        }
        let mut walks = Vec::with_capacity(held.faults.len());
        for (regs, w) in &held.faults {
            held.copy.regs = *regs;
            walks.push((self.walk_one(&held.copy, unready)?.frames, *w));
        }
        for (frames, w) in walks {
            self.count_late(&held.copy.key, frames, w, held.taken);
        }
        Ok(())
    }

    /// `late`'s walk, or `Err` where a table it needs is not handled yet and `unready` says
    /// to wait.
    fn walk_one(&mut self, late: &LateStack, unready: Unready) -> Result<late::Walked, Unhandled> {
        let tgid = late.key.tgid;
        let (maps, late_rows, tables) = (&mut self.syms.maps, &mut self.late_rows, &self.tables);
        late::walk(late, |pc| {
            let Some(m) = maps.lookup(tgid, pc, None).cloned() else {
                return Ok(None);
            };
            let id = m.file_id();
            let rows = match late_rows.get(&id) {
                Some(rows) => rows.clone(),
                None if m.ino == 0 => None,
                None => {
                    let rows = match tables.as_ref().map(|t| t.rows(id)) {
                        Some(Ok(rows)) => rows,
                        _ if unready == Unready::Wait => {
                            if let Some(t) = tables {
                                t.want(Wanted {
                                    pid: tgid,
                                    start: m.start,
                                    file: id,
                                });
                            }
                            return Err(Unhandled);
                        }
                        _ => maps
                            .source(tgid, id, m.path.file().unwrap_or_default())
                            .and_then(|path| unwind::rows_of_file(&path)),
                    };
                    late_rows.insert(id, rows.clone());
                    rows
                }
            };
            Ok(Some(Code {
                start: m.start,
                end: m.end,
                bias: m.file_offset.wrapping_sub(m.start),
                rows,
            }))
        })
    }

    /// Counts faults of a late stack walked to `frames` (its key's `ustack` aside), named as
    /// the kernel side names a stack.
    fn count_late(&mut self, key: &StackKey, frames: Vec<u64>, w: Weights, taken: Taken) {
        let tgid = key.tgid;
        let hash = frames
            .iter()
            .fold(stack_hash_start(true), |h, &f| stack_hash_step(h, f));
        let hash = stack_hash_end(hash, frames.len() as u64);
        if !self.stacks.contains_key(&(tgid, hash)) {
            self.sent(tgid, hash, frames, taken);
        }
        let key = StackKey { ustack: hash, ..*key };
        *self.late_counts.entry(key).or_default() += w;
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
        self.walk_late(Unready::Build);
        let mut rows = if reset {
            std::mem::take(&mut self.kept)
        } else {
            self.kept.clone()
        };
        for c in engine.stack_counts(reset)? {
            self.add(&mut rows, &c.key, Weights::of(&c));
        }
        let late = if reset {
            std::mem::take(&mut self.late_counts)
        } else {
            self.late_counts.clone()
        };
        for (key, count) in late {
            self.add(&mut rows, &key, count);
        }
        Ok(sorted(rows))
    }

    /// Adds a count to its printed row, or past the cap to the row saying so.
    fn add(&mut self, rows: &mut HashMap<Row, Weights>, key: &StackKey, count: Weights) {
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
        let late = self
            .late
            .iter()
            .map(|h| &h.copy.key)
            .chain(self.late_counts.keys());
        pids.extend(late.map(|k| k.tgid).filter(|&pid| is_gone(pid)));
        Ok(Gone { counts, pids })
    }

    /// Moves the counts of processes that are gone into rows, and drops their counts in the
    /// kernel, their stacks and their maps: a long profile's memory then follows the
    /// processes alive and the rows kept, not every process it met.
    pub(crate) fn fold(&mut self, engine: &mut Engine, gone: Gone) -> Result<()> {
        self.walk_late(Unready::Build);
        let mut rows = std::mem::take(&mut self.kept);
        for c in &gone.counts {
            self.add(&mut rows, &c.key, Weights::of(c));
        }
        let late: Vec<StackKey> = self
            .late_counts
            .keys()
            .filter(|k| gone.pids.contains(&k.tgid))
            .copied()
            .collect();
        for key in late {
            let count = self.late_counts.remove(&key).expect("listed above");
            self.add(&mut rows, &key, count);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(ip: u64, sp: u64, bytes: &[u8]) -> Box<LateStack> {
        // SAFETY: all-zero bytes are a valid (Pod) LateStack.
        let mut l: Box<LateStack> = Box::new(unsafe { std::mem::zeroed() });
        l.regs[PT_REGS_IP] = ip;
        l.regs[PT_REGS_SP] = sp;
        l.stack[..bytes.len()].copy_from_slice(bytes);
        l.stack_len = bytes.len() as u32;
        l
    }

    #[test]
    fn copies_are_the_same_only_in_every_byte_a_walk_reads() {
        let a = copy(0x1000, 0x7000, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut b = copy(0x1000, 0x7000, &[1, 2, 3, 4, 5, 6, 7, 8]);
        // Registers a walk reads only where the faulting frame's CFA is in one: kept per
        // fault, not compared.
        b.regs[REG_RBP as usize + 1] = 99;
        assert!(same_copy(&a, &b));
        // A return address further up, another pc, stack pointer or process: not the same.
        assert!(!same_copy(&a, &copy(0x1000, 0x7000, &[1, 2, 3, 4, 5, 6, 7, 9])));
        assert!(!same_copy(&a, &copy(0x1001, 0x7000, &[1, 2, 3, 4, 5, 6, 7, 8])));
        assert!(!same_copy(&a, &copy(0x1000, 0x7008, &[1, 2, 3, 4, 5, 6, 7, 8])));
        let mut other = copy(0x1000, 0x7000, &[1, 2, 3, 4, 5, 6, 7, 8]);
        other.key.tgid = 7;
        assert!(!same_copy(&a, &other));
        // Bytes past the copy's length do not count.
        let mut longer = copy(0x1000, 0x7000, &[1, 2, 3, 4, 5, 6, 7, 8]);
        longer.stack[9] = 1;
        assert!(same_copy(&a, &longer));
    }
}
