//! `pfault pages`: what a process's resident pages are (page-types -p): its pagemap says
//! which physical page backs each virtual page, /proc/kpageflags and /proc/kpagecount what
//! that page is and how many mappings share it.
//!
//! Everything is read in batches: pagemap 64K entries per pread, and the physical pages of a
//! batch sorted and merged into runs of nearby PFNs, one pread of kpageflags and one of
//! kpagecount per run. The syscalls then follow how scattered physical memory is, not how
//! much of it there is: a huge page is one run.

pub mod kpageflags;
mod report;
mod walk;

use std::{collections::HashMap, io::Write};

use anyhow::{bail, Result};

use self::{
    report::Report,
    walk::{open_proc, Tally, Walker, LOOKUP_BATCH, PAGEMAP_BATCH},
};
use crate::{
    args::OutputArgs,
    output::Format,
    procfs::{check_pid, is_kernel_thread, page_size, read_maps},
};

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
        let name = m.path.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_hex() {
        let r = parse_range("0x7f00-7f10").unwrap();
        assert_eq!((r.start, r.end), (0x7f00, 0x7f10));
        assert!(parse_range("7f10-7f00").is_err());
        assert!(parse_range("7f10").is_err());
    }
}
