//! `pfault pages`: what a process's resident pages are (page-types -p): its pagemap says
//! which physical page backs each virtual page, /proc/kpageflags and /proc/kpagecount what
//! that page is and how many mappings share it.
//!
//! Everything is read in batches: pagemap 64K entries per pread, and the physical pages of a
//! batch sorted and merged into runs of nearby PFNs, one pread of kpageflags and one of
//! kpagecount per run. The syscalls then follow how scattered physical memory is, not how
//! much of it there is: a huge page is one run.

pub mod kpageflags;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{ErrorKind, Write},
    os::unix::fs::FileExt,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use self::kpageflags::{pme, COMPOUND_HEAD, HUGE, NOPAGE, THP};
use crate::{
    args::OutputArgs,
    output::{json, Format},
    procfs::{check_pid, is_kernel_thread, page_size, read_maps},
};

/// pagemap entries per pread (512 KiB).
const PAGEMAP_BATCH: usize = 64 << 10;
/// Present pages gathered before their flags are looked up: enough to sort into long runs.
const LOOKUP_BATCH: usize = 64 << 10;
/// Longest kpageflags/kpagecount read.
const MAX_RUN: u64 = 64 << 10;
/// PFNs this close are read in one run, gap included. The kernel spends ~150 ns per word
/// (it snapshots each page), a syscall costs ~1 us: past a few words, a new read is cheaper.
const RUN_GAP: u64 = 8;

#[derive(clap::Args, Debug)]
pub(crate) struct PagesArgs {
    /// The process whose pages to walk
    #[arg(short, long, value_name = "PID")]
    pub(crate) pid: u32,
    /// One table per mapping: its file, or [anon], [heap], [stack], [vdso]...
    #[arg(short = 'm', long = "mappings")]
    pub(crate) per_mapping: bool,
    /// Only the pages in START-END (hex virtual addresses, END excluded)
    #[arg(long, value_name = "START-END", value_parser = parse_range)]
    pub(crate) range: Option<AddrRange>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct AddrRange {
    start: u64,
    end: u64,
}

fn parse_range(s: &str) -> Result<AddrRange, String> {
    let hex = |t: &str| {
        let t = t.trim();
        let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
        u64::from_str_radix(t, 16).map_err(|_| format!("{t:?} is not a hex address"))
    };
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected START-END, e.g. 7f0000000000-7f0000200000"))?;
    let (start, end) = (hex(a)?, hex(b)?);
    if start >= end {
        return Err(format!("{s:?}: START must be below END"));
    }
    Ok(AddrRange { start, end })
}

/// Opens one of the /proc files the walk reads, with the error a user can act on.
fn open_proc(path: &str) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        // pagemap also needs ptrace access: a target holding capabilities pfault lacks refuses.
        ErrorKind::PermissionDenied if path.ends_with("/pagemap") => anyhow::anyhow!(
            "cannot read {path}: permission denied: pfault pages must run as root (CAP_SYS_ADMIN) \
             with ptrace access to the process"
        ),
        ErrorKind::PermissionDenied => anyhow::anyhow!(
            "cannot read {path}: permission denied: pfault pages must run as root (CAP_SYS_ADMIN)"
        ),
        ErrorKind::NotFound if path.starts_with("/proc/kpage") => {
            anyhow::anyhow!("{path} does not exist: this kernel was built without CONFIG_PROC_PAGE_MONITOR")
        }
        _ => anyhow::anyhow!("cannot read {path}: {e}"),
    })
}

/// Reads 8-byte words from `index` on; fewer than asked at the end of the file (pagemap
/// ends at the top of user space, kpageflags at the last PFN).
fn read_words(file: &File, index: u64, out: &mut [u64]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < out.len() {
        let rest = &mut out[done..];
        // SAFETY: every bit pattern is a valid u64, and the byte view covers exactly `rest`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(rest.as_mut_ptr().cast::<u8>(), rest.len() * 8) };
        match file.read_at(bytes, (index + done as u64) * 8) {
            Ok(0) => break,
            Ok(n) => done += n / 8,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A present page waiting for its flags.
struct Pending {
    pfn: u64,
    pme: u64,
    group: usize,
}

#[derive(Default)]
struct SwapType {
    pages: u64,
    min_offset: u64,
    max_offset: u64,
}

#[derive(Default, Clone, Copy, Serialize)]
struct HugeCount {
    huge_pages: u64,
    base_pages: u64,
}

/// What the walk found.
#[derive(Default)]
struct Tally {
    /// Pages per (mapping group, flag set).
    rows: HashMap<(usize, u64), u64>,
    present: u64,
    /// Present pages whose PFN read as non-zero: none means pagemap hid them.
    visible_pfns: u64,
    swap: BTreeMap<u64, SwapType>,
    shared: u64,
    thp: HugeCount,
    hugetlb: HugeCount,
    /// The last present page (PFN, THP or hugetlb bit), to tell a compound page's tail that
    /// continues the one before it from the start of another huge page.
    last: Option<(u64, u64)>,
}

impl Tally {
    fn add_swapped(&mut self, group: usize, entry: u64) {
        *self
            .rows
            .entry((group, kpageflags::expand(0, entry)))
            .or_default() += 1;
        let bits = entry & pme::PFN_MASK;
        let (kind, offset) = (
            bits & ((1 << pme::SWAP_TYPE_BITS) - 1),
            bits >> pme::SWAP_TYPE_BITS,
        );
        let t = self.swap.entry(kind).or_insert(SwapType {
            min_offset: offset,
            ..Default::default()
        });
        t.pages += 1;
        t.min_offset = t.min_offset.min(offset);
        t.max_offset = t.max_offset.max(offset);
    }

    fn add_present(&mut self, p: &Pending, kflags: u64, count: u64) {
        *self
            .rows
            .entry((p.group, kpageflags::expand(kflags, p.pme)))
            .or_default() += 1;
        if count > 1 {
            self.shared += 1;
        }
        let kind = kflags & (THP | HUGE);
        if kind != 0 {
            let counts = if kind & HUGE != 0 {
                &mut self.hugetlb
            } else {
                &mut self.thp
            };
            counts.base_pages += 1;
            let continues = kflags & COMPOUND_HEAD == 0 && self.last == Some((p.pfn.wrapping_sub(1), kind));
            if !continues {
                counts.huge_pages += 1;
            }
        }
        self.last = Some((p.pfn, kind));
    }
}

struct Walker {
    pagemap: File,
    kflags: File,
    kcount: File,
    pending: Vec<Pending>,
    tally: Tally,
}

impl Walker {
    /// Walks pagemap over [start, end) (page numbers) of one mapping.
    fn walk(&mut self, group: usize, start: u64, end: u64, entries: &mut [u64]) -> Result<()> {
        let mut vpn = start;
        while vpn < end {
            let want = ((end - vpn) as usize).min(entries.len());
            let got = read_words(&self.pagemap, vpn, &mut entries[..want])
                .with_context(|| format!("reading pagemap at {:#x}", vpn * page_size()))?;
            for &e in &entries[..got] {
                if e & pme::PRESENT != 0 {
                    self.tally.present += 1;
                    let pfn = e & pme::PFN_MASK;
                    if pfn != 0 {
                        self.tally.visible_pfns += 1;
                    }
                    self.pending.push(Pending { pfn, pme: e, group });
                } else if e & pme::SWAP != 0 {
                    self.tally.add_swapped(group, e);
                }
            }
            if self.pending.len() >= LOOKUP_BATCH {
                self.lookup()?;
            }
            // A short read: pagemap has nothing past this ([vsyscall] lies above user space).
            if got < want {
                break;
            }
            vpn += got as u64;
        }
        Ok(())
    }

    /// Reads kpageflags and kpagecount for the pending pages, in runs of nearby PFNs, and
    /// tallies the pages in their virtual order (which huge-page counting needs).
    fn lookup(&mut self) -> Result<()> {
        let n = self.pending.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&i| self.pending[i].pfn);
        let mut kflags = vec![0u64; n];
        let mut counts = vec![0u64; n];
        let (mut fbuf, mut cbuf) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < n {
            let start = self.pending[order[i]].pfn;
            let mut end = start + 1;
            let mut j = i + 1;
            while j < n {
                let pfn = self.pending[order[j]].pfn;
                if pfn >= end + RUN_GAP || pfn + 1 - start > MAX_RUN {
                    break;
                }
                end = end.max(pfn + 1);
                j += 1;
            }
            let len = (end - start) as usize;
            fbuf.resize(len, 0);
            cbuf.resize(len, 0);
            let got_flags = read_words(&self.kflags, start, &mut fbuf).context("reading /proc/kpageflags")?;
            let got_counts =
                read_words(&self.kcount, start, &mut cbuf).context("reading /proc/kpagecount")?;
            for &k in &order[i..j] {
                let off = (self.pending[k].pfn - start) as usize;
                // Past the last PFN the kernel knows there is no page: its own word for that.
                kflags[k] = if off < got_flags { fbuf[off] } else { NOPAGE };
                counts[k] = if off < got_counts { cbuf[off] } else { 0 };
            }
            i = j;
        }
        for (k, p) in self.pending.iter().enumerate() {
            self.tally.add_present(p, kflags[k], counts[k]);
        }
        self.pending.clear();
        Ok(())
    }
}

/// How a mapping is named: its file, or what /proc/PID/maps calls it, or `[anon]`.
fn mapping_name(path: &str) -> String {
    if path.is_empty() {
        "[anon]".into()
    } else {
        path.into()
    }
}

pub(crate) fn run(args: PagesArgs) -> Result<Option<i32>> {
    let pid = args.pid;
    check_pid(pid)?;
    if is_kernel_thread(pid) {
        bail!("{pid} is a kernel thread: it has no user memory, so no pages to show");
    }
    let out = args.output.reserve()?;
    let pagemap = open_proc(&format!("/proc/{pid}/pagemap"))?;
    let kflags = open_proc("/proc/kpageflags")?;
    let kcount = open_proc("/proc/kpagecount")?;
    let maps = read_maps(pid).ok_or_else(|| anyhow::anyhow!("no such process: {pid} (it exited)"))?;
    let mut out = out.open()?;

    let page = page_size();
    let (lo, hi) = args.range.map_or((0, u64::MAX), |r| (r.start, r.end));
    let mut groups: Vec<String> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let mut walker = Walker {
        pagemap,
        kflags,
        kcount,
        pending: Vec::with_capacity(LOOKUP_BATCH + PAGEMAP_BATCH),
        tally: Tally::default(),
    };
    let mut entries = vec![0u64; PAGEMAP_BATCH];
    let mut walked_any = false;
    for m in &maps {
        let (start, end) = (m.start.max(lo) / page, m.end.min(hi).div_ceil(page));
        if start >= end {
            continue;
        }
        walked_any = true;
        let name = mapping_name(&m.path);
        let group = *group_of.entry(name.clone()).or_insert_with(|| {
            groups.push(name);
            groups.len() - 1
        });
        walker.walk(group, start, end, &mut entries)?;
    }
    walker.lookup()?;
    if args.range.is_some() && !walked_any {
        bail!("no mapping of process {pid} overlaps {lo:#x}-{hi:#x} (see /proc/{pid}/maps)");
    }
    let tally = walker.tally;
    if tally.present > 0 && tally.visible_pfns == 0 {
        bail!(
            "/proc/{pid}/pagemap hides page frame numbers (all {} present pages read PFN 0): \
             pfault pages must run as root (CAP_SYS_ADMIN)",
            tally.present
        );
    }
    let report = Report {
        tally: &tally,
        groups: &groups,
        per_mapping: args.per_mapping,
        page,
    };
    match args.output.format {
        Format::Text => report.text(&mut *out)?,
        Format::Json => report.json(&mut *out)?,
    }
    out.flush()?;
    Ok(None)
}

struct Report<'a> {
    tally: &'a Tally,
    groups: &'a [String],
    per_mapping: bool,
    page: u64,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    flags_hex: String,
    flags: Vec<String>,
    pages: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mapping: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonSwapType {
    #[serde(rename = "type")]
    kind: u64,
    pages: u64,
    min_offset: u64,
    max_offset: u64,
}

#[derive(Serialize)]
struct JsonSwapped {
    pages: u64,
    types: Vec<JsonSwapType>,
}

#[derive(Serialize)]
struct JsonSummary {
    pages: u64,
    bytes: u64,
    swapped: JsonSwapped,
    shared_pages: u64,
    thp: HugeCount,
    hugetlb: HugeCount,
}

#[derive(Serialize)]
struct JsonSummaryLine {
    summary: JsonSummary,
}

/// The rows of one mapping (all mappings without `-m`): (flag set, pages), by flag value.
struct Group<'a> {
    mapping: Option<&'a str>,
    rows: Vec<(u64, u64)>,
}

impl Report<'_> {
    /// Groups as printed: one per mapping in address order with `-m`, else one.
    fn grouped(&self) -> Vec<Group<'_>> {
        let mut by_group: BTreeMap<Option<usize>, BTreeMap<u64, u64>> = BTreeMap::new();
        for (&(g, flags), &pages) in &self.tally.rows {
            let key = self.per_mapping.then_some(g);
            *by_group.entry(key).or_default().entry(flags).or_default() += pages;
        }
        by_group
            .into_iter()
            .map(|(g, rows)| Group {
                mapping: g.map(|g| self.groups[g].as_str()),
                rows: rows.into_iter().collect(),
            })
            .collect()
    }

    fn mb(&self, pages: u64) -> u64 {
        (pages * self.page) >> 20
    }

    fn total(&self) -> u64 {
        self.tally.rows.values().sum()
    }

    fn text(&self, w: &mut dyn Write) -> Result<()> {
        let width = kpageflags::symbolic_width();
        writeln!(
            w,
            "{:>18}  {:>10} {:>8}  {:<width$}  long-symbolic-flags",
            "flags", "page-count", "MB", "symbolic-flags"
        )?;
        let total_row = |w: &mut dyn Write, label: &str, pages: u64| {
            writeln!(w, "{label:>18}  {pages:>10} {:>8}", self.mb(pages))
        };
        for Group { mapping, rows } in self.grouped() {
            if let Some(m) = mapping {
                writeln!(w, "{}", crate::output::escape(m))?;
            }
            for &(flags, pages) in &rows {
                writeln!(
                    w,
                    "0x{flags:016x}  {pages:>10} {:>8}  {}  {}",
                    self.mb(pages),
                    kpageflags::symbolic(flags),
                    kpageflags::long_names(flags).join(",")
                )?;
            }
            if mapping.is_some() {
                total_row(w, "subtotal", rows.iter().map(|r| r.1).sum())?;
            }
        }
        total_row(w, "total", self.total())?;
        writeln!(w)?;
        let t = self.tally;
        let swapped: u64 = t.swap.values().map(|s| s.pages).sum();
        let types: Vec<String> = t
            .swap
            .iter()
            .map(|(kind, s)| {
                format!(
                    "type {kind}: {} pages at offsets {:#x}-{:#x}",
                    s.pages, s.min_offset, s.max_offset
                )
            })
            .collect();
        if types.is_empty() {
            writeln!(w, "swapped  {swapped:>10} pages")?;
        } else {
            writeln!(w, "swapped  {swapped:>10} pages ({})", types.join("; "))?;
        }
        writeln!(
            w,
            "shared   {:>10} pages mapped more than once (kpagecount > 1)",
            t.shared
        )?;
        for (name, h) in [("thp", t.thp), ("hugetlb", t.hugetlb)] {
            writeln!(
                w,
                "{name:<8} {:>10} huge pages, {} base pages ({} MB)",
                h.huge_pages,
                h.base_pages,
                self.mb(h.base_pages)
            )?;
        }
        Ok(())
    }

    fn json(&self, w: &mut dyn Write) -> Result<()> {
        for Group { mapping, rows } in self.grouped() {
            for (flags, pages) in rows {
                json::write_line(
                    w,
                    &JsonRow {
                        flags_hex: format!("0x{flags:016x}"),
                        flags: kpageflags::long_names(flags),
                        pages,
                        bytes: pages * self.page,
                        mapping,
                    },
                )?;
            }
        }
        let t = self.tally;
        let types: Vec<JsonSwapType> = t
            .swap
            .iter()
            .map(|(&kind, s)| JsonSwapType {
                kind,
                pages: s.pages,
                min_offset: s.min_offset,
                max_offset: s.max_offset,
            })
            .collect();
        let total = self.total();
        json::write_line(
            w,
            &JsonSummaryLine {
                summary: JsonSummary {
                    pages: total,
                    bytes: total * self.page,
                    swapped: JsonSwapped {
                        pages: types.iter().map(|s| s.pages).sum(),
                        types,
                    },
                    shared_pages: t.shared,
                    thp: t.thp,
                    hugetlb: t.hugetlb,
                },
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(pfn: u64) -> Pending {
        Pending {
            pfn,
            pme: pme::PRESENT | pfn,
            group: 0,
        }
    }

    #[test]
    fn a_huge_page_counts_once_however_it_is_walked() {
        let tail = kpageflags::ANON | THP | (1 << 16);
        let head = kpageflags::ANON | THP | COMPOUND_HEAD;
        let mut t = Tally::default();
        t.add_present(&present(512), head, 1);
        for pfn in 513..1024 {
            t.add_present(&present(pfn), tail, 1);
        }
        // A second one seen from its middle on (a --range that cuts it).
        for pfn in 2000..2048 {
            t.add_present(&present(pfn), tail, 2);
        }
        assert_eq!((t.thp.huge_pages, t.thp.base_pages), (2, 560));
        assert_eq!(t.shared, 48);
        assert_eq!(t.rows.values().sum::<u64>(), 560);
    }

    #[test]
    fn swap_entries_keep_type_and_offset() {
        let mut t = Tally::default();
        t.add_swapped(0, pme::SWAP | (7 << pme::SWAP_TYPE_BITS) | 1);
        t.add_swapped(0, pme::SWAP | (3 << pme::SWAP_TYPE_BITS) | 1);
        let s = &t.swap[&1];
        assert_eq!((s.pages, s.min_offset, s.max_offset), (2, 3, 7));
    }

    #[test]
    fn ranges_parse_as_hex() {
        let r = parse_range("0x7f00-7f10").unwrap();
        assert_eq!((r.start, r.end), (0x7f00, 0x7f10));
        assert!(parse_range("7f10-7f00").is_err());
        assert!(parse_range("7f10").is_err());
    }
}
