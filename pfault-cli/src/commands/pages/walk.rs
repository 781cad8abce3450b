//! The walk: pagemap in batches, then each batch's physical pages sorted into runs and their
//! flags and map counts read a run at a time, tallied as they come.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::ErrorKind,
    os::unix::fs::FileExt,
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::kpageflags::{self, pme, COMPOUND_HEAD, HUGE, NOPAGE, THP};
use crate::procfs::page_size;

/// pagemap entries per pread (512 KiB).
pub(super) const PAGEMAP_BATCH: usize = 64 << 10;
/// Present pages gathered before their flags are looked up: enough to sort into long runs.
pub(super) const LOOKUP_BATCH: usize = 64 << 10;
/// Longest kpageflags/kpagecount read.
const MAX_RUN: u64 = 64 << 10;
/// PFNs this close are read in one run, gap included. The kernel snapshots each page of a
/// read, which costs per word; a syscall costs as much as several words: past a few words, a
/// new read is cheaper.
const RUN_GAP: u64 = 8;

/// Opens one of the /proc files the walk reads, with the error a user can act on.
pub(super) fn open_proc(path: &str) -> Result<File> {
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
pub(super) struct Pending {
    pub(super) pfn: u64,
    pub(super) pme: u64,
    pub(super) group: usize,
}

#[derive(Default)]
pub(super) struct SwapType {
    pub(super) pages: u64,
    pub(super) min_offset: u64,
    pub(super) max_offset: u64,
}

#[derive(Default, Clone, Copy, Serialize)]
pub(super) struct HugeCount {
    pub(super) huge_pages: u64,
    pub(super) base_pages: u64,
}

/// What the walk found.
#[derive(Default)]
pub(super) struct Tally {
    /// Pages per (mapping group, flag set).
    pub(super) rows: HashMap<(usize, u64), u64>,
    pub(super) present: u64,
    /// Present pages whose PFN read as non-zero: none means pagemap hid them.
    pub(super) visible_pfns: u64,
    pub(super) swap: BTreeMap<u64, SwapType>,
    pub(super) shared: u64,
    pub(super) thp: HugeCount,
    pub(super) hugetlb: HugeCount,
    /// The last present page (PFN, THP or hugetlb bit), to tell a compound page's tail that
    /// continues the one before it from the start of another huge page.
    pub(super) last: Option<(u64, u64)>,
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

pub(super) struct Walker {
    pub(super) pagemap: File,
    pub(super) kflags: File,
    pub(super) kcount: File,
    pub(super) pending: Vec<Pending>,
    pub(super) tally: Tally,
}

impl Walker {
    /// Walks pagemap over [start, end) (page numbers) of one mapping.
    pub(super) fn walk(&mut self, group: usize, start: u64, end: u64, entries: &mut [u64]) -> Result<()> {
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
    pub(super) fn lookup(&mut self) -> Result<()> {
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
}
