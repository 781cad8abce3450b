//! `/metrics`' series: the kernel's per-process (and per-file) counts moved into them, and the
//! rows of processes that are gone dropped.

use std::{collections::HashSet, path::Path};

use anyhow::Result;
use pfault_common::*;

use super::{release_free_memory, Exporter};
use crate::{
    engine::{Engine, Kind},
    output::prometheus::{FaultLabels, LatencyLabels},
};

/// A process row's totals when last collected.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) counts: [u64; 3],
    pub(super) kernel: [u64; 3],
    pub(super) latency_sum_ns: u64,
    pub(super) hist: Option<Box<[u64; HIST_BUCKETS]>>,
}

pub(super) fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Exporter {
    /// Moves the kernel's new counts into the series.
    pub(super) fn collect(&mut self, engine: &mut Engine) -> Result<()> {
        let doomed = std::mem::take(&mut self.doomed_procs);
        for (k, v) in engine.proc_stats(false)? {
            let seen = self.procs.entry(k).or_default();
            let comm = crate::procfs::cstr(&v.comm).to_string();
            let cgroup = self.cgroups.name(v.cgroup);
            for (i, kind) in Kind::ALL.iter().enumerate() {
                let kernel = v.kernel[i].saturating_sub(seen.kernel[i]);
                let all = v.counts[i].saturating_sub(seen.counts[i]);
                for (mode, n) in [("user", all.saturating_sub(kernel)), ("kernel", kernel)] {
                    let labels = FaultLabels {
                        comm: comm.clone(),
                        kind: kind.name().into(),
                        mode: mode.into(),
                        cgroup: cgroup.clone(),
                    };
                    self.metrics.add_faults(labels, n);
                }
            }
            if self.args.latency {
                let prev = seen.hist.get_or_insert_with(|| Box::new([0; HIST_BUCKETS]));
                let mut delta = [0u64; HIST_BUCKETS];
                for (d, (now, was)) in delta.iter_mut().zip(v.hist.iter().zip(prev.iter())) {
                    *d = now.saturating_sub(*was);
                }
                **prev = v.hist;
                let sum = v.latency_sum_ns.saturating_sub(seen.latency_sum_ns);
                self.metrics
                    .add_latency(LatencyLabels { comm, cgroup }, &delta, sum);
            }
            (seen.counts, seen.kernel, seen.latency_sum_ns) = (v.counts, v.kernel, v.latency_sum_ns);
            if !alive(k.tgid) && !doomed.contains(&k) {
                self.doomed_procs.push(k);
            }
        }
        engine.forget_procs(&doomed)?;
        for k in &doomed {
            self.procs.remove(k);
        }
        if self.args.by_file {
            self.collect_files(engine)?;
        }
        let lost = engine.losses()?;
        for (what, n) in [
            ("ringbuf", lost.ringbuf),
            ("untracked", lost.untracked),
            ("stacks", lost.stacks_lost),
            ("map_full", lost.map_full),
            ("vma_busy", lost.vma_busy),
        ] {
            self.metrics.set_lost(what, n);
        }
        Ok(())
    }

    /// Drops the maps of processes that are gone and have no rows left to name, and gives
    /// the allocator's free pages back. Maps are read for every process the kernel announces
    /// but were dropped only with a process's last file row, and some processes leave without
    /// one being doomed (seen: a shell's forked children): 155 dead processes' maps (7,000
    /// entries) were held after a minute of 70 new processes a second.
    pub(super) fn tidy(&mut self) {
        let counted: HashSet<u32> = self
            .procs
            .keys()
            .map(|k| k.tgid)
            .chain(self.files.keys().map(|k| k.tgid))
            .collect();
        self.maps.retain(|pid| counted.contains(&pid) || alive(pid));
        // A profile folds its dead processes' maps with their counts; these are the maps of
        // those that died without a count (notices of processes that never faulted).
        if let Some(p) = &mut self.profiling {
            p.counts.syms.retain(alive);
        }
        release_free_memory();
    }

    pub(super) fn collect_files(&mut self, engine: &mut Engine) -> Result<()> {
        let doomed = std::mem::take(&mut self.doomed_files);
        for (k, v) in engine.file_counts(false)? {
            let file = self
                .maps
                .counted_name(k.tgid, k.map_kind as u8, k.dev, k.ino, &v.name);
            let seen = self.files.entry(k).or_default();
            for (i, kind) in Kind::ALL.iter().enumerate() {
                self.metrics
                    .add_file_faults(&file, kind.name(), v.counts[i].saturating_sub(seen[i]));
            }
            *seen = v.counts;
            if !alive(k.tgid) && !doomed.contains(&k) {
                self.doomed_files.push(k);
            }
        }
        engine.forget_files(&doomed)?;
        for k in &doomed {
            self.files.remove(k);
            self.maps.forget(k.tgid);
        }
        Ok(())
    }
}
