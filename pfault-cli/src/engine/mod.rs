//! The kernel side, loaded and attached: one `Engine` per run. Subcommands reach the maps
//! through its typed accessors; the names of maps and programs live in [`objects`].

mod attach;
pub(crate) mod features;
pub(crate) mod layout;
mod linger;
pub(crate) mod losses;
pub(crate) mod objects;
pub(crate) mod plan;
mod probes;

use anyhow::{Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, RingBuf},
    programs::Iter,
    Ebpf, EbpfError, EbpfLoader, Pod,
};
use pfault_common::*;

pub(crate) use self::{
    attach::short_error,
    layout::VmFaultNames,
    losses::Losses,
    plan::{Kind, Plan, ProbeMode, TaskFilter, Tunable},
};
use self::{
    layout::{kernel_layout, DirectMap},
    linger::Linger,
    objects::{maps, BPF_OBJECT, BPF_OBJECT_COMPAT, CONFIG, LOG_LEVEL},
};
use crate::{
    btf::Btf,
    procfs,
    records::Record,
    unwind::{self, Unwinder},
};

/// The loaded, attached kernel side.
pub(crate) struct Engine {
    ebpf: Ebpf,
    pub(crate) plan: Plan,
    pub(crate) mode: ProbeMode,
    pub(crate) vm_fault_names: VmFaultNames,
    /// Why better modes were not used, when the mode was chosen automatically.
    pub(crate) refused: Vec<String>,
    /// The kernel side notes the size of the page each fault mapped (`CFG_PAGE_SIZE`).
    pub(crate) page_sizes: bool,
    /// Counts come from the kernel's own fault accounting (`CFG_ACCOUNTED`).
    pub(crate) accounted: bool,
    /// CLOCK_MONOTONIC when the probes were attached.
    pub(crate) started_ns: u64,
    /// The CFI unwinder's tables (`CFG_UNWIND_CFI`).
    pub(crate) unwinder: Option<Unwinder>,
    log: Option<aya_log::EbpfLogger<StderrLog>>,
    /// Last: the classic tracepoints' holder is let go once the rest is closed.
    linger: Linger,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.linger.hand_off();
    }
}

/// The CFI unwinder's account of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct UnwindReport {
    /// User frames walked, and of those, by frame pointer (code without a table).
    pub(crate) frames: u64,
    pub(crate) frames_by_fp: u64,
    /// Of `frames`, those of a thread's last walk taken again (same registers, same stack
    /// words): no table searched for them.
    pub(crate) frames_kept: u64,
    /// Stacks that met a table still loading (or a mapping not looked up), handed to
    /// userspace with a copy of the stack and walked there once the table was in; and those
    /// the ring buffer had no room for (three quarters full), counted as the kernel side
    /// walked them.
    pub(crate) stacks_walked_late: u64,
    pub(crate) stacks_late_lost: u64,
    /// Why `frames_by_fp` were not unwound from CFI.
    pub(crate) by_fp_because: ByFpBecause,
    pub(crate) tables: unwind::Stats,
}

/// Frames walked by frame pointer, by why their code had no CFI row (`CNT_FP_*`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct ByFpBecause {
    /// The file's table was asked for and not loaded yet.
    pub(crate) table_not_loaded: u64,
    /// The file has no usable CFI (stripped, or none describing the code).
    pub(crate) no_cfi: u64,
    /// The table has no row for the address, or a rule pfault cannot express.
    pub(crate) no_row: u64,
    /// The file's table did not fit in the unwind-row map (`--unwind-mb`).
    pub(crate) table_space_full: u64,
    /// The table of binaries was full.
    pub(crate) file_table_full: u64,
    /// Code in anonymous memory (JIT).
    pub(crate) anonymous_code: u64,
    /// The code mapping was not found (mmap lock busy, or a bad frame pointer).
    pub(crate) mapping_unknown: u64,
}

impl ByFpBecause {
    /// "12 table not loaded yet, 3 no CFI": the reasons that occurred.
    fn describe(&self) -> String {
        [
            (self.table_not_loaded, "table not loaded yet"),
            (self.no_cfi, "no CFI in the file"),
            (self.no_row, "no row or a rule pfault cannot express"),
            (self.table_space_full, "table space full (raise --unwind-mb)"),
            (self.file_table_full, "table of binaries full"),
            (self.anonymous_code, "anonymous (JIT) code"),
            (self.mapping_unknown, "code mapping not found or busy"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, why)| format!("{n} {why}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

impl UnwindReport {
    /// "unwind: cfi, 0.1% of 20,012 frames by frame pointer, 97.0% a thread's last walk again;
    /// 3 tables (...)".
    pub(crate) fn line(&self) -> String {
        let pct = |n: u64| {
            if self.frames == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.frames as f64
            }
        };
        let because = self.by_fp_because.describe();
        let late = match (self.stacks_walked_late, self.stacks_late_lost) {
            (0, 0) => String::new(),
            (n, 0) => format!(", {n} stacks walked late from copies"),
            (n, lost) => {
                format!(", {n} stacks walked late from copies ({lost} more left as walked: ring buffer busy)")
            }
        };
        format!(
            "unwind: cfi, {:.1}% of {} user frames by frame pointer{}, {:.1}% a thread's last walk again{late}; {}",
            pct(self.frames_by_fp),
            self.frames,
            if because.is_empty() {
                because
            } else {
                format!(" ({because})")
            },
            pct(self.frames_kept),
            unwind::describe(&self.tables)
        )
    }
}

/// The kernel side's log lines (`--bpf-log`), on stderr.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        eprintln!("pfault: kernel: {}", record.args());
    }

    fn flush(&self) {}
}

fn comm_bytes(comm: &str) -> [u8; COMM_LEN] {
    let mut out = [0u8; COMM_LEN];
    for (o, b) in out.iter_mut().zip(comm.bytes().take(COMM_LEN - 1)) {
        *o = b;
    }
    out
}

/// Whether the kernel's verifier refused one of the programs.
fn verifier_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<aya::programs::ProgramError>(),
            Some(aya::programs::ProgramError::LoadError { .. })
        )
    })
}

/// A load error in words a user can act on: a map the kernel would not create names the
/// flag that sizes it.
fn load_error(e: EbpfError, plan: &Plan) -> anyhow::Error {
    if let EbpfError::MapError(MapError::CreateError { name, io_error }) = &e {
        if let Some(flag) = plan.flag_for(name) {
            return anyhow::anyhow!(
                "the kernel refused to create the {name} map that {flag} sizes ({io_error}): choose a smaller {flag}"
            );
        }
        return anyhow::anyhow!("the kernel refused to create the {name} map: {io_error}");
    }
    anyhow::Error::new(e).context("loading pfault's eBPF object")
}

/// The oldest kernel pfault runs on: ring buffers (5.8) and task iterators (5.8).
const OLDEST: &str = "pfault supports Linux 5.8 and later";

/// The compat object needs ring buffers, and finds VMAs and user registers through kernel
/// structures the default one leaves to helpers: a kernel that has neither cannot be traced.
fn check_compat(off: &Offsets, missing: &[&features::Helper]) -> Result<()> {
    if !features::ringbuf().unwrap_or(false) {
        anyhow::bail!("this kernel has no BPF ring buffer: {OLDEST}");
    }
    let fields = [
        ("mm_struct.mm_rb", off.mm_rb),
        ("vm_area_struct.vm_rb", off.vma_vm_rb),
        ("rb_node.rb_left", off.rb_left),
        ("task_struct.stack", off.task_stack),
    ];
    if let Some((name, _)) = fields.iter().find(|(_, o)| *o == 0) {
        let helpers: Vec<&str> = missing.iter().map(|h| h.what).collect();
        anyhow::bail!(
            "this kernel lacks {} and its BTF has no {name} to do without them: {OLDEST}",
            helpers.join(", ")
        );
    }
    Ok(())
}

/// Room for the threads compat keeps state for: twice the host's threads now (they come and
/// go), within bounds. A thread beyond them is counted as untracked, never dropped silently.
fn compat_threads() -> u32 {
    // "0.00 0.01 0.05 2/345 6789": the fourth field's total is the host's threads.
    let now = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            l.split_whitespace()
                .nth(3)?
                .split('/')
                .nth(1)?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or(0);
    now.saturating_mul(2).clamp(4096, capacity::THREADS)
}

impl Engine {
    /// Checks privileges and kernel features, loads the object configured for `plan`, and
    /// attaches the probes of the chosen mode (and only those).
    pub(crate) fn start(plan: &Plan, filter: &TaskFilter) -> Result<Engine> {
        match Self::start_with(plan, filter) {
            // A kernel whose verifier refuses the CFI unwinder (no bpf_loop or bpf_find_vma:
            // before 5.17) still walks frame pointers. Any other failure (a map the kernel
            // would not create, a missing feature) is reported as it is.
            Err(e) if plan.flags & CFG_UNWIND_CFI != 0 && verifier_refused(&e) => {
                let mut fp = plan.clone();
                fp.flags &= !CFG_UNWIND_CFI;
                let mut engine =
                    Self::start_with(&fp, filter).map_err(|_| e.context("starting with --unwind cfi"))?;
                engine
                    .refused
                    .push("CFI unwinding refused by this kernel: user stacks by frame pointer".into());
                Ok(engine)
            }
            r => r,
        }
    }

    fn start_with(plan: &Plan, filter: &TaskFilter) -> Result<Engine> {
        procfs::check_privileges()?;
        features::ensure_tracefs()?;
        // The target's tables are built while the programs load (the verifier's time).
        let ahead = (plan.flags & CFG_UNWIND_CFI != 0)
            .then(|| unwind::Ahead::start((filter.tgid != 0).then_some(filter.tgid), filter.program.clone()));
        // The kernel's BTF (megabytes) is freed before attaching: the fentry attempt parses its
        // own copy, and the two need not coexist.
        let btf = Btf::from_sys_fs()?;
        let (mut off, vm_fault_names) = kernel_layout(&btf)?;
        let missing = features::missing_helpers(&btf)?;
        let object = if missing.is_empty() {
            BPF_OBJECT
        } else {
            off.user_regs_in_stack = layout::user_regs_in_stack(&btf)?;
            check_compat(&off, &missing)?;
            BPF_OBJECT_COMPAT
        };
        let hmf_btf_id = btf.func_id("handle_mm_fault");
        // Kernel stacks walked in a kretprobe may stop at the trampoline that took the return
        // address, until 5.15 taught the unwinder to look past it (with the first function;
        // the second where kretprobes are built on rethook, 6.0+ on x86).
        let kretprobe_cuts_stacks = plan.flags & CFG_KSTACK != 0
            && features::kprobes_available()
            && ["kretprobe_find_ret_addr", "rethook_find_ret_addr"]
                .iter()
                .all(|f| btf.func_id(f).is_none());
        let iter_btf_id = if plan.flags & CFG_OUT_PROCS != 0 {
            Some(
                btf.func_id("bpf_iter_task")
                    .context("kernel BTF has no bpf_iter_task (Linux 5.8+)")?,
            )
        } else {
            None
        };
        drop(btf);
        let mut flags = plan.flags;
        if filter.comm.is_some() {
            flags |= CFG_FILTER_COMM;
        }
        if filter.follow {
            flags |= CFG_FOLLOW;
        }
        if filter.cgroup.is_some() {
            flags |= CFG_FILTER_CGROUP;
        }
        let mut page_sizes_unknown = None;
        let direct_map = if flags & CFG_PAGE_SIZE != 0 {
            match DirectMap::of_running_kernel() {
                Ok(d) => Some(d),
                Err(why) if plan.page_sizes_optional => {
                    flags &= !CFG_PAGE_SIZE;
                    page_sizes_unknown = Some(why);
                    None
                }
                Err(why) => anyhow::bail!("{why}"),
            }
        } else {
            None
        };
        let config = Config {
            tgid: filter.tgid,
            tid: filter.tid,
            comm: comm_bytes(filter.comm.as_deref().unwrap_or("")),
            min_latency_ns: plan.min_latency_ns,
            flags,
            kinds: plan.kinds,
            modes: plan.modes,
            wakeup_bytes: plan.ringbuf_bytes / 16,
            self_tgid: std::process::id(),
            cgroup_level: filter.cgroup.map_or(0, |c| c.level),
            cgroup_id: filter.cgroup.map_or(0, |c| c.id),
            page_offset: direct_map.map_or(0, |d| d.base),
            page_offset_at: direct_map.map_or(0, |d| d.base_at),
            pgtable_l5: direct_map.is_some_and(|d| d.five_levels) as u32,
            _pad: 0,
            off,
        };
        // Maps an output does not use shrink to one entry: they are preallocated.
        let size = |bit: u32, n: u32| if flags & bit != 0 { n } else { 1 };
        let log_level: u8 = if plan.bpf_log { u8::MAX } else { 0 };
        let mut loader = EbpfLoader::new();
        // The programs carry no CO-RE relocations (offsets come in CONFIG): aya needs no kernel
        // BTF, whose parse is a large share of start-up time and memory. pfault's copy of aya does not parse it in
        // `new()` (third_party/aya/PATCHED.md); the call stays so an unpatched aya would not
        // use it either.
        loader.btf(None);
        // The per-thread maps are task storage, which aya creates but has no userspace type for.
        loader.allow_unsupported_maps();
        loader
            .override_global(CONFIG, &config, true)
            .override_global(LOG_LEVEL, &log_level, true)
            .map_max_entries(maps::EVENTS, plan.ringbuf_bytes)
            .map_max_entries(maps::STACK_COUNTS, size(CFG_OUT_STACKS, plan.stack_count_entries))
            .map_max_entries(maps::STACKS_SENT, size(CFG_OUT_STACKS, plan.stacks_sent_entries))
            .map_max_entries(maps::FILE_COUNTS, size(CFG_OUT_FILES, plan.file_count_entries))
            .map_max_entries(maps::PROC_STATS, size(CFG_OUT_PROCS, capacity::PROC_STATS))
            .map_max_entries(maps::UNWIND_ROWS, size(CFG_UNWIND_CFI, plan.unwind_rows))
            .map_max_entries(maps::UNWIND_FILES, size(CFG_UNWIND_CFI, capacity::UNWIND_FILES))
            .map_max_entries(maps::TEXT_VMAS, size(CFG_UNWIND_CFI, capacity::TEXT_VMAS))
            .map_max_entries(maps::EXEC_GEN, size(CFG_UNWIND_CFI, capacity::EXEC_GEN))
            .map_max_entries(maps::WALK_CACHE, size(CFG_UNWIND_CFI, capacity::WALK_CACHE));
        if !missing.is_empty() {
            // Compat's per-thread maps are preallocated: one of the two is used.
            let threads = compat_threads();
            loader
                .map_max_entries(
                    maps::PENDING,
                    if flags & CFG_OUT_PROCS != 0 { 1 } else { threads },
                )
                .map_max_entries(maps::THREADS, size(CFG_OUT_PROCS, threads));
        }
        let mut ebpf = loader.load(object).map_err(|e| load_error(e, plan))?;
        let log = if plan.bpf_log {
            Some(
                aya_log::EbpfLogger::init_with_logger(&mut ebpf, StderrLog)
                    .context("reading the kernel side's log")?,
            )
        } else {
            None
        };
        // Tables in place before the first fault is walked, built while the programs load
        // (the verifier's time, on every core).
        let unwind_maps = match ahead {
            Some(ahead) => {
                let mut take = |name: &str| {
                    ebpf.take_map(name)
                        .with_context(|| format!("pfault's eBPF object has no map {name}"))
                };
                Some((
                    take(maps::UNWIND_ROWS)?,
                    take(maps::UNWIND_FILES)?,
                    take(maps::TEXT_VMAS)?,
                    ahead,
                ))
            }
            None => None,
        };
        let (mode, mut refused, unwinder, linger) = attach::attach(
            &mut ebpf,
            plan,
            flags,
            hmf_btf_id,
            iter_btf_id,
            !missing.is_empty(),
            || {
                unwind_maps
                    .map(|(rows, files, text, ahead)| {
                        Unwinder::start(rows, files, text, plan.unwind_rows, ahead)
                    })
                    .transpose()
            },
        )?;
        if mode == ProbeMode::Kprobe && kretprobe_cuts_stacks {
            refused.push(
                "kernel stacks may end at kretprobe_trampoline: this kernel's kretprobes can hide their callers (fixed in 5.15); --probe fentry walks them whole".into(),
            );
        }
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|h| h.what).collect();
            refused.push(format!("compat programs: the kernel lacks {}", names.join(", ")));
        }
        refused.extend(page_sizes_unknown);
        Ok(Engine {
            ebpf,
            plan: plan.clone(),
            mode,
            vm_fault_names,
            refused,
            page_sizes: flags & CFG_PAGE_SIZE != 0,
            accounted: flags & CFG_ACCOUNTED != 0,
            started_ns: procfs::monotonic_ns(),
            unwinder,
            log,
            linger,
        })
    }

    /// Serves what is the engine's own business among ring-buffer records (the unwinder's
    /// requests); gives back the rest.
    pub(crate) fn take_record(&self, record: Record) -> Option<Record> {
        match (record, &self.unwinder) {
            (Record::Unwind(need), Some(u)) => {
                u.need(need);
                None
            }
            // Code a process just mapped (a library it loaded with dlopen, a Python
            // extension module) gets its table before its first stacks come asking: built
            // then, the stacks of the faults meanwhile stopped in it.
            (Record::Map(seen), Some(u)) if seen.exec != 0 && seen.map.kind == MAP_FILE => {
                u.need(UnwindNeed {
                    rec: REC_UNWIND,
                    pid: seen.pid,
                    vm_start: seen.map.vm_start,
                    vm_end: seen.vm_end,
                    file: FileId {
                        ino: seen.map.ino,
                        dev: seen.map.dev,
                        _pad: 0,
                    },
                });
                Some(Record::Map(seen))
            }
            (Record::Unwind(_), None) => None,
            (r, _) => Some(r),
        }
    }

    /// The CFI unwinder's tables, for late walks.
    pub(crate) fn unwind_tables(&self) -> Option<unwind::Tables> {
        self.unwinder.as_ref().map(Unwinder::tables)
    }

    /// How the CFI unwinder did: its tables, and the share of frames it could not unwind
    /// from CFI (walked by frame pointer instead). `None` when it was not used.
    pub(crate) fn unwind_report(&self) -> Result<Option<UnwindReport>> {
        let Some(u) = &self.unwinder else {
            return Ok(None);
        };
        Ok(Some(UnwindReport {
            frames: self.counter(CNT_UNWIND_FRAMES)?,
            frames_by_fp: self.counter(CNT_UNWIND_FP)?,
            frames_kept: self.counter(CNT_UNWIND_KEPT)?,
            stacks_walked_late: self.counter(CNT_UNWIND_LATE)?,
            stacks_late_lost: self.counter(CNT_UNWIND_LATE_LOST)?,
            by_fp_because: ByFpBecause {
                table_not_loaded: self.counter(CNT_FP_TABLE + TABLE_ASKED)?,
                no_cfi: self.counter(CNT_FP_TABLE + TABLE_NONE)?,
                no_row: self.counter(CNT_FP_TABLE + TABLE_READY)?,
                table_space_full: self.counter(CNT_FP_TABLE + TABLE_NO_ROOM)?,
                file_table_full: self.counter(CNT_FP_TABLE + TABLE_FILES_FULL)?,
                anonymous_code: self.counter(CNT_FP_TABLE + TABLE_ANON)?,
                mapping_unknown: self.counter(CNT_FP_NO_VMA)?,
            },
            tables: u.stats(),
        }))
    }

    /// One of the kernel side's `COUNTERS`, summed over the CPUs.
    fn counter(&self, idx: u32) -> Result<u64> {
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map(maps::COUNTERS)?)?;
        Ok(counters.get(&idx, 0).map(|v| v.iter().sum()).unwrap_or(0))
    }

    /// Prints what the kernel side logged since the last call (`--bpf-log`).
    pub(crate) fn flush_log(&mut self) {
        if let Some(log) = &mut self.log {
            log.flush();
        }
    }

    /// "probe mode tracepoint (fentry: ...; kprobe: ...)", for stderr.
    pub(crate) fn describe(&self) -> String {
        if self.accounted {
            return format!(
                "probe mode {}, counts from the kernel's fault accounting (-L times each fault)",
                self.mode.name()
            );
        }
        if self.refused.is_empty() {
            format!("probe mode {}", self.mode.name())
        } else {
            format!("probe mode {} ({})", self.mode.name(), self.refused.join("; "))
        }
    }

    fn map(&self, name: &str) -> Result<&Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("pfault's eBPF object has no map {name}"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("pfault's eBPF object has no map {name}"))
    }

    /// Marks a tgid as traced (a command started by pfault).
    pub(crate) fn trace_tgid(&mut self, tgid: u32) -> Result<()> {
        let mut traced: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(self.map_mut(maps::TRACED)?)?;
        traced
            .insert(tgid, 1, 0)
            .context("marking the command as traced")?;
        Ok(())
    }

    /// Takes the ring buffer of events and process notices out of the engine, to read it.
    pub(crate) fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .context("pfault's eBPF object has no map EVENTS")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// All entries of a count map; with `reset`, the map is emptied for the next interval
    /// (counts added between the read and the reset are lost, as with bcc's `-i`).
    fn read_hash<K: Pod, V: Pod>(&mut self, name: &str, reset: bool) -> Result<Vec<(K, V)>> {
        let mut map: BpfHashMap<_, K, V> = BpfHashMap::try_from(self.map_mut(name)?)?;
        let entries: Vec<(K, V)> = map
            .iter()
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading the {name} map"))?;
        if reset {
            for (k, _) in &entries {
                let _ = map.remove(k);
            }
        }
        Ok(entries)
    }

    /// Fault counts, latencies and bytes per (process, kind, stack hashes, comm).
    pub(crate) fn stack_counts(&mut self, reset: bool) -> Result<Vec<StackCount>> {
        let counts: Vec<(u64, StackCount)> = self.read_hash(maps::STACK_COUNTS, reset)?;
        Ok(counts.into_iter().map(|(_, c)| c).collect())
    }

    pub(crate) fn file_counts(&mut self, reset: bool) -> Result<Vec<(FileKey, FileCounts)>> {
        self.read_hash(maps::FILE_COUNTS, reset)
    }

    /// The per-process (or per-thread) rows of `stat` and `top`, the live threads' latest
    /// faults included.
    pub(crate) fn proc_stats(&mut self, reset: bool) -> Result<Vec<(ProcKey, ProcStats)>> {
        self.fold_threads()?;
        self.read_hash(maps::PROC_STATS, reset)
    }

    /// Removes rows of a count map (of processes that are gone: the exporter keeps their
    /// counts).
    fn remove_keys<K: Pod, V: Pod>(&mut self, name: &str, keys: &[K]) -> Result<()> {
        let mut map: BpfHashMap<_, K, V> = BpfHashMap::try_from(self.map_mut(name)?)?;
        for k in keys {
            let _ = map.remove(k);
        }
        Ok(())
    }

    pub(crate) fn forget_procs(&mut self, keys: &[ProcKey]) -> Result<()> {
        self.remove_keys::<ProcKey, ProcStats>(maps::PROC_STATS, keys)
    }

    pub(crate) fn forget_files(&mut self, keys: &[FileKey]) -> Result<()> {
        self.remove_keys::<FileKey, FileCounts>(maps::FILE_COUNTS, keys)
    }

    pub(crate) fn forget_stacks(&mut self, keys: &[StackKey]) -> Result<()> {
        let hashes: Vec<u64> = keys
            .iter()
            .map(|k| stack_key_hash(k, comm_words(&k.comm)))
            .collect();
        self.remove_keys::<u64, StackCount>(maps::STACK_COUNTS, &hashes)
    }

    /// Moves the counts the live threads hold into `PROC_STATS`: runs `fold_threads` over
    /// every task.
    fn fold_threads(&mut self) -> Result<()> {
        let it: &mut Iter = self
            .ebpf
            .program_mut(probes::FOLD_THREADS)
            .context("pfault's eBPF object has no program fold_threads")?
            .try_into()?;
        let id = it.attach().context("attaching the thread iterator")?;
        let mut file = it
            .take_link(id)?
            .into_file()
            .context("creating the thread iterator")?;
        std::io::copy(&mut file, &mut std::io::sink()).context("running the thread iterator")?;
        Ok(())
    }

    pub(crate) fn losses(&self) -> Result<Losses> {
        Ok(Losses {
            ringbuf: self.counter(CNT_RINGBUF_LOST)?,
            untracked: self.counter(CNT_PENDING_FULL)?,
            stacks_lost: self.counter(CNT_STACK_LOST)?,
            map_full: self.counter(CNT_AGG_FULL)?,
            vma_busy: self.counter(CNT_VMA_BUSY)?,
        })
    }
}
